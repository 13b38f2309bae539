"""Benchmark: resscale's mean-field kernel and alpha* scan against neural-tangents (issue 2).

Run from the repository root in the main environment:

    python benchmarks/bench_mean_field.py            # full: P = 500, L = 1000 (about 10 minutes)
    python benchmarks/bench_mean_field.py --quick    # P = 100, L = 200, best NT methods only
    python benchmarks/bench_mean_field.py --no-nt    # resscale only

Work items (erf, full block, sigma_w2 = 1, sigma_b2 = 0, sigma_in2 = 1, sigma_bin2 = 0):
  1. K^L = resscale.mean_field_kernel(net, X=X) for P random inputs (d = 50, seed 0),
     depth L, alpha = 0.1; neural-tangents: kernel_fn(x, None, 'nngp').
  2. alpha* scan: resscale.optimal_alpha(net, c0=0.9) (200 log-spaced alphas in
     [1e-4, 1e2] in one vectorised pass, then Brent refinement, plus the analytic
     alpha*), and the grid pass alone, resscale.log_sensitivity(net, 0.9, 1, grid);
     neural-tangents: the 2x2 kernel for the same 200 alphas (jit + vmap over alpha),
     and the same plus d c^L / d c^0 by jax.grad (the sensitivity itself).

neural-tangents runs in its own environment (.bench-venv, jax 0.4.30; see
benchmarks/README.md) through ``benchmarks/nt_kernel.py`` in a subprocess; without
that environment the NT columns are skipped with a message. Timings are best-of-n
wall clock (time.perf_counter); "first call" includes JAX's compilation.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import resscale as rs  # noqa: E402

NT_PYTHON = ROOT / ".bench-venv" / "bin" / "python"
NT_SCRIPT = ROOT / "benchmarks" / "nt_kernel.py"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="resscale vs neural-tangents: mean-field kernel and alpha* scan")
    p.add_argument("--P", type=int, default=None, help="number of inputs (default 500; --quick 100)")
    p.add_argument("--L", type=int, default=None, help="depth (default 1000; --quick 200)")
    p.add_argument("--d", type=int, default=50)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--c0", type=float, default=0.9)
    p.add_argument("--n-alphas", type=int, default=200, help="alpha grid of the scan (optimal_alpha's n_grid)")
    p.add_argument("--n-repeat", type=int, default=None, help="best-of-n (default 5; --quick 2)")
    p.add_argument("--quick", action="store_true",
                   help="small case and only the best NT methods (jit + repeat, jit + vmap)")
    p.add_argument("--no-nt", action="store_true", help="skip neural-tangents")
    p.add_argument("--other-activations", action="store_true",
                   help="also time the S grid pass for tanh and gelu (quadrature path) at --other-depth")
    p.add_argument("--other-depth", type=int, default=100)
    p.add_argument("--tabulated", action="store_true",
                   help="issue 9: optimal_alpha for tanh, gelu and a softplus callable, tabulated pair functions "
                        "(resscale.tabulated_pairs) vs the quadrature reference, at --tabulated-depths")
    p.add_argument("--tabulated-depths", default="1000", help="comma-separated depths for --tabulated")
    p.add_argument("--tabulated-acts", default="tanh,gelu,softplus",
                   help="activations for --tabulated ('' : only the tanh vs erf rows with/without numba)")
    p.add_argument("--no-quadrature-above", type=int, default=10**9,
                   help="--tabulated: skip the (slow) quadrature reference at depths above this")
    p.add_argument("--nt-python", default=str(NT_PYTHON), help="python of the neural-tangents venv")
    p.add_argument("--nt-timeout", type=float, default=1800.0, help="seconds before the NT run is abandoned")
    p.add_argument("--json", default=None, help="also write all measurements to this JSON file")
    a = p.parse_args(argv)
    a.P = a.P or (100 if a.quick else 500)
    a.L = a.L or (200 if a.quick else 1000)
    a.n_repeat = a.n_repeat or (2 if a.quick else 5)
    return a


def best_of(fn, n):
    """(first-call seconds, best of n further calls, result, process CPU seconds of that best call)."""
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    best, best_cpu = math.inf, math.nan
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        w = time.perf_counter() - t
        if w < best:
            best, best_cpu = w, time.process_time() - c
    return first, best, out, best_cpu


def thread_settings():
    keys = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS"]
    env = {k: os.environ.get(k, "(unset)") for k in keys}
    try:
        from threadpoolctl import threadpool_info
        env["blas"] = [f"{i.get('internal_api')} x{i.get('num_threads')}" for i in threadpool_info()]
    except Exception:
        pass
    return env


def run_resscale(a, X):
    net = rs.ResNet(depth=a.L, alpha=a.alpha, sigma_w2=1.0, sigma_b2=0.0, sigma_in2=1.0, sigma_bin2=0.0,
                    activation="erf", block="full")
    out = {}
    print(f"[resscale] mean_field_kernel P={a.P} L={a.L} ...", flush=True)
    first, best, K, cpu = best_of(lambda: rs.mean_field_kernel(net, X=X), a.n_repeat)
    out["kernel"] = {"first_call_s": first, "steady_s": best, "steady_cpu_s": cpu}
    print(f"[resscale]   first {first:.3f} s, best {best:.3f} s", flush=True)

    print(f"[resscale] optimal_alpha c0={a.c0} L={a.L} n_grid={a.n_alphas} ...", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, best, res, cpu = best_of(lambda: rs.optimal_alpha(net, c0=a.c0, n_grid=a.n_alphas), a.n_repeat)
    out["optimal_alpha"] = {"first_call_s": first, "steady_s": best, "steady_cpu_s": cpu, "alpha": res.alpha,
                            "sensitivity": res.sensitivity, "alpha_analytic": res.alpha_analytic}
    print(f"[resscale]   first {first:.3f} s, best {best:.3f} s; alpha* = {res.alpha:.6g}, "
          f"S = {res.sensitivity:.6g}, analytic {res.alpha_analytic:.6g}", flush=True)

    grid = np.logspace(-4, 2, a.n_alphas)
    first, best, logS, cpu = best_of(lambda: rs.log_sensitivity(net, a.c0, 1.0, grid, strict=False),
                                     a.n_repeat)
    out["sensitivity_grid"] = {"first_call_s": first, "steady_s": best, "steady_cpu_s": cpu}
    print(f"[resscale] log_sensitivity on the {a.n_alphas}-alpha grid: best {best:.3f} s", flush=True)

    # issue 9: the scan without the analytic ODE, and the NumPy fallback of the fused erf path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, best, _, cpu = best_of(lambda: rs.optimal_alpha(net, c0=a.c0, n_grid=a.n_alphas, analytic=False),
                                      a.n_repeat)
    out["optimal_alpha_no_analytic"] = {"first_call_s": first, "steady_s": best, "steady_cpu_s": cpu}
    print(f"[resscale] optimal_alpha(analytic=False): best {best:.3f} s", flush=True)
    import importlib
    sens = importlib.import_module("resscale.sensitivity")
    out["numba"] = sens._numba_kernel(force=True) is not None   # (loaded once; used by the calls above
    # only when RESSCALE_NUMBA=1 or the estimated NumPy cost is large, see sensitivity._numba_kernel)
    saved = sens._nb_erf
    sens._nb_erf = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first, best, _, cpu = best_of(lambda: rs.optimal_alpha(net, c0=a.c0, n_grid=a.n_alphas), a.n_repeat)
            out["optimal_alpha_numpy"] = {"steady_s": best, "steady_cpu_s": cpu}
            first, best, _, cpu = best_of(lambda: rs.log_sensitivity(net, a.c0, 1.0, grid, strict=False),
                                          a.n_repeat)
            out["sensitivity_grid_numpy"] = {"steady_s": best, "steady_cpu_s": cpu}
    finally:
        sens._nb_erf = saved
    print(f"[resscale] NumPy fallback (no numba): optimal_alpha {out['optimal_alpha_numpy']['steady_s']:.3f} s, "
          f"grid {best:.3f} s", flush=True)
    if a.other_activations:
        for act in ("tanh", "gelu"):
            net2 = net.replace(activation=act, depth=a.other_depth)
            net_e = net.replace(depth=a.other_depth)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                rs.log_sensitivity(net2, a.c0, 1.0, grid, strict=False)
                t_act = time.perf_counter() - t
                _, t_erf, _, _ = best_of(lambda: rs.log_sensitivity(net_e, a.c0, 1.0, grid, strict=False), 1)
            out[f"sensitivity_grid_{act}_L{a.other_depth}"] = {"steady_s": t_act, "erf_s": t_erf}
            print(f"[resscale] log_sensitivity grid, {act} L={a.other_depth}: {t_act:.2f} s "
                  f"(erf {t_erf * 1e3:.1f} ms, ratio {t_act / t_erf:.0f}x)", flush=True)
    if a.tabulated:
        out["tabulated"] = run_tabulated(a) if a.tabulated_acts else []
        out["tabulated_numba"] = run_tabulated_numba(a)
    return out, K, np.exp(logS)


def _activation(name):
    if name == "softplus":   # a user callable (quadrature, phi' and phi'' by finite differences)
        return rs.from_callable(lambda u: np.logaddexp(0.0, u), name="softplus")
    return name


def run_tabulated_numba(a):
    """tanh vs erf optimal_alpha (200 alphas, c0), tables, with numba (the compiled table kernel,
    resscale.tabulated_pairs.TabulatedActivation.compiled_trajectory, and the compiled erf kernel)
    and without (RESSCALE_NO_NUMBA=1 for both: the NumPy table path and the NumPy erf path)."""
    import importlib
    from resscale import tabulated_pairs as tp
    sens = importlib.import_module("resscale.sensitivity")
    res = []
    tanh = rs.get_activation("tanh") if hasattr(rs, "get_activation") else "tanh"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        tp._compiled()
        sens._numba_kernel(force=True)
        load_s = time.perf_counter() - t
        for L in (int(x) for x in a.tabulated_depths.split(",")):
            for numba_on in (True, False):
                saved = os.environ.pop("RESSCALE_NO_NUMBA", None), os.environ.pop("RESSCALE_NUMBA", None)
                saved_erf = sens._nb_erf
                try:
                    if numba_on:
                        os.environ["RESSCALE_NUMBA"] = "1"
                    else:
                        os.environ["RESSCALE_NO_NUMBA"] = "1"
                        sens._nb_erf = None
                    row = {"L": L, "numba": numba_on, "load_s": load_s}
                    for name in ("erf", "tanh"):
                        net = rs.ResNet(depth=L, activation=name if name == "erf" else tanh)
                        with tp.mode("auto"):
                            rs.optimal_alpha(net, c0=a.c0, n_grid=a.n_alphas)       # table build / warm-up
                            _, row[f"{name}_s"], r, _ = best_of(
                                lambda: rs.optimal_alpha(net, c0=a.c0, n_grid=a.n_alphas), 3 if L <= 1000 else 2)
                        row[f"{name}_alpha"] = r.alpha
                    if numba_on:   # accuracy of the compiled table path against the NumPy table path
                        grid = np.logspace(-4, 2, a.n_alphas)
                        net = rs.ResNet(depth=L, activation=tanh)
                        with tp.mode("always"):
                            l1 = rs.log_sensitivity(net, a.c0, 1.0, grid, strict=False)
                            os.environ["RESSCALE_NO_NUMBA"] = "1"
                            t = time.perf_counter()
                            l2 = rs.log_sensitivity(net, a.c0, 1.0, grid, strict=False)
                            row["numpy_grid_s"] = time.perf_counter() - t
                            del os.environ["RESSCALE_NO_NUMBA"]
                        ok = np.isfinite(l1) & np.isfinite(l2)
                        row["max_dlogS_vs_numpy_table"] = float(np.max(np.abs(l1 - l2)[ok]))
                finally:
                    os.environ.pop("RESSCALE_NO_NUMBA", None)
                    os.environ.pop("RESSCALE_NUMBA", None)
                    for k_, v_ in zip(("RESSCALE_NO_NUMBA", "RESSCALE_NUMBA"), saved):
                        if v_ is not None:
                            os.environ[k_] = v_
                    sens._nb_erf = saved_erf
                row["ratio"] = row["tanh_s"] / row["erf_s"]
                print("[resscale] tabulated tanh vs erf: " + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
                res.append(row)
    return res


class _NumbaSwitch:
    """Context manager: numba on (RESSCALE_NUMBA=1) or off (RESSCALE_NO_NUMBA=1, compiled erf kernel
    unloaded) for both the erf and the table paths; restores the environment."""

    def __init__(self, on):
        import importlib
        self.on, self.sens = on, importlib.import_module("resscale.sensitivity")

    def __enter__(self):
        self.saved = os.environ.pop("RESSCALE_NO_NUMBA", None), os.environ.pop("RESSCALE_NUMBA", None)
        self.saved_erf = self.sens._nb_erf
        if self.on:
            os.environ["RESSCALE_NUMBA"] = "1"
        else:
            os.environ["RESSCALE_NO_NUMBA"] = "1"
            self.sens._nb_erf = None
        return self

    def __exit__(self, *exc):
        os.environ.pop("RESSCALE_NO_NUMBA", None)
        os.environ.pop("RESSCALE_NUMBA", None)
        for k_, v_ in zip(("RESSCALE_NO_NUMBA", "RESSCALE_NUMBA"), self.saved):
            if v_ is not None:
                os.environ[k_] = v_
        self.sens._nb_erf = self.saved_erf
        return False


def run_tabulated(a):
    """optimal_alpha (200 alphas, c0) with tables vs quadrature, same process, back to back; the
    tabulated call (2nd call: the table is built by the first) with and without numba, each right
    after the erf call in the same mode (ratio act / erf)."""
    from resscale import tabulated_pairs as tp
    res = []
    for L in (int(x) for x in a.tabulated_depths.split(",")):
        net_erf = rs.ResNet(depth=L, activation="erf")
        for name in a.tabulated_acts.split(","):
            net = rs.ResNet(depth=L, activation=_activation(name))
            grid = np.logspace(-4, 2, a.n_alphas)
            row = {"activation": name, "L": L}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with tp.mode("auto"), _NumbaSwitch(True):
                    t = time.perf_counter()
                    r1 = rs.optimal_alpha(net, c0=a.c0, n_grid=a.n_alphas)
                    row["tab_first_s"] = time.perf_counter() - t      # includes building the table
                    T = tp.tabulated(net.phi, build=False)
                    row["build_s"] = T.build_seconds if T is not None else None
                    if T is not None:      # issue 9: beyond Q_HI the homogeneous limit (gelu, softplus), if enabled
                        row["asymptotic"] = bool(T.asym is not None)
                for numba_on in (True, False):
                    tag = "nb" if numba_on else "np"
                    with tp.mode("auto"), _NumbaSwitch(numba_on):
                        rs.optimal_alpha(net_erf, c0=a.c0, n_grid=a.n_alphas)    # warm-up
                        _, row[f"erf_{tag}_s"], _, _ = best_of(
                            lambda: rs.optimal_alpha(net_erf, c0=a.c0, n_grid=a.n_alphas), 2)
                        f0 = T.n_fallback if T is not None else 0
                        t = time.perf_counter()
                        r1 = rs.optimal_alpha(net, c0=a.c0, n_grid=a.n_alphas)
                        row[f"tab_{tag}_s"] = time.perf_counter() - t
                        row[f"quad_points_{tag}"] = (T.n_fallback - f0) if T is not None else None
                    row[f"ratio_{tag}"] = row[f"tab_{tag}_s"] / row[f"erf_{tag}_s"]
                with tp.mode("auto"):
                    l1 = rs.log_sensitivity(net, a.c0, 1.0, grid, strict=False)
                row["tab_s"], row["erf_s"] = row["tab_nb_s"], row["erf_nb_s"]
                row.update(tab_alpha=r1.alpha, tab_analytic=r1.alpha_analytic)
                if L <= a.no_quadrature_above:
                    with tp.mode("never"):
                        t = time.perf_counter()
                        r0 = rs.optimal_alpha(net, c0=a.c0, n_grid=a.n_alphas)
                        row["quad_s"] = time.perf_counter() - t
                        l0 = rs.log_sensitivity(net, a.c0, 1.0, grid, strict=False)
                    ok = np.isfinite(l0) & np.isfinite(l1)
                    rel = (lambda x, y: abs(x / y - 1.0) if np.isfinite(x) and np.isfinite(y) else None)
                    row.update(quad_alpha=r0.alpha, quad_analytic=r0.alpha_analytic,
                               max_dlogS=float(np.max(np.abs(l1 - l0)[ok])) if ok.any() else None,
                               alpha_rel=rel(r1.alpha, r0.alpha),
                               analytic_rel=rel(r1.alpha_analytic, r0.alpha_analytic))
            print(f"[resscale] tabulated {name} L={L}: " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
            res.append(row)
    return res


def run_nt(a, X, tmp):
    py = Path(a.nt_python)
    if not py.exists():
        print(f"[nt] SKIPPED: {py} not found. Create the neural-tangents venv as in benchmarks/README.md "
              f"to get the neural-tangents columns.", flush=True)
        return None, None, None
    xfile, kfile, sfile = tmp / "X.npy", tmp / "K_nt.npy", tmp / "scan_nt.npz"
    np.save(xfile, X)
    cmd = [str(py), str(NT_SCRIPT), "--X", str(xfile), "--L", str(a.L), "--alpha", str(a.alpha),
           "--c0", str(a.c0), "--alphas-count", str(a.n_alphas), "--n-repeat", str(min(a.n_repeat, 3)),
           "--out-kernel", str(kfile), "--out-scan", str(sfile), "--verify"]
    if a.quick:
        cmd += ["--kernel-methods", "repeat-jit", "--scan-methods", "vmap-kernel,vmap-sens"]
    print("[nt] running:", " ".join(cmd), flush=True)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.nt_timeout)
    except subprocess.TimeoutExpired:
        print(f"[nt] SKIPPED: neural-tangents did not finish within {a.nt_timeout:.0f} s", flush=True)
        return None, None, None
    for line in proc.stderr.splitlines():
        if line.startswith("[nt]"):
            print(line, flush=True)
    if proc.returncode != 0:
        print(f"[nt] FAILED (exit {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
        return None, None, None
    res = json.loads(proc.stdout)
    print(f"[nt] done in {time.perf_counter() - t:.0f} s", flush=True)
    K = np.load(kfile) if kfile.exists() else None
    scan = dict(np.load(sfile)) if sfile.exists() else None
    return res, K, scan


def fmt_t(s):
    if s is None or not np.isfinite(s):
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def main(argv=None):
    a = parse_args(argv)
    X = np.random.default_rng(0).standard_normal((a.P, a.d))
    load0 = os.getloadavg()
    machine = (f"{platform.node() or 'host'}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
               f"Python {platform.python_version()}, NumPy {np.__version__}, resscale {rs.__version__}")
    print(f"machine: {machine}")
    print(f"threads: {thread_settings()}")
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}\n", flush=True)

    rs_res, K_rs, S_rs = run_resscale(a, X)
    with tempfile.TemporaryDirectory() as td:
        nt_res, K_nt, scan_nt = (None, None, None) if a.no_nt else run_nt(a, X, Path(td))
    load1 = os.getloadavg()

    checks = {}
    if K_nt is not None:
        d = np.abs(K_rs - K_nt)
        norm = np.sqrt(np.outer(np.diag(K_rs), np.diag(K_rs)))
        checks["kernel_max_rel_diff"] = float(np.max(d / np.abs(K_rs)))
        checks["kernel_max_diff_over_sqrt_KaaKbb"] = float(np.max(d / norm))
    if scan_nt is not None and "S" in scan_nt:
        S_nt = scan_nt["S"]
        al = scan_nt["alphas"]
        a_cut = 2.0 * rs_res["optimal_alpha"]["alpha"] if np.isfinite(rs_res["optimal_alpha"]["alpha"]) else 1.0
        ok = np.isfinite(S_nt) & np.isfinite(S_rs) & (al <= a_cut)
        rel = np.abs(S_nt - S_rs) / np.abs(S_rs)
        checks[f"sensitivity_max_rel_diff_alpha_le_{a_cut:.3g}"] = float(np.max(rel[ok]))
        bad = ~(rel < 1e-3)
        checks["nt_autodiff_S_off_by_1e-3_points"] = (
            f"{int(bad.sum())} of {len(al)}" + (f" (alpha >= {al[bad].min():.3g}; NT's jax.grad through "
                                                 "kernel_fn degrades at large K, its kernel values do not)"
                                                 if bad.any() else ""))
        checks["nt_grid_argmax_alpha"] = float(scan_nt["alphas"][int(np.nanargmax(S_nt))])
    if nt_res and "verify" in nt_res:
        checks["nt_vs_closed_form"] = nt_res["verify"]["nngp_vs_closed_form_max_rel_diff"]

    rows = []

    def row(item, t_rs, t_nt, note="", c_rs=None, c_nt=None):
        ratio = (t_nt / t_rs) if (t_rs and t_nt and np.isfinite(t_nt)) else None
        cpu = (f"{fmt_t(c_rs)} / {fmt_t(c_nt)}" if c_rs is not None and c_nt is not None
               and np.isfinite(c_rs) and np.isfinite(c_nt) else "")
        rows.append((item, fmt_t(t_rs), fmt_t(t_nt), "-" if ratio is None else f"{ratio:.2f}x", cpu, note))

    ntk = (nt_res or {}).get("kernel", {})
    nts = (nt_res or {}).get("alpha_scan", {})
    g = lambda dct, m, k: dct.get(m, {}).get(k)  # noqa: E731
    kr, oa, sg = rs_res["kernel"], rs_res["optimal_alpha"], rs_res["sensitivity_grid"]
    kname = f"kernel P={a.P}, L={a.L}"
    sname = f"alpha scan {a.n_alphas} alphas, L={a.L}"
    row(f"{kname}: steady state", kr["steady_s"], g(ntk, "repeat-jit", "steady_s"), "NT: jit(stax.repeat)",
        kr["steady_cpu_s"], g(ntk, "repeat-jit", "steady_cpu_s"))
    row(f"{kname}: first call", kr["first_call_s"], g(ntk, "repeat-jit", "first_call_s"), "NT incl. compile")
    if "serial-jit" in ntk:
        e = ntk["serial-jit"]
        row(f"{kname}: NT jit(stax.serial)", kr["steady_s"], e["steady_s_at_L"],
            f"NT at L={e['L_measured']} x{a.L / e['L_measured']:g}; compile {e['first_call_s']:.0f} s at "
            f"L={e['L_measured']}" if e["extrapolated"] else "")
    if "serial-eager" in ntk:
        e = ntk["serial-eager"]
        row(f"{kname}: NT eager stax.serial", kr["steady_s"], e["steady_s_at_L"],
            f"NT at L={e['L_measured']} x{a.L / e['L_measured']:g}" if e["extrapolated"] else "")
    row(f"{sname}: optimal_alpha vs NT 2x2 kernels", oa["steady_s"], g(nts, "vmap-kernel", "steady_s"),
        "NT: jit(vmap over alpha)", oa["steady_cpu_s"], g(nts, "vmap-kernel", "steady_cpu_s"))
    row(f"{sname}: optimal_alpha vs NT kernels + dS", oa["steady_s"], g(nts, "vmap-sens", "steady_s"),
        "NT: jit(vmap(grad)) = S(alpha)", oa["steady_cpu_s"], g(nts, "vmap-sens", "steady_cpu_s"))
    row(f"{sname}: S grid only vs NT kernels + dS", sg["steady_s"], g(nts, "vmap-sens", "steady_s"),
        "resscale: log_sensitivity(grid)", sg["steady_cpu_s"], g(nts, "vmap-sens", "steady_cpu_s"))
    on = rs_res["optimal_alpha_no_analytic"]
    row(f"{sname}: optimal_alpha(analytic=False) vs NT 2x2 kernels", on["steady_s"],
        g(nts, "vmap-kernel", "steady_s"), "resscale: grid + refinement, no ODE", on["steady_cpu_s"],
        g(nts, "vmap-kernel", "steady_cpu_s"))
    onp = rs_res["optimal_alpha_numpy"]
    row(f"{sname}: optimal_alpha, NumPy fallback (no numba)", onp["steady_s"], g(nts, "vmap-kernel", "steady_s"),
        "numba " + ("installed" if rs_res["numba"] else "not installed") + "; rows above use it only with "
        "RESSCALE_NUMBA=1 or large L")
    row(f"{sname}: S grid only, NumPy fallback", rs_res["sensitivity_grid_numpy"]["steady_s"],
        g(nts, "vmap-sens", "steady_s"), "")
    row(f"{sname}: first call, optimal_alpha vs NT vmap kernels", oa["first_call_s"],
        g(nts, "vmap-kernel", "first_call_s"), "NT incl. compile")
    if "loop-jit" in nts:
        row(f"{sname}: NT loop of jitted calls", oa["steady_s"], nts["loop-jit"]["steady_s"],
            f"NT compile {nts['loop-jit']['compile_s']:.1f} s extra")
    if "loop-rebuild" in nts:
        e = nts["loop-rebuild"]
        row(f"{sname}: NT eager, net rebuilt per alpha", oa["steady_s"], e["steady_s"],
            f"NT: {e['alphas_timed']} alphas timed, extrapolated")

    for r in rs_res.get("tabulated", []):
        q = r.get("quad_s")
        note = f"{r['activation']}/erf {r['ratio_nb']:.1f}x (erf same run {fmt_t(r['erf_s'])}); " + \
            f"quadrature points in the call {r.get('quad_points_nb')}; " + \
            (f"quadrature {fmt_t(q)} ({q / r['tab_s']:.0f}x); " if q else "") + \
            f"table build {fmt_t(r['build_s'])}; erf {fmt_t(r['erf_s'])} ({r['ratio_nb']:.1f}x); " + \
            f"no numba {fmt_t(r['tab_np_s'])}, erf {fmt_t(r['erf_np_s'])} ({r['ratio_np']:.1f}x); " + \
            (f"max |d log S| {r['max_dlogS']:.1e}, alpha* rel " +
             (f"{r['alpha_rel']:.1e}" if r["alpha_rel"] is not None else "-") if q else "")
        row(f"optimal_alpha {r['activation']}, {a.n_alphas} alphas, L={r['L']}: tabulated (2nd call, numba)", r["tab_s"],
            None, note)
    for r in rs_res.get("tabulated_numba", []):
        note = (f"erf same run {fmt_t(r['erf_s'])}: tanh/erf {r['ratio']:.1f}x; tanh alpha* {r['tanh_alpha']:.6g}" +
                (f"; vs NumPy table: max |d log S| {r['max_dlogS_vs_numpy_table']:.1e} (NumPy grid pass "
                 f"{fmt_t(r['numpy_grid_s'])}); numba load {fmt_t(r['load_s'])}" if r["numba"] else ""))
        row(f"optimal_alpha tanh vs erf, {a.n_alphas} alphas, L={r['L']}, " +
            ("numba (compiled tables)" if r["numba"] else "no numba (NumPy tables)"), r["tanh_s"], None, note)
    head = ("work item", "resscale", "neural-tangents", "NT/resscale", "CPU s rs / NT", "note")
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print("\nwall clock, best of n (CPU column: process CPU time of the same calls, all threads)")
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    print("-+-".join("-" * w[i] for i in range(len(head))))
    for r in rows:
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    print()
    print(f"resscale optimal_alpha: alpha* = {oa['alpha']:.6g} (S = {oa['sensitivity']:.6g}), "
          f"analytic {oa['alpha_analytic']:.6g}")
    if nt_res is None and not a.no_nt:
        print("neural-tangents: not run (see message above)")
    elif nt_res is not None:
        print(f"neural-tangents {nt_res['versions']['neural_tangents']}, jax {nt_res['versions']['jax']}, "
              f"{nt_res['dtype']}, XLA CPU default threads; {nt_res['machine']['cpu_count']} cores")
    for k, v in checks.items():
        print(f"check {k}: {v:.3g}" if isinstance(v, float) else f"check {k}: {v}")
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} "
          f"(timings on a loaded machine are upper bounds)")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine, "threads": thread_settings(),
                                            "loadavg_before": load0, "loadavg_after": load1,
                                            "args": vars(a), "resscale": rs_res, "neural_tangents": nt_res,
                                            "checks": checks, "table": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
