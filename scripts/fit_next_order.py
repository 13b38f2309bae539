"""Fit of the next order in 1/N (issue 10; docs/theory.md Sec. 4.12) over N = 16..512.

For each test point of scripts/validate_next_order.py (B: two_layer erf, F: reduced erf, A: two_layer
relu), or of scripts/validate_full_next_order.py (J..W: the full block, e.g. R: relu), and width N it
estimates from the exact closed-chain sampler (``validate_next_order.Chain``; full block: the
conditional-Gaussian sampler behind ``FullChain``)

    y(N) = N Cov(Khat^L_ab, Khat^L_cd)   (upper-triangle pairs of the kernel coordinates)
    z(N) = N (E Khat^L_ab - K^L_ab)      (martingale control variate, Eq. 4.93)

with standard errors (``validate_next_order.estimates`` per chunk: unbiased sample covariance with
the delta-method SE, CV mean with its SE; chunks of equal size are pooled by averaging, SE^2 = mean
of the chunk SE^2 / number of chunks; the spread of the chunk estimates is kept as a check), and
fits by weighted least squares (weights 1/SE^2, every coefficient free)

    y(N) = V + V1/N + V2/N^2          (and + V3/N^3, the truncation check)
    z(N) = M + M2/N + M3/N^2          (and + M4/N^3)

The fitted V1, M2 (SE from the WLS covariance, chi^2/dof reported) are compared with
``rs.finite_width(net, width=N, K0=K0, order=2)``: covariance_correction (V1), mean_shift2 (M2),
and the fitted V, M with covariance, mean_shift.

Allocation: the networks per width are chosen (``allocate``) to minimise the SE of V1 of the
quadratic fit for a CPU budget, cost per network a + b N measured, with a floor per width and a small
weight on the cubic fit's SE (so that the truncation check keeps some power).

Resumable: every (point, N, chunk) is saved atomically to .cache/fit_next_order/*.npz; rerunning
skips finished chunks (a larger --budget adds chunks, the seeds are per chunk). Progress on stderr.

Usage:  python scripts/fit_next_order.py [--points B,F,A] [--budget-min 15] [--write] [--render]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import resscale as rs  # noqa: E402
from resscale._storage import atomic_write_bytes, save_json_atomic, write_marked_section  # noqa: E402
from resscale.finite_width.next_order import _Coords  # noqa: E402
from validate_next_order import DOC, POINTS, Chain, estimates, make_net, resumable_chunks  # noqa: E402
import validate_full_next_order as VF  # noqa: E402

# the full-block points of scripts/validate_full_next_order.py (J..W), sampled by FullChain
FULL_POINTS = dict(VF.POINTS)
ALL_POINTS = {**POINTS, **FULL_POINTS}


class FullChain:
    """The full block's exact conditional-Gaussian sampler (``validate_finite_width.simulate_full``) behind
    the ``Chain.run`` interface: (x^L, y^L) in the kernel coordinates Khat_ab, a <= b, with the
    reference-particle control variate of the mean."""

    def __init__(self, net, K0, fw):
        self.net, self.K0 = net, K0
        self.theory = dict(Ks=fw.extras["Ks"], A=fw.extras["A"], G=fw.extras["G"])
        self.pairs = _Coords(K0.shape[0], with_mean=False).pairs

    def run(self, N, S, rng, cv=True):
        from validate_finite_width import simulate_full
        k, y = simulate_full(self.net, self.K0, N, S, int(rng.integers(2 ** 62)), self.theory)
        sel = lambda T: np.stack([T[:, a, b] for a, b in self.pairs], 1)                  # noqa: E731
        return sel(k), (sel(y) if cv else None)

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".cache", "fit_next_order")
MARK = "<!-- next-order-fit-issue-10 -->"
WIDTHS = (16, 24, 32, 48, 64, 128, 256, 512)
N_REF = 16.0          # the fit's regressor is t = N_REF / N (conditioning); coefficients rescaled


# ---------------------------------------------------------------------------------- fitting
def wls_fit(N, y, se, degree=2):
    """Weighted least squares y = sum_k c_k / N^k, k = 0..degree, weights 1/se^2.

    Returns (coef, cov, chi2, dof): coef[k] is the coefficient of 1/N^k, cov its covariance
    (X^T W X)^-1 (not rescaled by chi^2/dof), chi2 the weighted residual sum of squares."""
    N = np.asarray(N, dtype=float)
    y = np.asarray(y, dtype=float)
    se = np.asarray(se, dtype=float)
    if N.size <= degree:
        raise ValueError(f"need more than {degree} widths for a degree-{degree} fit, got {N.size}")
    X = np.vander(N_REF / N, degree + 1, increasing=True)
    Xw, yw = X / se[:, None], y / se
    Q, R = np.linalg.qr(Xw)
    c = np.linalg.solve(R, Q.T @ yw)
    Rinv = np.linalg.inv(R)
    cov = Rinv @ Rinv.T
    chi2 = float(np.sum((yw - Xw @ c) ** 2))
    scale = N_REF ** np.arange(degree + 1)
    return c * scale, cov * np.outer(scale, scale), chi2, int(N.size - degree - 1)


def chi2_sf(chi2, dof):
    from scipy.stats import chi2 as _chi2
    return float(_chi2.sf(chi2, dof)) if dof > 0 else float("nan")


# ---------------------------------------------------------------------------------- allocation
def _fit_var(widths, frac, cost, degree, k=1):
    X = np.vander(N_REF / np.asarray(widths, float), degree + 1, increasing=True)
    w = np.asarray(frac) / np.asarray(cost)
    return np.linalg.inv(X.T @ (X * w[:, None]))[k, k]


def allocate(widths, cost, floor=0.03, cubic_weight=0.2):
    """Fractions of the CPU budget per width minimising log Var(V1, quadratic fit)
    + cubic_weight log Var(V1, cubic fit), each fraction >= floor (per-network SE assumed
    independent of N, which holds for N Cov and N (E Khat - K) at these points)."""
    from scipy.optimize import minimize
    n = len(widths)

    def frac(p):
        e = np.exp(p - p.max())
        return floor + (1 - floor * n) * e / e.sum()

    def obj(p):
        f = frac(p)
        return np.log(_fit_var(widths, f, cost, 2)) + cubic_weight * np.log(_fit_var(widths, f, cost, 3))
    r = minimize(obj, np.zeros(n), method="Nelder-Mead", options=dict(maxiter=20000, xatol=1e-7, fatol=1e-12))
    r = minimize(obj, r.x, method="BFGS")
    return frac(r.x)


def chunk_size(N):
    return int(min(50000, 2 ** 21 // N))


def measure_cost(chain, widths, S=2000):
    """CPU seconds per network at each width (a + b N fitted to a pilot at the smallest and
    largest width)."""
    out = {}
    for N in (widths[0], widths[-1]):
        chain.run(N, 200, np.random.default_rng(99))           # warm-up
        t = time.process_time()
        chain.run(N, S, np.random.default_rng(98))
        out[N] = (time.process_time() - t) / S
    n0, n1 = widths[0], widths[-1]
    b = (out[n1] - out[n0]) / (n1 - n0)
    a = max(out[n0] - b * n0, 0.0)
    return np.array([a + b * N for N in widths])


# ---------------------------------------------------------------------------------- Monte-Carlo
def point_key(name):
    return name + "_" + hashlib.sha1(json.dumps(ALL_POINTS[name], sort_keys=True).encode()).hexdigest()[:8]


def run_width(name, chain, xmf, nk, N, n_chunks, seed=11):
    """Per-chunk estimates (C, Cse, Mest, Mse) of one (point, N), resumable."""
    key, chunk = point_key(name), chunk_size(N)

    def compute(c):
        t = time.process_time()
        x, y = chain.run(N, chunk, np.random.default_rng([seed, N, c]))
        C, Cse, Mest, Mse, Mse_plain = estimates(x, y, xmf, N, nk)
        return dict(C=C, Cse=Cse, M=Mest, Mse=Mse, Mse_plain=Mse_plain, S=np.array(chunk),
                    cpu=np.array(time.process_time() - t))
    return list(resumable_chunks(f"{name} N={N}, {chunk} nets",
                                 lambda c: os.path.join(CACHE, f"{key}_N{N}_c{c:04d}_{chunk}.npz"), n_chunks, compute))


def pool(res, nk):
    """Pooled y (6,), its SE, batch-means SE; z (nk,), SE; CPU seconds, networks."""
    iu = np.triu_indices(nk)
    C = np.array([d["C"][iu] for d in res])
    Cse = np.array([d["Cse"][iu] for d in res])
    M = np.array([d["M"] for d in res])
    Mse = np.array([d["Mse"] for d in res])
    k = len(res)
    y, yse = C.mean(0), np.sqrt((Cse ** 2).mean(0) / k)
    z, zse = M.mean(0), np.sqrt((Mse ** 2).mean(0) / k)
    ybm = C.std(0, ddof=1) / np.sqrt(k) if k > 1 else np.full_like(y, np.nan)
    zbm = M.std(0, ddof=1) / np.sqrt(k) if k > 1 else np.full_like(z, np.nan)
    return dict(y=y, yse=yse, ybm=ybm, z=z, zse=zse, zbm=zbm, cpu=float(sum(float(d["cpu"]) for d in res)),
                S=int(sum(int(d["S"]) for d in res)))


def fit_point(name, budget_s, widths=WIDTHS, seed=11):
    pt = ALL_POINTS[name]
    net, K0 = VF.make_net(pt) if name in FULL_POINTS else make_net(pt)
    P = K0.shape[0]
    fw = rs.finite_width(net, width=widths[0], K0=K0, order=2, method="exact")
    co = _Coords(P, with_mean=(net.block == "reduced"))
    xmf = co.x_of(fw.kernel, np.asarray(rs.mean_field_mean(net, K0=K0), dtype=float)
                  if net.block == "reduced" else None)
    pairs, nk = co.pairs, co.nk
    iu = np.triu_indices(nk)
    V = np.array([[fw.covariance[a, b, c, d] for (c, d) in pairs] for (a, b) in pairs])[iu]
    V1 = np.array([[fw.covariance_correction[a, b, c, d] for (c, d) in pairs] for (a, b) in pairs])[iu]
    M = np.array([fw.mean_shift[a, b] for (a, b) in pairs])
    M2 = np.array([fw.mean_shift2[a, b] for (a, b) in pairs])
    # full block: V1, M2 carry an integration SE (Sec. 4.12.5), combined into z; closed chains: exact
    tse = fw.extras.get("next_order_se")
    V1se = (np.array([[tse["V1"][a, b, c, d] for (c, d) in pairs] for (a, b) in pairs])[iu] if tse
            else np.zeros_like(V1))
    M2se = np.array([tse["M2"][a, b] for (a, b) in pairs]) if tse else np.zeros_like(M2)
    chain = FullChain(net, K0, fw) if net.block == "full" else Chain(net, K0)
    cpath = os.path.join(CACHE, f"{point_key(name)}_cost.json")
    if os.path.exists(cpath):
        cost = np.array(json.load(open(cpath))["cost"])
    else:
        cost = measure_cost(chain, widths)
        save_json_atomic(cpath, dict(cost=cost.tolist(), widths=list(widths)))
    frac = allocate(widths, cost)
    per_width = []
    for N, f, c in zip(widths, frac, cost):
        ch = chunk_size(N)
        n_chunks = max(2, int(round(f * budget_s / c / ch)))
        print(f"[{name}] N={N}: {n_chunks} x {ch} networks (budget fraction {f:.3f})", file=sys.stderr, flush=True)
        per_width.append(pool(run_width(name, chain, xmf, nk, N, n_chunks, seed), nk))
    Ns = np.array(widths, float)
    Y = np.array([p["y"] for p in per_width])
    Yse = np.array([p["yse"] for p in per_width])
    Z = np.array([p["z"] for p in per_width])
    Zse = np.array([p["zse"] for p in per_width])
    labels = [f"{pairs[i][0]}{pairs[i][1]},{pairs[j][0]}{pairs[j][1]}" for i, j in zip(*iu)]
    rows = []
    for e, lab in enumerate(labels):
        rows.append(_fit_row("cov", lab, Ns, Y[:, e], Yse[:, e], V[e], V1[e], V1se[e]))
    for e, (a, b) in enumerate(pairs):
        rows.append(_fit_row("mean", f"{a}{b}", Ns, Z[:, e], np.maximum(Zse[:, e], 1e-12), M[e], M2[e], M2se[e]))
    return dict(point=name, block=net.block, activation=net.phi.name, L=net.depth, alpha=net.alpha,
                sigma_w2=net.sigma_w2, sigma_b2=net.sigma_b2, widths=list(widths),
                S=[p["S"] for p in per_width], cpu=float(sum(p["cpu"] for p in per_width)),
                se_ratio_bm=float(np.median(np.concatenate([p["ybm"] / p["yse"] for p in per_width]))),
                y=Y.tolist(), yse=Yse.tolist(), z=Z.tolist(), zse=Zse.tolist(), labels=labels, fits=rows)


def _fit_row(kind, lab, Ns, y, se, T0, T1, T1se=0.0):
    """Quadratic and cubic WLS fits of one entry; z1 combines the fit's SE with the theory's (T1se)."""
    row = dict(kind=kind, entry=lab, theory0=float(T0), theory1=float(T1), theory1_se=float(T1se))
    for deg in (2, 3):
        c, cov, chi2, dof = wls_fit(Ns, y, se, deg)
        row[f"d{deg}"] = dict(c0=float(c[0]), c0se=float(np.sqrt(cov[0, 0])), c1=float(c[1]),
                              c1se=float(np.sqrt(cov[1, 1])), c2=float(c[2]), c2se=float(np.sqrt(cov[2, 2])),
                              chi2=chi2, dof=dof, p=chi2_sf(chi2, dof),
                              z0=float((c[0] - T0) / np.sqrt(cov[0, 0])),
                              z1=float((c[1] - T1) / np.sqrt(cov[1, 1] + T1se ** 2)))
    return row


# ---------------------------------------------------------------------------------- rendering
def render(results):
    total_cpu = sum(r["cpu"] for r in results)
    cov_z = [abs(f["d2"]["z1"]) for r in results for f in r["fits"] if f["kind"] == "cov"]
    mean_z = [abs(f["d2"]["z1"]) for r in results for f in r["fits"] if f["kind"] == "mean"]
    v_z = [abs(f["d2"]["z0"]) for r in results for f in r["fits"]]
    out = ["## Next order in 1/N: fit over N = 16..512 (issue 10)", "",
           "Generated by `scripts/fit_next_order.py` (rerun: `python scripts/fit_next_order.py --points "
           f"{','.join(r['point'] for r in results)} --write`; resumable cache .cache/fit_next_order/). "
           "Per width N in {" + ", ".join(map(str, results[0]["widths"])) + "} the exact closed-chain sampler "
           "(`validate_next_order.Chain`; full block: the conditional-Gaussian sampler `FullChain`, its mean with the "
           "reference-particle control variate) gives y(N) = N Cov(Khat^L_ab, Khat^L_cd) (unbiased sample covariance, "
           "delta-method SE) and z(N) = N (E Khat^L_ab - K^L_ab) (martingale control variate, Eq. 4.93), pooled "
           "over equal chunks. Weighted least squares in 1/N, weights 1/SE^2, every coefficient free: "
           "quadratic y = V + V1/N + V2/N^2, z = M + M2/N + M3/N^2 (columns 'quad'), and with one more "
           "1/N^3 term (columns 'cubic', the truncation check). SE from the WLS covariance (not rescaled by "
           "chi^2/dof); z = (fit - theory)/SE, theory = `rs.finite_width(net, width=N, K0=K0, order=2)` "
           "(V = covariance, V1 = covariance_correction, M = mean_shift, M2 = mean_shift2). Networks per width "
           "chosen to minimise the SE of the quadratic V1 for the CPU budget (most at N = 16, 24 and 256, a 3% floor elsewhere). "
           f"Verdict: over {len(cov_z)} covariance entries the quadratic-fit V1 is within "
           f"{max(cov_z):.1f} SE of the theory (median {np.median(cov_z):.1f}), over {len(mean_z)} mean entries "
           f"M2 within {max(mean_z):.1f} SE (median {np.median(mean_z):.1f}); the fitted V, M agree within "
           f"{max(v_z):.1f} SE. MC CPU {total_cpu / 60:.0f} min.", ""]
    for r in results:
        out += [f"**{r['point']}**: {r['block']} {r['activation']}, L = {r['L']}, alpha = {r['alpha']}, "
                f"sigma_w2 = {r['sigma_w2']}, sigma_b2 = {r['sigma_b2']}; networks per width "
                + ", ".join(f"{N}: {S}" for N, S in zip(r["widths"], r["S"]))
                + f"; CPU {r['cpu'] / 60:.1f} min; median batch-means SE / delta-method SE of y = "
                f"{r['se_ratio_bm']:.2f}.", "",
                "| quantity | entry | theory V (M) | fit quad | z | theory V1 (M2) | fit quad +- SE | z quad | "
                "chi2/dof quad (p) | 1/N^2 coef quad | fit cubic +- SE | z cubic | chi2/dof cubic |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        th_se = lambda f: f" +- {f['theory1_se']:.3f}" if f.get("theory1_se") else ""          # noqa: E731
        for f in r["fits"]:
            q, c = f["d2"], f["d3"]
            nm = ("N Cov", "V", "V1") if f["kind"] == "cov" else ("N (E K - K)", "M", "M2")
            out.append(f"| {nm[0]} | {f['entry']} | {f['theory0']:.4f} | {q['c0']:.4f} +- {q['c0se']:.4f} | "
                       f"{q['z0']:+.1f} | {f['theory1']:.3f}{th_se(f)} | {q['c1']:.3f} +- {q['c1se']:.3f} | {q['z1']:+.1f} | "
                       f"{q['chi2']:.1f}/{q['dof']} ({q['p']:.2f}) | {q['c2']:.0f} +- {q['c2se']:.0f} | "
                       f"{c['c1']:.3f} +- {c['c1se']:.3f} | {c['z1']:+.1f} | {c['chi2']:.1f}/{c['dof']} |")
        out.append("")
    return "\n".join(out)


def place_marker(doc=DOC, after="<!-- next-order-issue-10 --> end", mark=MARK):
    """First write: put the empty marked section right after the "Next order in 1/N" section
    (write_marked_section would append it at the end of the document)."""
    text = open(doc).read()
    if mark in text or after not in text:
        return
    head, _, tail = text.partition(after)
    tail = tail[1:] if tail.startswith("\n") else tail
    atomic_write_bytes(doc, (head + after + "\n\n" + mark + "\n" + mark + " end\n" + tail).encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", default="B,F")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--budget-min", type=float, default=15.0, help="MC CPU minutes per point")
    ap.add_argument("--write", action="store_true", help="write the docs/validation.md section")
    ap.add_argument("--render", action="store_true", help="only render the saved results (no MC)")
    ap.add_argument("--section", default="", help="write to a separate marked section with this suffix "
                    "(e.g. A: a point run on its own, placed after the main fit section)")
    args = ap.parse_args(argv)
    os.makedirs(CACHE, exist_ok=True)
    names = args.points.split(",")
    if args.render:
        results = [json.load(open(os.path.join(CACHE, f"result_{n}.json"))) for n in names]
    else:
        widths = tuple(int(w) for w in args.widths.split(","))
        results = []
        for n in names:
            r = fit_point(n, args.budget_min * 60.0, widths)
            save_json_atomic(os.path.join(CACHE, f"result_{n}.json"), r)
            results.append(r)
    text = render(results)
    print(text)
    if args.write:
        if args.section:
            mark = MARK.replace("-issue-10", f"-{args.section}-issue-10")
            place_marker(DOC, mark=mark, after=MARK + " end")
            write_marked_section(DOC, text.replace("## Next order in 1/N: fit over", "### Next order in 1/N: fit over", 1), mark)
        else:
            place_marker(DOC)
            write_marked_section(DOC, text, MARK)
    return results


if __name__ == "__main__":
    main()
