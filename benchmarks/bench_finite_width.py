"""Benchmark: V and M of the finite-width theory, P = 2, L = 100 (target < 10 s).

    python benchmarks/bench_finite_width.py
"""
import time

import numpy as np

import resscale as rs


def main():
    K0 = np.array([[1.0, 0.5], [0.5, 1.0]])
    for act in ("erf", "relu"):
        for nr, nt in ((12, 8), (8, 5)):
            net = rs.ResNet(depth=100, alpha=0.1, activation=act)
            t = time.perf_counter()
            fw = rs.finite_width(net, K0=K0, n_r=nr, n_t=nt)
            dt = time.perf_counter() - t
            t = time.perf_counter()
            rs.finite_width(net, K0=K0, n_r=nr, n_t=nt, mean_shift=False)
            dv = time.perf_counter() - t
            print(f"{act:5s} L=100 P=2 n_r={nr} n_t={nt}: V+M {dt:6.2f} s   V only {dv:6.2f} s   "
                  f"V_1111={fw.covariance[0, 0, 0, 0]:.5f} M_11={fw.mean_shift[0, 0]:.5f}")


if __name__ == "__main__":
    main()
