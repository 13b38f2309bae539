"""Measure the finite-width shift alpha*(N) - alpha*_inf by CRN Monte Carlo (issue 11, Figure 6).

erf, full block, sigma_w2 = 1, c0 = 0.9, q0 = 1, L = 30 (the setup of Figure 6). For each width N:
``resscale.simulated_optimum.simulate_optimum`` (CRN grid of 9 alphas in [0.9, 1.1] alpha*_inf,
pathwise d c_hat/d c0 per network, exact-mean-zero martingale control variates, cross-fitted),
against the 1/N theory (``predicted_shift``: delta(alpha) exact at the grid alphas). Writes the
marked section ``<!-- alpha-star-finite-width -->`` of docs/validation.md.

Each width's result is cached as JSON in ``--cache`` (default /tmp/resscale_alpha_star_fw), so an
interrupted run resumes width by width. Run (about 10 CPU minutes with the defaults)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/validate_alpha_star_finite_width.py
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import resscale as rs  # noqa: E402
from resscale.simulated_optimum import networks_to_resolve, predicted_shift, simulate_optimum  # noqa: E402

MARK = "<!-- alpha-star-finite-width -->"
END = "<!-- alpha-star-finite-width --> end"


def _f(x, d=4):
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{d}g}"


def run_width(net, N, n, seed, cache, c0, q0):
    path = Path(cache) / f"N{N}_n{n}_s{seed}_L{net.depth}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.time()

    def prog(done, total):
        if done == total or done % (total // 8 or 1) < 1024:
            print(f"  N={N}: {done}/{total} networks ({time.time() - t0:.0f} s)", flush=True)

    r = simulate_optimum(net, N, c0, q0, n_networks=n, seed=seed, progress=prog)
    d = r.to_dict()
    A = r.alphas.size
    # bootstrap of the raw (no-CV) shift with the exact S_inf'' denominator: a check of the SE
    # under heavy tails
    rng = np.random.default_rng(seed)
    b = r.samples[:, A]
    boots = [b[rng.integers(0, b.size, b.size)].mean() for _ in range(200)]
    d["shift_raw_mf_boot_se"] = float(np.std(boots, ddof=1) / abs(r.meta["d2S_inf"]))
    # the CV-adjusted Y at alpha*_inf: tail share of the top 0.1 % networks in the raw slope variance
    o = np.argsort(-np.abs(b - b.mean()))
    d["slope_top01pct_var_share"] = float(((b[o[: max(1, b.size // 1000)]] - b.mean()) ** 2).sum()
                                          / ((b - b.mean()) ** 2).sum())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return d


def table(res, pred, pred_hi, a_inf):
    lines = ["| N | predicted alpha*(N) | predicted shift (1/N theory, local) | same, quadrature n_r=16, n_t=10 "
             "| library `optimal_alpha(width=N)` shift | simulated shift +- SE (CV, -D/S''_inf) | ratio -D/S_N'' +- SE "
             "| no CV, -D/S''_inf +- SE (bootstrap SE) | networks | CPU s | networks to resolve (SE = predicted shift) | CPU to resolve |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for N, d in res.items():
        p = pred["widths"][N]
        ph = pred_hi["widths"][N] if pred_hi else None
        need = networks_to_resolve(d["n_networks"], d["shift_mf_se"], p["shift"])
        cpu_need = d["cpu_s"] * need / d["n_networks"]
        lines.append(
            f"| {N} | {_f(a_inf + p['shift'], 6)} | {p['shift']:+.2e} | "
            f"{(ph['shift'] if ph else math.nan):+.2e} | {p['shift_library']:+.2e} | "
            f"{d['shift_mf']:+.4f} +- {d['shift_mf_se']:.4f} | {d['shift']:+.4f} +- {d['shift_se']:.4f} | "
            f"{d['shift_raw_mf']:+.4f} +- {d['shift_raw_mf_se']:.4f} ({d['shift_raw_mf_boot_se']:.4f}) | "
            f"{d['n_networks']} | {d['cpu_s']:.0f} | {need:.2g} | {cpu_need:.2g} s ({cpu_need / 3600:.2g} h) |")
    return "\n".join(lines)


def diag_table(res, pred):
    lines = ["| N | S_N(alpha*_inf) sim +- SE | theory | max abs z over the 9 alphas (CV) | R^2 of CV: S(alpha*_inf), slope, "
             "curvature | excess kurtosis: Y(alpha*_inf), slope, curvature | top 0.1% networks' share of slope variance "
             "| ratio-estimator bias |",
             "|---|---|---|---|---|---|---|---|"]
    for N, d in res.items():
        p = pred["widths"][N]
        A = len(d["alphas"])
        j0 = A // 2
        z = (np.array(d["S"]) - np.array(p["S_N"])) / np.array(d["S_se"])
        k = d["kurtosis"]
        r2 = d["r2"]
        lines.append(f"| {N} | {d['S'][j0]:.4f} +- {d['S_se'][j0]:.4f} | {p['S_N'][j0]:.4f} | {np.max(np.abs(z)):.2f} | "
                     f"{r2[j0]:.2f}, {r2[A]:.2f}, {r2[A + 1]:.2f} | {k['Y_at_alpha_inf']:.0f}, {k['slope']:.0f}, "
                     f"{k['curv']:.0f} | {d['slope_top01pct_var_share']:.2f} | {d['ratio_bias']:+.1e} |")
    return "\n".join(lines)


def write_section(text, path):
    path = Path(path)
    old = path.read_text() if path.is_file() else ""  # re-read right before writing
    block = f"{MARK}\n{text}\n{END}"
    if MARK in old and END in old:
        i, j = old.index(MARK), old.index(END) + len(END)
        new = old[:i] + block + old[j:]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,128,512")
    ap.add_argument("--networks", default="131072,32768,8192")
    ap.add_argument("--depth", type=int, default=30)
    ap.add_argument("--c0", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--cache", default="/tmp/resscale_alpha_star_fw")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-hi", action="store_true", help="skip the high-order quadrature check of the theory")
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    nets = [int(n) for n in args.networks.split(",")]
    net = rs.ResNet(depth=args.depth, alpha=0.1, sigma_w2=1.0, activation="erf", block="full")
    res = {}
    for N, n in zip(widths, nets):
        res[N] = run_width(net, N, n, args.seed + N, args.cache, args.c0, 1.0)
        d = res[N]
        print(f"N={N}: shift {d['shift_mf']:+.4f} +- {d['shift_mf_se']:.4f} ({d['n_networks']} nets, {d['cpu_s']:.0f} s)",
              flush=True)
    any_ = next(iter(res.values()))
    a_inf, alphas = any_["alpha_inf"], np.array(any_["alphas"])
    t0 = time.process_time()
    pred = predicted_shift(net, args.c0, 1.0, widths, alphas, a_inf)
    pred_hi = None if args.no_hi else predicted_shift(net, args.c0, 1.0, widths, alphas, a_inf, n_r=16, n_t=10)
    t_th = time.process_time() - t0
    d0 = pred["delta"]
    l1_delta = (pred["widths"][widths[0]]["dS_dalpha"] * widths[0])
    txt = [f"## Simulated finite-width optimum alpha*(N) (issue 11, Figure 6; "
           f"`scripts/validate_alpha_star_finite_width.py`)",
           "",
           f"erf, full block, sigma_w2 = 1, sigma_b2 = 0, c0 = {args.c0}, q0 = 1, L = {args.depth}; "
           f"alpha*_inf = {a_inf:.6f} (exact mean field). Estimator: docs/theory.md Sec. 4.6.1 "
           f"(`resscale.simulated_optimum.simulate_optimum`): 9 alphas in [0.9, 1.1] alpha*_inf with common random "
           f"numbers, per-network pathwise d c_hat^L/d c^0, degree-4 local polynomial for the slope D = dS_N/dalpha at "
           f"alpha*_inf (mean-field part subtracted exactly), exact-mean-zero martingale control variates "
           f"(cross-fitted). Simulated shift = -D/S_inf'' (S_inf'' = {any_['d2S_inf']:.4f} exact).",
           "",
           f"1/N theory: delta(alpha) = N (S_N - S_inf) at the 9 grid alphas = "
           f"{', '.join(f'{v:.5f}' for v in d0)}; delta'(alpha*_inf) = {l1_delta:.4f} (default quadrature), "
           f"so the predicted shift is -delta'/(N S'') = {l1_delta / abs(any_['d2S_inf']):.4f}/N. "
           f"Theory CPU {t_th:.0f} s.",
           "",
           table(res, pred, pred_hi, a_inf),
           "",
           "Diagnostics (simulated S_N vs the 1/N theory on the grid; estimator tails):",
           "",
           diag_table(res, pred),
           ""]
    txt.append(verdict(res, pred, widths))
    text = "\n".join(txt)
    print(text)
    if not args.no_write:
        write_section(text, ROOT / "docs" / "validation.md")


def verdict(res, pred, widths):
    """The conclusion, from the numbers (no hard-coded values)."""
    rows = []
    for N in widths:
        d, p = res[N], pred["widths"][N]
        need = networks_to_resolve(d["n_networks"], d["shift_mf_se"], p["shift"])
        rows.append(dict(N=N, pred=p["shift"], lib=p["shift_library"], se=d["shift_mf_se"], sim=d["shift_mf"],
                         n=d["n_networks"], need=need, hours=d["cpu_s"] * need / d["n_networks"] / 3600,
                         z0=d["shift_mf"] / d["shift_mf_se"], zp=(d["shift_mf"] - p["shift"]) / d["shift_mf_se"],
                         kurt=d["kurtosis"]["slope"], r2=d["r2"][len(d["alphas"])],
                         per_net=d["shift_mf_se"] * math.sqrt(d["n_networks"])))
    r0 = rows[0]
    first = res[widths[0]]
    resolved = [r for r in rows if r["se"] < abs(r["pred"])]
    out = ["**Verdict.** "]
    if resolved:
        out.append("The shift is resolved at N = " + ", ".join(str(r["N"]) for r in resolved) + ". ")
    else:
        out.append(f"The finite-width shift of alpha* at L = {first['net']['depth']} is below what "
                   "simulation can resolve on this machine. ")
    out.append(f"At N = {r0['N']} the 1/N theory predicts alpha*(N) - alpha*_inf = {r0['pred']:+.1e} "
               f"({100 * r0['pred'] / first['alpha_inf']:.2f}% of alpha*: delta(alpha) is nearly stationary "
               f"at alpha*_inf); the simulated shift is {r0['sim']:+.4f} +- {r0['se']:.4f} with {r0['n']} networks, "
               f"an SE {r0['se'] / abs(r0['pred']):.0f} times the predicted shift; resolving it (SE = predicted "
               f"shift) needs about {r0['need']:.1g} networks, {r0['hours']:.2g} CPU hours. ")
    out.append("Per width (N: SE x sqrt(n), networks and CPU hours to resolve): " + "; ".join(
        f"{r['N']}: {r['per_net']:.2f}, {r['need']:.1g}, {r['hours']:.2g} h" for r in rows) + ". ")
    out.append("The simulated shifts are consistent with zero (|z| = " + ", ".join(f"{abs(r['z0']):.1f}" for r in rows)
               + ") and with the theory (|z| = " + ", ".join(f"{abs(r['zp']):.1f}" for r in rows) + "). ")
    out.append("The per-network slope d Y_s/d alpha is heavy tailed (excess kurtosis " + ", ".join(
        f"{r['kurt']:.0f}" for r in rows) + "; the finite-width fluctuations of the Jacobian are lognormal-like) "
               "and the exact-mean-zero control variates remove a fraction " + ", ".join(
        f"{r['r2']:.2f}" for r in rows) + " of its variance. Since the shift falls like 1/N while the per-network "
               "SE falls only like N^-1/2 and the cost per network grows like N, wider nets need more CPU, not less. ")
    tmpl = {32: 0.728, 128: 0.746}
    zt = [(r["N"], (r["sim"] - (tmpl[r["N"]] - first["alpha_inf"])) / r["se"]) for r in rows if r["N"] in tmpl]
    if zt:
        out.append("The earlier template-fit values of Figure 6 (alpha*(N) = 0.728 +- 0.048 at N = 32, 0.746 +- 0.045 "
                   "at N = 128, i.e. shifts of about -0.15 and -0.13) are excluded: the CRN estimates differ from them "
                   "by " + ", ".join(f"{z:+.0f} SE (N = {N})" for N, z in zt) + ". ")
    bad = [r for r in rows if np.sign(r["lib"]) != np.sign(r["pred"])]
    if bad:
        out.append(f"The library's `optimal_alpha(width=N)` shift has the opposite sign here ({bad[0]['lib']:+.1e} at "
                   f"N = {bad[0]['N']}): its 7-node cubic spline of delta over [alpha*/2.5, 2.5 alpha*] cannot "
                   "resolve delta'(alpha*_inf), which is tiny while the third derivative of delta is not; the local "
                   "value above evaluates delta exactly at the 9 grid alphas. ")
    parts = []
    for N in widths:
        d, p = res[N], pred["widths"][N]
        j0 = len(d["alphas"]) // 2
        dd, th, se = d["S"][j0] - d["S_inf"][j0], p["S_N"][j0] - d["S_inf"][j0], d["S_se"][j0]
        parts.append(f"N = {N}: {dd:.4f} +- {se:.4f} vs delta/N = {th:.4f} (z = {(dd - th) / se:+.1f})")
    out.append("What simulation does resolve is S_N(alpha) itself on the CRN grid; the finite-width correction "
               "S_N - S_inf at alpha*_inf is " + "; ".join(parts) + ". The smallest width's deviation, read as an O(1/N^2) term the 1/N "
               f"theory leaves out (order=2 is not implemented for the full block), is delta2 ~ "
               f"{(res[widths[0]]['S'][len(res[widths[0]]['alphas']) // 2] - pred['widths'][widths[0]]['S_N'][len(res[widths[0]]['alphas']) // 2]) * widths[0] ** 2:.0f}"
               " (a measurement, not a prediction); the grid values are strongly correlated through CRN, so the "
               "max |z| over the grid is one test, not nine.")
    return "".join(out)


if __name__ == "__main__":
    main()
