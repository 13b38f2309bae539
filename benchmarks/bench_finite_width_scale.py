"""Benchmark: finite-width V + M at depth (issue 9), exact vs interpolated path, and the Monte-Carlo
cost of the same accuracy.

    python benchmarks/bench_finite_width_scale.py            # table (a few minutes on 2 cores)
    python benchmarks/bench_finite_width_scale.py --quick    # skip the exact L = 300 and P = 3 rows
    python benchmarks/bench_finite_width_scale.py --inputs   # P growth: P = 2, 3, 5, 10 at L = 100, 1000
    python benchmarks/bench_finite_width_scale.py --quad-acts [--reference]
        # tanh / gelu / softplus callable vs erf (P = 2, L = 100 and 1000), tabulated inner path;
        # --reference also runs the Gauss-Hermite inner path (slow: ~75 s per row on a quiet machine)

Prints one table: case, path, wall time, peak traced memory (tracemalloc: NumPy buffers
included), relative deviation from the exact path where it was run, and the path's own error
estimate. Then, for erf L = 1000, N = 64: the time per simulated network (rs.simulate) and how
many networks a Monte-Carlo estimate of V would need to reach the theory's stated accuracy
(relative SE of N Var(Khat_11) ~ sqrt(2 / n) for a near-Gaussian Khat; measured from the sample).
"""
import argparse
import time
import tracemalloc

import numpy as np

import resscale as rs

K2 = np.array([[1.0, 0.6], [0.6, 1.0]])


def measure(net, K0, method, memory=True):
    """Wall time of one call (untraced: tracemalloc slows the many small allocations ~10x), then
    the peak traced memory of a second call."""
    t = time.perf_counter()
    fw = rs.finite_width(net, K0=K0, method=method)
    dt = time.perf_counter() - t
    peak = float("nan")
    if memory:
        tracemalloc.start()
        rs.finite_width(net, K0=K0, method=method)
        peak = tracemalloc.get_traced_memory()[1] / 1e9
        tracemalloc.stop()
    return fw, dt, peak


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def kernel_of(P, seed=1, d=8):
    """Unit-diagonal data kernel of P random inputs (the P-growth rows; resscale.inputs.random_unit_kernel)."""
    from resscale.inputs import random_unit_kernel
    return random_unit_kernel(P, seed=seed, d=d)


def inputs_table(Ps=(2, 3, 5, 10), Ls=(100, 1000), exact_max=(3, 40)):
    """P growth of the node path (erf, alpha = 0.1 at L = 100, 0.03 at L = 1000). The peer is the exact
    path where it is feasible (P <= exact_max[0] at L = exact_max[1], raised order (24, 16) as the
    reference: the exact path's default quadrature is the less accurate one for P >= 3)."""
    print(f"{'case':28s} {'path':13s} {'time s':>8s} {'peak GB':>8s} {'dev V':>9s} {'dev M':>9s} {'est V':>9s} {'est M':>9s}")
    for P in Ps:
        K0 = kernel_of(P)
        for L in Ls:
            net = rs.ResNet(depth=L, alpha=0.1 if L <= 100 else 0.03)
            fa, ta, pa = measure(net, K0, "interpolated")
            e = fa.extras["interp_error"]
            print(f"{f'erf P={P} L={L}':28s} {'interpolated':13s} {ta:8.2f} {pa:8.3f} {'':9s} {'':9s} {e['V']:9.1e} {e['M']:9.1e}",
                  flush=True)
        if P <= exact_max[0]:
            L = exact_max[1]
            net = rs.ResNet(depth=L, alpha=0.3, sigma_b2=0.1)
            t = time.perf_counter()
            fe = rs.finite_width(net, K0=K0, method="exact", n_r=24, n_t=16)
            te = time.perf_counter() - t
            fd, td, _ = measure(net, K0, "exact", memory=False)
            fa, ta, pa = measure(net, K0, "interpolated", memory=False)
            name = f"erf P={P} L={L} a=0.3 sb2=.1"
            print(f"{name:28s} {'exact(24,16)':13s} {te:8.2f}")
            print(f"{name:28s} {'exact':13s} {td:8.2f} {'':8s} {rel(fd.covariance, fe.covariance):9.1e} "
                  f"{rel(fd.mean_shift, fe.mean_shift):9.1e}")
            e = fa.extras["interp_error"]
            print(f"{name:28s} {'interpolated':13s} {ta:8.2f} {'':8s} {rel(fa.covariance, fe.covariance):9.1e} "
                  f"{rel(fa.mean_shift, fe.mean_shift):9.1e} {e['V']:9.1e} {e['M']:9.1e}", flush=True)


def softplus():
    """A smooth user callable (no derivatives given: central differences, as any callable)."""
    return rs.from_callable(lambda u: np.logaddexp(0.0, u), kinks=[])


def quad_acts_table(Ls=((100, 0.1), (1000, 0.03)), reference=False, repeat=2):
    """Quadrature activations on the finite-width node path (docs/theory.md Sec. 4.10): each
    activation timed back to back with erf in the same process (best of ``repeat`` calls, after one
    warm-up call that builds the smoothed-activation table and loads the compiled kernel), the
    ratio to erf, and with ``reference`` the max relative deviation of V and M from the
    Gauss-Hermite inner path (RESSCALE_FW_INNER=quadrature, the previous default)."""
    from resscale.finite_width.smoothed import inner_mode
    acts = [("tanh", "tanh"), ("gelu", "gelu"), ("softplus (callable)", softplus())]
    print(f"{'case':34s} {'time s':>8s} {'erf s':>8s} {'ratio':>6s} {'first s':>8s} {'quad s':>8s} {'dev V':>9s} {'dev M':>9s}")

    def best(net):
        ts = []
        for _ in range(repeat):
            t = time.perf_counter()
            fw = rs.finite_width(net, K0=K2)
            ts.append(time.perf_counter() - t)
        return fw, min(ts)

    for L, alpha in Ls:
        for name, act in acts:
            net_e = rs.ResNet(depth=L, alpha=alpha)
            net = rs.ResNet(depth=L, alpha=alpha, activation=act)
            t = time.perf_counter()
            rs.finite_width(net, K0=K2)
            first = time.perf_counter() - t
            _, te = best(net_e)
            fa, ta = best(net)
            tq = dv = dm = float("nan")
            if reference:
                with inner_mode("quadrature"):
                    t = time.perf_counter()
                    fq = rs.finite_width(net, K0=K2)
                    tq = time.perf_counter() - t
                dv, dm = rel(fa.covariance, fq.covariance), rel(fa.mean_shift, fq.mean_shift)
            print(f"{f'{name} L={L} alpha={alpha}':34s} {ta:8.2f} {te:8.2f} {ta / te:6.2f} {first:8.2f} {tq:8.2f} "
                  f"{dv:9.1e} {dm:9.1e}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--inputs", action="store_true", help="only the P-growth table")
    ap.add_argument("--P", type=int, nargs="*", default=[2, 3, 5, 10], help="P values of --inputs")
    ap.add_argument("--L", type=int, nargs="*", default=[100, 1000], help="depths of --inputs")
    ap.add_argument("--quad-acts", action="store_true", help="only the quadrature-activation table")
    ap.add_argument("--reference", action="store_true", help="with --quad-acts: also the quadrature inner path")
    args = ap.parse_args()
    if args.quad_acts:
        quad_acts_table(reference=args.reference)
        return
    if args.inputs:
        inputs_table(tuple(args.P), tuple(args.L))
        return
    rows = []
    cases = [("erf", 100, 0.1, K2, True), ("erf", 300, 0.1, K2, not args.quick), ("erf", 1000, 0.1, K2, False),
             ("erf", 10000, 0.02, K2, False), ("relu", 1000, 0.05, K2, False)]
    if not args.quick:
        K3 = np.array([[1.0, 0.6, 0.2], [0.6, 1.3, -0.1], [0.2, -0.1, 0.8]])
        cases.append(("erf", 100, 0.2, K3, False))
        cases.append(("tanh", 200, 0.1, K2, False))   # quadrature activation: node tables dominate
    print(f"{'case':32s} {'path':13s} {'time s':>8s} {'peak GB':>8s} {'dev V':>9s} {'dev M':>9s} {'est V':>9s} {'est M':>9s}")
    for act, L, alpha, K0, exact in cases:
        net = rs.ResNet(depth=L, alpha=alpha, activation=act)
        name = f"{act} L={L} alpha={alpha} P={K0.shape[0]}"
        fa, ta, pa = measure(net, K0, "interpolated")
        dv = dm = float("nan")
        if exact:
            fe, te, pe = measure(net, K0, "exact", memory=L <= 100)
            dv, dm = rel(fa.covariance, fe.covariance), rel(fa.mean_shift, fe.mean_shift)
            print(f"{name:32s} {'exact':13s} {te:8.2f} {pe:8.3f}")
        e = fa.extras["interp_error"]
        print(f"{name:32s} {'interpolated':13s} {ta:8.2f} {pa:8.3f} {dv:9.1e} {dm:9.1e} {e['V']:9.1e} {e['M']:9.1e}", flush=True)
        rows.append((name, ta))
    # Monte-Carlo equivalent
    net = rs.ResNet(depth=1000, alpha=0.1)
    n = 64
    t = time.perf_counter()
    sim = rs.simulate(net, width=64, n_networks=n, K0=K2, seed=1)
    dt = (time.perf_counter() - t) / n
    fw = rs.finite_width(net, K0=K2)
    acc = max(fw.extras["interp_error"]["V"], 1e-4)
    n_needed = 2.0 / acc ** 2
    print(f"\nMonte-Carlo, erf L=1000 N=64: {dt * 1e3:.1f} ms per network; V to {acc:.1e} relative needs "
          f"~{n_needed:.2g} networks = {n_needed * dt / 3600:.3g} h, vs the theory's "
          f"{rows[2][1]:.1f} s (ratio {n_needed * dt / rows[2][1]:.2g})", flush=True)
    _ = sim


if __name__ == "__main__":
    main()
