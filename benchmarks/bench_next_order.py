"""Cost of the next order in 1/N (docs/theory.md Sec. 4.12): ``finite_width(order=2)`` against
``finite_width(order=1)`` (its natural peer: the same network, the leading order only), per block,
as depth L and number of inputs P grow; and, for the full block (quasi-Monte-Carlo von Mises
integration, Sec. 4.12.5), the number of simulated networks that would resolve V1 as well.

The last column: simulated networks at N = 32 whose N Cov(Khat) has the same standard error
on V + V1/N as the integration's SE of V1 / 32 (delta-method SE of a sample covariance,
SE ~ sqrt(Var(prod)/S)), timed with the exact conditional-Gaussian sampler
(scripts/validate_finite_width.simulate_full).

``--sensitivity``: the full block's delta2 of S_N (Sec. 4.12.7) for erf and relu at L = 4, 8: its time and
integration SE at n seed pairs per scramble, against its peer, simulated networks: how many (and how long)
give y(N) = N [N (S_N - S_inf) - delta] (= delta2 + O(1/N)) the same SE at N = 8.
Usage: python benchmarks/bench_next_order.py [--quick] [--sensitivity]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import resscale as rs  # noqa: E402

K3 = np.array([[1.0, 0.5, 0.3], [0.5, 1.2, 0.4], [0.3, 0.4, 0.8]])


def _time(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def networks_for_same_se(net, K0, fw, N=32, S_probe=20000):
    """(networks, seconds) that give the sample N Cov(Khat) at width N the SE of V1/N from the integration."""
    from validate_finite_width import simulate_full
    th = dict(Ks=fw.extras["Ks"], A=fw.extras["A"], G=fw.extras["G"])
    t, (Kh, _) = _time(lambda: simulate_full(net, K0, N, S_probe, 1, th))
    d = Kh.reshape(S_probe, -1) - Kh.reshape(S_probe, -1).mean(0)
    sd = (N * d[:, :, None] * d[:, None, :]).std(0)             # per-network sd of the covariance estimator
    target = fw.extras["next_order_se"]["V1"].reshape(sd.shape) / N
    i = np.unravel_index(np.argmax(np.abs(fw.covariance_correction)), fw.covariance_correction.shape)
    flat = np.ravel_multi_index(i, fw.covariance_correction.shape)
    S = (sd.ravel()[flat] / target.ravel()[flat]) ** 2
    return S, t * S / S_probe


def bench_sensitivity(quick):
    """delta2 (theory, QMC) against simulated networks for the same SE of delta2 (Sec. 4.12.7)."""
    import warnings

    from validate_finite_width import simulate_sensitivity_full

    from resscale.finite_width.sensitivity import sensitivity_correction2
    rows = []
    for act in ("erf", "relu"):
        for L in ((4,) if quick else (4, 8)):
            net = rs.ResNet(block="full", activation=act, depth=L, alpha=0.6, sigma_w2=1.5, sigma_b2=0.1)
            n = 2 ** 10 if quick else 2 ** 12
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t, (d2, se) = _time(lambda: sensitivity_correction2(net, 0.5, 1.0, n_samples=n, return_se=True))
            # simulation: per-network SD of N^2 dS from 20000 networks at N = 8 (Richardson, h = 0.02)
            N, S_probe = 8, 20000
            ts, r = _time(lambda: simulate_sensitivity_full(net, 0.5, N, S_probe))
            S_same = (N * N * r.std() / se) ** 2
            rows.append((act, L, n, t, d2, se, S_same, ts * S_same / S_probe))
            print(f"  {act} L={L}: delta2 {d2:.3f} +- {se:.3f} in {t:.1f} s", file=sys.stderr, flush=True)
    print("| phi | L | n x 16 | delta2 (s) | delta2 | SE | MC networks for that SE at N = 8 | MC (s) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for act, L, n, t, d2, se, S, ts in rows:
        print(f"| {act} | {L} | {n} | {t:.1f} | {d2:.3f} | {se:.3f} | {S:.2g} | {ts:.2g} | {t / max(ts, 1e-9):.2g}x |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller grid (CI smoke)")
    ap.add_argument("--blocks", default="two_layer,reduced,feedforward,full,full-relu",
                    help="comma list; full-relu: the full block with relu and its kink terms (Sec. 4.12.6)")
    ap.add_argument("--sensitivity", action="store_true", help="only the full block's delta2 of S_N (Sec. 4.12.7)")
    args = ap.parse_args(argv)
    if args.sensitivity:
        return bench_sensitivity(args.quick)
    depths = (4, 8) if args.quick else (4, 8, 16)
    rows = []
    for label in args.blocks.split(","):
        block, act = ("full", "relu") if label == "full-relu" else (label, "erf")
        for P in (2, 3):
            for L in (depths[:2] if act == "relu" else depths):    # relu's kink terms: cost ~ L^2
                net = rs.ResNet(block=block, activation=act, depth=L, alpha=0.5, sigma_w2=1.5, sigma_b2=0.1)
                K0 = K3[:P, :P]
                t1, _ = _time(lambda: rs.finite_width(net, K0=K0, method="exact"))
                kw = dict(next_order_samples=2 ** 10) if args.quick and block == "full" else {}
                t2, fw = _time(lambda: rs.finite_width(net, K0=K0, order=2, method="exact", **kw))
                extra = ""
                if block == "full" and P == 2:
                    S, ts = networks_for_same_se(net, K0, fw)
                    extra = f"{S:.2g} networks, ~{ts:.0f} s"
                rows.append((label, P, L, t1, t2, extra))
                print(f"  {label} P={P} L={L}: order 1 {t1:.2f} s, order 2 {t2:.2f} s", file=sys.stderr, flush=True)
    print("| block | P | L | order 1 (s) | order 2 (s) | ratio | MC for the same V1 SE (N = 32) |")
    print("|---|---|---|---|---|---|---|")
    for block, P, L, t1, t2, extra in rows:
        print(f"| {block} | {P} | {L} | {t1:.2f} | {t2:.2f} | {t2 / t1:.0f}x | {extra} |")


if __name__ == "__main__":
    main()
