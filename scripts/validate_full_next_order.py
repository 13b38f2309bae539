"""Validate the full block's next order in 1/N (issue 10; docs/theory.md Sec. 4.12.5) against Monte-Carlo.

For each test point (block "full"; erf, tanh, gelu, and relu with its kink terms, Sec. 4.12.6) and width N it compares

    N Cov(Khat^L)            with  V (leading order)  and  V + V1/N (next order)
    N (E Khat^L - K^L)       with  M                  and  M + M2/N

V1, M2 come from ``rs.finite_width(net, K0=K0, order=2)`` (fourth-order von Mises expansion,
randomized-QMC integration with its own standard error, Eq. 4.107-4.109); the z columns use the
combined SE of the Monte-Carlo and of that integration.

Monte-Carlo: the exact conditional-Gaussian simulator of the full block
(``validate_finite_width.simulate_full``: given layer l-1 the branch pre-activations are i.i.d.
N(0, sigma_w2 Ghat + sigma_b2) over neurons, the same law of Khat^L as the weight-drawing network),
with its reference-particle control variate for the mean (known mean, unbiased). Covariance:
unbiased sample covariance, delta-method SE.

Resumable: every (point, N, chunk) is saved atomically to .cache/validate_full_next_order/*.npz;
rerunning skips finished chunks. Progress on stderr. Writes the docs/validation.md section
"Next order in 1/N: the full block" with --write.

Usage:  python scripts/validate_full_next_order.py [--points J,K] [--networks 200000] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import resscale as rs  # noqa: E402
from resscale._storage import save_json_atomic, write_marked_section  # noqa: E402
from validate_finite_width import estimates, simulate_full  # noqa: E402
from validate_next_order import resumable_chunks  # noqa: E402

CACHE = os.path.join(os.path.dirname(__file__), "..", ".cache", "validate_full_next_order")
DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "validation.md")
MARK = "<!-- next-order-full-issue-10 -->"

K2 = [[1.0, 0.6], [0.6, 1.5]]
K3 = [[1.0, 0.5, 0.3], [0.5, 1.2, 0.4], [0.3, 0.4, 0.8]]
POINTS = {
    # the full-block erf rows of the finite-width validation table (docs/validation.md, first table)
    "J": dict(activation="erf", depth=20, alpha=0.5, sigma_w2=1.0, sigma_b2=0.0, K0=K2),
    "K": dict(activation="erf", depth=10, alpha=0.3, sigma_w2=2.0, sigma_b2=0.1, K0=K2),
    "L": dict(activation="erf", depth=8, alpha=0.5, sigma_w2=1.0, sigma_b2=0.05, K0=K3),
    # issue 10's full-block case (gelu, L = 10, alpha = 0.5: leading order 25% low at N = 32)
    "M": dict(activation="gelu", depth=10, alpha=0.5, sigma_w2=1.5, sigma_b2=0.0, K0=K2),
    "O": dict(activation="gelu", depth=6, alpha=0.6, sigma_w2=1.5, sigma_b2=0.1, K0=K3),
    "T": dict(activation="tanh", depth=8, alpha=0.7, sigma_w2=2.0, sigma_b2=0.1, K0=K2),
    # the full-block relu rows of the first table, and issue 10's relu case (leading order 38% low at N = 32)
    "R": dict(activation="relu", depth=10, alpha=0.5, sigma_w2=1.0, sigma_b2=0.0, K0=K2),
    "S": dict(activation="relu", depth=20, alpha=0.3, sigma_w2=2.0, sigma_b2=0.1, K0=K2),
    "U": dict(activation="relu", depth=8, alpha=0.4, sigma_w2=1.5, sigma_b2=0.0, K0=K3),
    "W": dict(activation="relu", depth=8, alpha=0.7, sigma_w2=1.3, sigma_b2=0.0, K0=K3),
}
WIDTHS = (16, 32, 64)


def make_net(pt):
    kw = {k: v for k, v in pt.items() if k != "K0"}
    return rs.ResNet(block="full", **kw), np.array(pt["K0"], dtype=float)


def run_cell(key, net, K0, fw, N, S_total, chunk, seed):
    """(Khat^L, control variate) of S_total networks at width N, in resumable chunks."""
    theory = dict(Ks=fw.extras["Ks"], A=fw.extras["A"], G=fw.extras["G"])

    def compute(c):
        k, y = simulate_full(net, K0, N, chunk, [seed, N, c], theory)
        return dict(Kh=k, Y=y)
    ds = list(resumable_chunks(f"{key} N={N}", lambda c: os.path.join(CACHE, f"{key}_N{N}_c{c:04d}_{chunk}.npz"),
                               -(-S_total // chunk), compute))
    return np.concatenate([d["Kh"] for d in ds]), np.concatenate([d["Y"] for d in ds])


def row_for(key, pt, net, K0, fw, N, Kh, Y):
    P = K0.shape[0]
    Mmc, Mse, Vmc, Vse = estimates(Kh, Y, fw.kernel, N)
    V, V1 = fw.covariance, fw.covariance_correction
    M, M2 = fw.mean_shift, fw.mean_shift2
    V1se = fw.extras["next_order_se"]["V1"]
    M2se = fw.extras["next_order_se"]["M2"]
    d = np.sqrt(np.abs(np.einsum("abab->ab", Vmc)))
    den = d[:, :, None, None] * d[None, None, :, :]
    lo, nlo = V, V + V1 / N
    se_nlo = np.sqrt(Vse ** 2 + (V1se / N) ** 2)
    mden = np.max(np.abs(M))
    mlo, mnlo = M, M + M2 / N
    mse_nlo = np.sqrt(Mse ** 2 + (M2se / N) ** 2)
    return dict(point=key, block="full", activation=pt["activation"], L=net.depth, alpha=net.alpha,
                sigma_w2=net.sigma_w2, sigma_b2=net.sigma_b2, P=P, N=N, S=int(Kh.shape[0]),
                err_lo=float(np.max(np.abs(lo - Vmc) / den)), err_nlo=float(np.max(np.abs(nlo - Vmc) / den)),
                z_lo=float(np.max(np.abs(lo - Vmc) / Vse)), z_nlo=float(np.max(np.abs(nlo - Vmc) / se_nlo)),
                se_rel=float(np.max(Vse / den)), v1_rel_se=float(np.max(V1se / np.maximum(np.abs(V1), 1e-300))),
                v1_over_nv=float(np.max(np.abs(V1) / den) / N),
                merr_lo=float(np.max(np.abs(mlo - Mmc)) / mden), merr_nlo=float(np.max(np.abs(mnlo - Mmc)) / mden),
                mz_lo=float(np.max(np.abs(mlo - Mmc) / Mse)), mz_nlo=float(np.max(np.abs(mnlo - Mmc) / mse_nlo)),
                eps=float(fw.expansion_ratio), eps2=float(fw.expansion_ratio ** 2),
                n_pairs=int(fw.extras["next_order_se"]["n_pairs"]))


def render(rows):
    out = ["### Next order in 1/N: the full block (Eq. 4.107-4.109)", "",
           "Generated by `scripts/validate_full_next_order.py --write` (resumable cache "
           ".cache/validate_full_next_order/). Theory: `rs.finite_width(net, K0=K0, order=2)`, whose V1, M2 "
           "come from the fourth-order von Mises expansion integrated by randomized QMC (n pairs = seed pairs "
           "x scrambles; V1 SE = its largest relative integration SE over the entries). Monte-Carlo: the exact "
           "conditional-Gaussian full-block simulator of the first table (reference-particle control variate "
           "for the mean), S networks per width. Columns as in the closed-chain table; z uses the combined SE "
           "of the Monte-Carlo and of the integration; V1/(N V) is the size of the correction.", "",
           "| pt | phi | L | alpha | sw2 | sb2 | P | N | S | V1/(N V) | cov err LO | cov err NLO | z LO | z NLO | "
           "MC SE | V1 SE | mean err LO | mean err NLO | z LO | z NLO | eps^2 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['point']} | {r['activation']} | {r['L']} | {r['alpha']} | {r['sigma_w2']} | "
                   f"{r['sigma_b2']} | {r['P']} | {r['N']} | {r['S']} | {100 * r['v1_over_nv']:.1f}% | "
                   f"{100 * r['err_lo']:.1f}% | {100 * r['err_nlo']:.1f}% | {r['z_lo']:.1f} | {r['z_nlo']:.1f} | "
                   f"{100 * r['se_rel']:.2f}% | {100 * r['v1_rel_se']:.1f}% | {100 * r['merr_lo']:.1f}% | "
                   f"{100 * r['merr_nlo']:.1f}% | {r['mz_lo']:.1f} | {r['mz_nlo']:.1f} | {r['eps2']:.4f} |")
    at32 = [r for r in rows if r["N"] == 32]
    if at32:
        ok = [r for r in at32 if r["err_nlo"] <= 0.05 and r["z_nlo"] <= 4.0]
        out += ["", f"At N = 32: {len(ok)} of {len(at32)} points have the next-order covariance within 5% and "
                    f"4 SE of the simulation (largest error {100 * max(r['err_nlo'] for r in at32):.1f}%, "
                    f"largest z {max(r['z_nlo'] for r in at32):.1f}); leading order: largest error "
                    f"{100 * max(r['err_lo'] for r in at32):.1f}%, largest z {max(r['z_lo'] for r in at32):.1f}."]
        from resscale.finite_width.next_order import VALIDITY
        smooth = [r for r in at32 if r["activation"] in ("erf", "tanh")]
        gel = [r for r in at32 if r["activation"] == "gelu"]
        small = [r for r in rows if r["activation"] == "gelu" and r["N"] == 16]
        rng = lambda rs_, k, f=100: f"{f * min(r[k] for r in rs_):.1f}-{f * max(r[k] for r in rs_):.1f}"  # noqa: E731
        mz = max(r["mz_nlo"] for r in rows)
        bad = [r for r in rows if r["z_nlo"] > 4.0 or r["err_nlo"] > 0.05]
        above = [r for r in bad if r["eps2"] > VALIDITY[2]]
        validity = (f"All {len(bad)} rows outside 5% / 4 SE have expansion_parameter (eps^2) above the order-2 "
                    f"validity threshold {VALIDITY[2]} (`next_order.VALIDITY`), where `resscale finite` warns."
                    if len(above) == len(bad) else
                    f"{len(bad) - len(above)} of {len(bad)} rows outside 5% / 4 SE have expansion_parameter below "
                    f"the order-2 validity threshold {VALIDITY[2]}: the threshold does not cover them.")
        if smooth and gel and small:
            out += ["", "Reading (measured): erf and tanh points (J, K, L: the full-block erf rows of the first table; "
                    f"T): at N = 32 the leading order is {rng(smooth, 'err_lo')}% off ({rng(smooth, 'z_lo', 1)} SE), "
                    f"the next order {rng(smooth, 'err_nlo')}% ({rng(smooth, 'z_nlo', 1)} SE), and so at N = 16 and 64. "
                    f"gelu (M: issue 10's case, O): the leading order is {rng(gel, 'err_lo')}% low at N = 32, the next "
                    f"order leaves {rng(gel, 'err_nlo')}% ({rng(gel, 'z_nlo', 1)} SE); at N = 16 (eps^2 = "
                    f"{min(r['eps2'] for r in small):.2f}-{max(r['eps2'] for r in small):.2f}) it leaves "
                    f"{rng(small, 'err_nlo')}%: asymptotic-like, as for the closed chains. {validity} Mean: the simulation resolves N (E Khat - K) to 1-4% of |M| here; "
                    f"M + M2/N agrees within {mz:.1f} SE on every row (M2's integration SE included) and is not "
                    "measurably better than M alone (M2's integration SE is large for gelu, Sec. 4.12.5)."]
        rel = [r for r in at32 if r["activation"] == "relu"]
        if rel:
            ok_r = [r for r in rel if r["err_nlo"] <= 0.05 and r["z_nlo"] <= 4.0]
            out += ["", f"relu (R, S, U: the full-block relu rows of the first table; W: issue 10's relu case; kink "
                    f"terms of Sec. 4.12.6): at N = 32 the leading order is {rng(rel, 'err_lo')}% off "
                    f"({rng(rel, 'z_lo', 1)} SE), the next order {rng(rel, 'err_nlo')}% ({rng(rel, 'z_nlo', 1)} SE); "
                    f"{len(ok_r)} of {len(rel)} within 5% and 4 SE"
                    + "".join(f"; {r['point']} is not (eps^2 = {r['eps2']:.3f}, above the threshold {VALIDITY[2]})"
                              for r in rel if r not in ok_r and r["eps2"] > VALIDITY[2])
                    + "".join(f"; {r['point']} is not, at eps^2 = {r['eps2']:.3f} below the threshold"
                              for r in rel if r not in ok_r and r["eps2"] <= VALIDITY[2]) + "."]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", default=",".join(POINTS))
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--networks", type=int, default=200_000, help="networks per width")
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--samples", type=int, default=None, help="theory seed pairs per scramble (power of 2)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--render", action="store_true", help="only render the saved rows")
    args = ap.parse_args(argv)
    os.makedirs(CACHE, exist_ok=True)
    out_json = os.path.join(CACHE, "rows.json")
    if args.render:
        rows = json.load(open(out_json))
    else:
        old = {(r["point"], r["N"]): r for r in (json.load(open(out_json)) if os.path.exists(out_json) else [])}
        for key in args.points.split(","):
            pt = POINTS[key]
            net, K0 = make_net(pt)
            t0 = time.time()
            fw = rs.finite_width(net, K0=K0, order=2, method="exact", next_order_samples=args.samples)
            print(f"[{key}] theory {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
            for N in map(int, args.widths.split(",")):
                fw.width = N
                Kh, Y = run_cell(key, net, K0, fw, N, args.networks, args.chunk, args.seed)
                r = row_for(key, pt, net, K0, fw, N, Kh, Y)
                old[(key, N)] = r
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
                save_json_atomic(out_json, sorted(old.values(), key=lambda r: (r["point"], r["N"])))
        rows = sorted(old.values(), key=lambda r: (r["point"], r["N"]))
    text = render(rows)
    print(text)
    if args.write:
        write_marked_section(DOC, text, MARK)
    return rows


if __name__ == "__main__":
    main()
