"""Benchmark: V and M of the finite-width theory, P = 2, L = 100 (target < 10 s).

    python benchmarks/bench_finite_width.py            # default path (fused P = 2 walk tables)
    python benchmarks/bench_finite_width.py --legacy   # also the pre-fusion path, for comparison
    python benchmarks/bench_finite_width.py --optimal  # also rs.optimal_alpha.optimal_alpha_finite_width, L=100, N=64

The fused path (resscale/finite_width/walk_integrals.py: _PairIntegrals._walk_tables_p2) computes every
cross-layer table from one shared outer grid per layer pair with composite radial rules;
the legacy path (fused=False) runs ~30 separate quadratures. Measured on the 2-core dev
box, quiet (load < 1): erf 6.46 s legacy -> 3.15 s fused, relu 6.42 -> 3.41 s; under heavy
load (load ~6): erf 40.9 -> 14.6 s, relu 27.5 -> 13.2 s; the fused path is also more
accurate (docs/theory.md Sec. 4.7). --optimal: 29.5 s (quiet).
"""
import argparse
import sys
import time

import numpy as np

import resscale as rs

FW = sys.modules["resscale.finite_width"]
WI = sys.modules["resscale.finite_width.walk_integrals"]
OA = sys.modules["resscale.optimal_alpha"]


def run(act, legacy=False):
    K0 = np.array([[1.0, 0.5], [0.5, 1.0]])
    net = rs.ResNet(depth=100, alpha=0.1, activation=act)
    defaults = WI._PairIntegrals.__init__.__defaults__
    if legacy:
        WI._PairIntegrals.__init__.__defaults__ = defaults[:-1] + (False,)
    try:
        t = time.perf_counter()
        fw = FW.finite_width(net, K0=K0)
        dt = time.perf_counter() - t
        t = time.perf_counter()
        FW.finite_width(net, K0=K0, mean_shift=False)
        dv = time.perf_counter() - t
    finally:
        WI._PairIntegrals.__init__.__defaults__ = defaults
    tag = "legacy" if legacy else "fused "
    print(f"{act:5s} L=100 P=2 {tag}: V+M {dt:6.2f} s   V only {dv:6.2f} s   "
          f"V_1111={fw.covariance[0, 0, 0, 0]:.6f} M_11={fw.mean_shift[0, 0]:.6f} M_12={fw.mean_shift[0, 1]:.6f}")
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--optimal", action="store_true")
    args = ap.parse_args()
    for act in ("erf", "relu"):
        run(act)
        if args.legacy:
            run(act, legacy=True)
    if args.optimal:
        t = time.perf_counter()
        r = OA.optimal_alpha_finite_width(rs.ResNet(depth=100), 0.9, 1.0, width=64)
        print(f"optimal_alpha_finite_width(L=100, c0=0.9, N=64): alpha*={r['alpha']:.5f} "
              f"(mean field {r['alpha_inf']:.5f}), S_N={r['sensitivity']:.5f}, "
              f"interp err of delta {r['interp_error']:.1e}: {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
