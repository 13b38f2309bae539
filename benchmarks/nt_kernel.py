"""neural-tangents side of the mean-field kernel benchmark (issue 2, "Benchmark").

Runs ONLY in the separate environment ``.bench-venv`` (jax 0.4.30 + neural-tangents
0.6.5, CPU; see benchmarks/README.md). It does not import resscale.

The network is the SPEC "full" block with erf,

    h^0 = W^0 x + b^0,                 W^0 ~ N(0, sigma_in2/d), b^0 ~ N(0, sigma_bin2)
    h^l = h^{l-1} + alpha (W^l erf(h^{l-1}) + b^l),   W^l ~ N(0, sw2/N), b^l ~ N(0, sb2)

written in neural-tangents' stax as

    branch = serial(Erf(), Dense(N, W_std=alpha*sqrt(sw2), b_std=alpha*sqrt(sb2)))
    block  = serial(FanOut(2), parallel(Identity(), branch), FanInSum())
    net    = serial(Dense(N, W_std=sqrt(sigma_in2), b_std=sqrt(sigma_bin2)), repeat(block, L))

``stax.Erf()`` defaults to a=1, b=1, c=0, i.e. exactly erf(x). Scaling the branch
by alpha is the same as multiplying both W_std and b_std of its Dense by alpha
(alpha (W phi + b) with W ~ N(0, sw2/N) has the law of W' phi + b' with
W' ~ N(0, alpha^2 sw2/N), b' ~ N(0, alpha^2 sb2)). The NNGP of ``Dense`` is
W_std^2 <x, x'>/n_in + b_std^2 in both the 'ntk' and the 'standard'
parameterisation (they differ only in the NTK), so the default is used.
NT's NNGP therefore equals resscale's uncentred K^L; ``--verify`` checks this
against the closed-form arcsine recursion
    K' = K + alpha^2 (sw2 (2/pi) arcsin(2K_ab / sqrt((1+2K_aa)(1+2K_bb))) + sb2)
and the network itself against a finite-width Monte-Carlo draw of ``apply_fn``.

Work items (all float64 unless --float32; timings best-of-n with time.perf_counter):

(a) kernel: K^L for P random inputs (d = 50, fixed seed, or --X file.npy), by
    ``kernel_fn(x, None, 'nngp')`` with several ways of running it:
      repeat-jit    stax.repeat (lax.scan over blocks) inside jax.jit  [best NT usage]
      serial-jit    stax.serial(*[block]*L) inside jax.jit: XLA unrolls all L blocks,
                    compile time explodes, so measured at --small-L and extrapolated
      serial-eager  stax.serial without jit (op-by-op dispatch), measured at --small-L
                    and extrapolated linearly in L
(b) alpha scan: for the same alpha grid as resscale.optimal_alpha (200 log-spaced
    alphas in [1e-4, 1e2]), the 2-input kernel at depth L for two inputs of norm q0
    and correlation c0:
      vmap-kernel   jax.jit(jax.vmap(alpha -> 2x2 NNGP)) (alpha is traced through
                    W_std/b_std, so all alphas run in one compiled pass)   [best NT usage]
      vmap-sens     the same plus d c^L/d c^0 by jax.grad through kernel_fn: the
                    sensitivity S(alpha) that resscale.optimal_alpha maximises
      loop-jit      a Python loop of 200 calls of one jitted function with traced alpha
      loop-rebuild  naive: rebuild the stax net for each alpha and call kernel_fn eagerly;
                    timed on --rebuild-count alphas and extrapolated to the grid

Prints one JSON object on stdout (logs go to stderr). Usage:
    .bench-venv/bin/python benchmarks/nt_kernel.py --P 500 --L 1000 --alpha 0.1 --n-repeat 3
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# FanInSum warns that it assumes independent branches; here the branch has its own Dense
# (zero-mean W independent of the skip path), which is exactly that assumption.
warnings.filterwarnings("ignore", message=".*FanIn.*")

import numpy as np  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--P", type=int, default=500, help="number of inputs for the kernel (a)")
    p.add_argument("--d", type=int, default=50, help="input dimension")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--X", default=None, help="read inputs from this .npy (P, d) instead")
    p.add_argument("--L", type=int, default=1000, help="depth (number of residual blocks)")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--sw2", type=float, default=1.0)
    p.add_argument("--sb2", type=float, default=0.0)
    p.add_argument("--sin2", type=float, default=1.0)
    p.add_argument("--sbin2", type=float, default=0.0)
    p.add_argument("--c0", type=float, default=0.9, help="input correlation for the alpha scan")
    p.add_argument("--q0", type=float, default=1.0, help="input norm for the alpha scan")
    p.add_argument("--n-repeat", type=int, default=3, help="best-of-n for steady-state timings")
    p.add_argument("--alphas-count", type=int, default=200, help="alpha grid size of the scan (0: skip)")
    p.add_argument("--alpha-range", type=float, nargs=2, default=(1e-4, 1e2))
    p.add_argument("--kernel-methods", default="repeat-jit,serial-jit,serial-eager",
                   help="comma list of repeat-jit, repeat-eager, serial-jit, serial-eager ('' to skip (a))")
    p.add_argument("--scan-methods", default="vmap-kernel,vmap-sens,loop-jit,loop-rebuild",
                   help="comma list of vmap-kernel, vmap-sens, loop-jit, loop-rebuild")
    p.add_argument("--small-L", type=int, default=100,
                   help="depth at which serial-jit / serial-eager are measured when L is larger")
    p.add_argument("--rebuild-count", type=int, default=3, help="alphas timed for loop-rebuild")
    p.add_argument("--float32", action="store_true", help="run in float32 (NT default) instead of float64")
    p.add_argument("--verify", action="store_true",
                   help="check NT's NNGP against the closed-form recursion and a finite-width draw")
    p.add_argument("--out-kernel", default=None, help="save K^L of (a) (first method) to this .npy")
    p.add_argument("--out-scan", default=None, help="save the scan (alphas, K 2x2, S) to this .npz")
    return p.parse_args(argv)


args = parse_args()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", not args.float32)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

DT = np.float32 if args.float32 else np.float64
WIDTH = 512  # only used by init_fn/apply_fn; kernel_fn is the infinite-width limit


def block(alpha, sw2, sb2):
    branch = stax.serial(stax.Erf(),  # a=1, b=1, c=0: erf(x)
                         stax.Dense(WIDTH, W_std=alpha * math.sqrt(sw2) if isinstance(alpha, float)
                                    else alpha * jnp.sqrt(sw2),
                                    b_std=alpha * math.sqrt(sb2) if isinstance(alpha, float)
                                    else alpha * jnp.sqrt(sb2)))
    return stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch), stax.FanInSum())


def network(L, alpha, sw2=None, sb2=None, sin2=None, sbin2=None, repeat=True):
    sw2 = args.sw2 if sw2 is None else sw2
    sb2 = args.sb2 if sb2 is None else sb2
    sin2 = args.sin2 if sin2 is None else sin2
    sbin2 = args.sbin2 if sbin2 is None else sbin2
    blk = block(alpha, sw2, sb2)
    body = stax.repeat(blk, L) if repeat else stax.serial(*([blk] * L))
    return stax.serial(stax.Dense(WIDTH, W_std=math.sqrt(sin2), b_std=math.sqrt(sbin2)), body)


def closed_form(X, L, alpha, sw2, sb2, sin2, sbin2):
    """Direct numpy recursion of the erf full block (independent of NT)."""
    K = sin2 * X @ X.T / X.shape[1] + sbin2
    for _ in range(L):
        dg = 1.0 + 2.0 * np.diag(K)
        K = K + alpha ** 2 * (sw2 * (2 / np.pi) * np.arcsin(2 * K / np.sqrt(np.outer(dg, dg))) + sb2)
    return K


def block_ready(x):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


CPU = {}  # CPU seconds (process_time, all threads) of the last timed() call's best run


def timed(fn, n):
    """(first-call seconds, best-of-n steady seconds over n further calls, result).

    Wall clock by time.perf_counter; the process CPU time of the best call is left in CPU["s"].
    """
    t = time.perf_counter()
    out = block_ready(fn())
    first = time.perf_counter() - t
    best, best_cpu = math.inf, math.nan
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        out = block_ready(fn())
        w = time.perf_counter() - t
        if w < best:
            best, best_cpu = w, time.process_time() - c
    CPU["s"] = best_cpu
    return first, best, out


def verify():
    res = {}
    rng = np.random.default_rng(1)
    X = rng.standard_normal((7, 5))
    worst = 0.0
    for (L, a, sw2, sb2, sin2, sbin2) in [(10, 0.5, 1.0, 0.0, 1.0, 0.0), (20, 0.3, 2.0, 0.1, 1.5, 0.2),
                                           (50, 1.0, 0.7, 0.3, 0.5, 0.1), (200, 0.1, 1.0, 0.0, 1.0, 0.0)]:
        R = closed_form(X, L, a, sw2, sb2, sin2, sbin2)
        for rep in ((True, False) if L <= 20 else (True,)):  # eager serial is slow: small L only
            _, _, kf = network(L, a, sw2, sb2, sin2, sbin2, repeat=rep)
            K = np.asarray(kf(X.astype(DT), None, "nngp"))
            worst = max(worst, float(np.max(np.abs(K - R) / np.abs(R))))
    res["nngp_vs_closed_form_max_rel_diff"] = worst
    # finite-width draw of the same stax network (apply_fn), NTK parameterisation
    N, L, a = 4096, 5, 0.5
    init_fn, apply_fn, kernel_fn = network(L, a, 1.0, 0.2, 1.0, 0.1, repeat=False)
    emp = []
    for s in range(8):
        _, params = init_fn(jax.random.PRNGKey(s), X.shape)
        h = np.asarray(apply_fn(params, X.astype(DT)), dtype=np.float64)
        emp.append(h @ h.T / h.shape[1])
    emp = np.mean(emp, axis=0)
    K = np.asarray(kernel_fn(X.astype(DT), None, "nngp"))
    res["finite_width_draw"] = {"N": N, "L": L, "alpha": a, "n_nets": 8,
                                "max_abs_diff_over_max_K": float(np.max(np.abs(emp - K)) / np.max(K))}
    return res


def kernel_bench(X, methods):
    out = {}
    saved = None
    for m in methods:
        repeat = m.startswith("repeat")
        jit = m.endswith("jit")
        L_run = args.L if repeat or args.L <= args.small_L else args.small_L
        _, _, kf = network(L_run, float(args.alpha), repeat=repeat)
        f = jax.jit(kf, static_argnames="get") if jit else kf
        x = jnp.asarray(X, dtype=DT)
        log(f"[nt] kernel {m} at L={L_run} ...")
        n = args.n_repeat if (repeat or jit) else max(1, min(args.n_repeat, 2))
        first, best, K = timed(lambda: f(x, None, "nngp"), n)
        scale = args.L / L_run
        rec = {"L_measured": L_run, "first_call_s": first, "steady_s": best, "steady_cpu_s": CPU["s"],
               "n_repeat": n,
               "steady_s_at_L": best * scale, "extrapolated": L_run != args.L}
        if L_run != args.L:
            rec["note"] = (f"measured at L={L_run}; steady_s_at_L = steady_s * {scale:g} (linear in L); "
                           + ("compile time grows at least linearly in L (XLA unrolls every block), "
                              "first_call_s is NOT extrapolated" if jit else
                              "eager dispatch is linear in L; first call extrapolated: "
                              f"{first * scale:.1f} s"))
        out[m] = rec
        log(f"[nt]   first {first:.3f} s, steady {best:.3f} s (L={L_run})")
        if L_run == args.L and saved is None:
            saved = np.asarray(K, dtype=np.float64)
    return out, saved


def two_inputs(c, q0):
    """x (2, 2) with x x^T / 2 = q0 [[1, c], [c, 1]]; diagonal independent of c."""
    s = jnp.sqrt(2.0 * q0)
    return s * jnp.stack([jnp.array([1.0, 0.0], dtype=DT), jnp.stack([c, jnp.sqrt(1.0 - c * c)])])


def scan_bench(methods):
    alphas = np.logspace(math.log10(args.alpha_range[0]), math.log10(args.alpha_range[1]),
                         args.alphas_count).astype(DT)
    L, c0, q0 = args.L, DT(args.c0), DT(args.q0)
    # the network's input layer maps x to sin2 x.x'/2 + sbin2; use sin2 = 1, sbin2 = 0 so that
    # K^0 = q0 [[1, c0], [c0, 1]] exactly as resscale.optimal_alpha's two-input recursion
    def k2(alpha, c=c0):
        _, _, kf = network(L, alpha, sin2=1.0, sbin2=0.0)
        return kf(two_inputs(c, q0), None, "nngp")

    def corr(alpha, c):
        K = k2(alpha, c)
        return K[0, 1] / jnp.sqrt(K[0, 0] * K[1, 1])

    out, data = {}, {"alphas": alphas}
    A = jnp.asarray(alphas)
    for m in methods:
        log(f"[nt] scan {m} over {len(alphas)} alphas at L={L} ...")
        if m == "vmap-kernel":
            f = jax.jit(jax.vmap(k2))
            first, best, K = timed(lambda: f(A), args.n_repeat)
            data["K"] = np.asarray(K)
            rec = {"first_call_s": first, "steady_s": best, "steady_cpu_s": CPU["s"]}
        elif m == "vmap-sens":
            g = jax.jit(jax.vmap(jax.grad(corr, argnums=1), in_axes=(0, None)))
            first, best, S = timed(lambda: g(A, c0), args.n_repeat)
            S = np.asarray(S)
            data["S"] = S
            i = int(np.nanargmax(S))
            rec = {"first_call_s": first, "steady_s": best, "steady_cpu_s": CPU["s"],
                   "grid_argmax_alpha": float(alphas[i]), "grid_max_S": float(S[i]),
                   "note": "S = d c^L / d c^0 by jax.grad through kernel_fn (diagonal fixed)"}
        elif m == "loop-jit":
            f = jax.jit(k2)
            t = time.perf_counter()
            block_ready(f(A[0]))
            compile_s = time.perf_counter() - t
            best = math.inf
            for _ in range(max(1, min(args.n_repeat, 2))):
                t = time.perf_counter()
                for a in A:
                    block_ready(f(a))
                best = min(best, time.perf_counter() - t)
            rec = {"first_call_s": compile_s + best, "compile_s": compile_s, "steady_s": best}
        elif m == "loop-rebuild":
            n = min(args.rebuild_count, len(alphas))
            sub = alphas[np.linspace(0, len(alphas) - 1, n).astype(int)]
            t = time.perf_counter()
            for a in sub:
                block_ready(k2(float(a)))
            per = (time.perf_counter() - t) / n
            rec = {"steady_s": per * len(alphas), "first_call_s": per * len(alphas),
                   "per_alpha_s": per, "alphas_timed": n, "extrapolated": n != len(alphas),
                   "note": f"eager kernel_fn of a freshly built net per alpha, {n} alphas timed, x{len(alphas) / n:g}"}
        else:
            raise SystemExit(f"unknown scan method {m!r}")
        out[m] = rec
        log(f"[nt]   first {rec['first_call_s']:.3f} s, steady {rec['steady_s']:.3f} s")
    return out, data


def main():
    t0 = time.perf_counter()
    res = {
        "tool": "neural-tangents",
        "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__")
                     else None, "neural_tangents": getattr(nt, "__version__", None), "numpy": np.__version__,
                     "python": platform.python_version()},
        "machine": {"cpu_count": os.cpu_count(), "jax_devices": [str(d) for d in jax.devices()],
                    "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                    "threads": "XLA CPU default (Eigen intra-op pool over all cores)"},
        "dtype": np.dtype(DT).name,
        "config": {"P": args.P, "d": args.d, "seed": args.seed, "L": args.L, "alpha": args.alpha,
                   "sw2": args.sw2, "sb2": args.sb2, "sin2": args.sin2, "sbin2": args.sbin2,
                   "c0": args.c0, "q0": args.q0, "alphas_count": args.alphas_count,
                   "alpha_range": list(args.alpha_range), "n_repeat": args.n_repeat,
                   "activation": "erf", "block": "full"},
    }
    try:
        import jaxlib
        res["versions"]["jaxlib"] = jaxlib.__version__
    except Exception:  # pragma: no cover
        pass
    if args.verify:
        log("[nt] verify ...")
        res["verify"] = verify()
        log(f"[nt]   {res['verify']}")
    kms = [m for m in args.kernel_methods.split(",") if m]
    if kms:
        if args.X:
            X = np.load(args.X)
            res["config"]["P"], res["config"]["d"] = X.shape
            res["config"]["X"] = args.X
        else:
            X = np.random.default_rng(args.seed).standard_normal((args.P, args.d))
        res["kernel"], K = kernel_bench(X, kms)
        if K is not None:
            res["kernel_checksum"] = {"K00": float(K[0, 0]), "K01": float(K[0, 1]), "trace": float(np.trace(K))}
            if args.out_kernel:
                np.save(args.out_kernel, K)
                res["kernel_file"] = args.out_kernel
    sms = [m for m in args.scan_methods.split(",") if m]
    if sms and args.alphas_count > 0:
        res["alpha_scan"], data = scan_bench(sms)
        if args.out_scan:
            np.savez(args.out_scan, **data)
            res["scan_file"] = args.out_scan
    res["total_wall_s"] = time.perf_counter() - t0
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
