"""The universality map of alpha*: how the optimal scaling depends on sigma_w2 (issue 13; docs/theory.md Sec. 6.4).

Claim 4 of the paper says that alpha* depends only weakly on the weight variance. Whether
that is a finding depends on the parameterisation (SPEC): with sigma_b2 = 0 and a fixed
input variance the full block depends on alpha and sigma_w2 only through alpha^2 sigma_w2
(K' = K + alpha^2 sigma_w2 G(K)), so alpha* ~ sigma_w2^{-1/2} is an *identity*. The map
therefore scans, for every block,

* ``convention="fixed"``:  the input layer has its own variance, q0 = sigma_in2 |x|^2/d = 1;
* ``convention="shared"``: the input layer shares the weight variance, q0 = sigma_w2
  (sigma_in2 = sigma_w2, the common convention of theory papers);
* sigma_b2 = 0 and sigma_b2 > 0,

and summarises each curve alpha*(sigma_w2) by its log-log slope (global least squares and
local, between neighbouring grid points) and the widest range of sigma_w2 over which
alpha* stays within 10% and 30% (max/min <= 1.1, 1.3; at the resolution of the grid).

Pure functions on rows (dicts); the computation of each point is
:func:`resscale.optimal_alpha` (numerical argmax and its analytic alpha*). The report
(:mod:`resscale.report`, figure 8) runs the points through its resumable task runner.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["CONVENTIONS", "map_points", "compute_point", "summarise", "classify", "table_markdown",
           "variants_markdown", "plot_map"]

CONVENTIONS = ("fixed", "shared")
_LABEL = {"fixed": "sigma_in2 = 1", "shared": "sigma_in2 = sigma_w2"}


def q0_of(convention, sigma_w2, x_norm2=1.0):
    """q0 = sigma_in2 |x|^2 / d for the input-layer convention (sigma_bin2 = 0)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return float(x_norm2) * (float(sigma_w2) if convention == "shared" else 1.0)


def map_points(blocks, conventions, sigma_b2s, sigma_w2s, depth, activation, c0):
    """The grid of the map as plain dicts (one per optimal_alpha call)."""
    pts = []
    for b in blocks:
        for conv in conventions:
            for sb2 in sigma_b2s:
                for sw2 in sigma_w2s:
                    pts.append(dict(block=b, convention=conv, sigma_b2=float(sb2), sigma_w2=float(sw2),
                                    depth=int(depth), activation=str(activation), c0=float(c0),
                                    q0=q0_of(conv, sw2)))
    return pts


def compute_point(p, n_grid=200):
    """alpha* (numerical and analytic) at one point of :func:`map_points`."""
    import warnings

    from .network import ResNet
    from .optimal_alpha import optimal_alpha

    net = ResNet(depth=p["depth"], alpha=0.1, sigma_w2=p["sigma_w2"], sigma_b2=p["sigma_b2"],
                 activation=p["activation"], block=p["block"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = optimal_alpha(net, p["c0"], p["q0"], n_grid=n_grid)
    return dict(p, alpha=float(r.alpha), alpha_analytic=float(r.alpha_analytic), interior=bool(r.interior),
                S=float(r.sensitivity))


def _widest_flat_range(sw, a, tol):
    """(lo, hi): the widest interval of grid values of sigma_w2 (widest in log sigma_w2) over which
    alpha* stays within a factor 1 + tol, max/min <= 1 + tol (grid resolution; NaN breaks it)."""
    best, n = (float(sw[0]), float(sw[0])), len(a)
    la = np.log(a)
    for i in range(n):
        if not np.isfinite(la[i]):
            continue
        lo_v = hi_v = la[i]
        for j in range(i, n):
            if not np.isfinite(la[j]):
                break
            lo_v, hi_v = min(lo_v, la[j]), max(hi_v, la[j])
            if hi_v - lo_v > math.log1p(tol):
                break
            if math.log(sw[j] / sw[i]) > math.log(best[1] / best[0]):
                best = (float(sw[i]), float(sw[j]))
    return best


def summarise(rows):
    """Per (block, convention, sigma_b2): slopes and the 10% / 30% ranges of alpha*(sigma_w2)."""
    out = {}
    keys = sorted({(r["block"], r["convention"], r["sigma_b2"]) for r in rows})
    for key in keys:
        rr = sorted((r for r in rows if (r["block"], r["convention"], r["sigma_b2"]) == key),
                    key=lambda r: r["sigma_w2"])
        sw = np.array([r["sigma_w2"] for r in rr])
        a = np.array([r["alpha"] if r["interior"] else math.nan for r in rr])
        an = np.array([r["alpha_analytic"] for r in rr])
        ok = np.isfinite(a)
        s = dict(block=key[0], convention=key[1], sigma_b2=key[2], sigma_w2=sw.tolist(), alpha=a.tolist(),
                 alpha_analytic=an.tolist(), n_interior=int(ok.sum()))
        if ok.sum() >= 2:
            slope = float(np.polyfit(np.log(sw[ok]), np.log(a[ok]), 1)[0])
            loc = np.diff(np.log(a)) / np.diff(np.log(sw))
            s.update(slope=slope, local_slopes=loc.tolist(),
                     max_abs_local_slope=float(np.nanmax(np.abs(loc))) if np.isfinite(loc).any() else math.nan,
                     ratio_max_min=float(np.nanmax(a) / np.nanmin(a)))
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.abs(an / a - 1)
            s["analytic_max_rel_err"] = float(np.nanmax(rel)) if np.isfinite(rel).any() else math.nan
            s["range10"] = _widest_flat_range(sw, a, 0.10)
            s["range30"] = _widest_flat_range(sw, a, 0.30)
        s["verdict"] = classify(s)
        out[key] = s
    return out


def classify(s):
    """'identity' | 'weak' | 'moderate' | 'strong' | 'no optimum' for one summarised curve.

    identity: full block, sigma_b2 = 0, fixed input variance (alpha* sigma_w = const exactly).
    Otherwise by the widest 30% range: weak when alpha* stays within 30% over at least a factor
    16 of sigma_w2 (1.2 decades), strong when only over less than a factor 4, moderate between."""
    if s.get("n_interior", 0) < 2 or "range30" not in s:
        return "no optimum"
    if s["block"] == "full" and s["sigma_b2"] == 0.0 and s["convention"] == "fixed":
        return "identity"
    lo, hi = s["range30"]
    span = hi / lo
    return "weak" if span >= 16 else "strong" if span < 4 else "moderate"


def _fmt(x, nd=3):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}g}"


def table_markdown(summary):
    """One row per curve: slope, local slopes range, 10%/30% ranges, analytic error, verdict."""
    lines = ["| block | input variance | sigma_b2 | alpha*(sw2=1) | slope | local slopes | within 10% | "
             "within 30% | analytic err | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary.values():
        sw, a = np.array(s["sigma_w2"]), np.array(s["alpha"])
        i1 = int(np.argmin(np.abs(np.log(sw))))
        loc = s.get("local_slopes")
        locs = "-" if loc is None else f"{_fmt(np.nanmin(loc), 2)} .. {_fmt(np.nanmax(loc), 2)}"
        r10 = s.get("range10")
        r30 = s.get("range30")
        rng = lambda r: "-" if r is None else f"[{_fmt(r[0], 2)}, {_fmt(r[1], 2)}]"  # noqa: E731
        err = s.get("analytic_max_rel_err")
        lines.append(f"| {s['block']} | {_LABEL[s['convention']]} | {_fmt(s['sigma_b2'])} | {_fmt(a[i1])} | "
                     f"{_fmt(s.get('slope'), 3)} | {locs} | {rng(r10)} | {rng(r30)} | "
                     f"{'-' if err is None else _fmt(100 * err, 2) + '%'} | {s['verdict']} |")
    return "\n".join(lines)


def plot_map(summary, path_png, title=""):
    """One panel per block: alpha* vs sigma_w2 per parameterisation (lines: numerical, x: analytic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(dict.fromkeys(s["block"] for s in summary.values()))
    fig, axs = plt.subplots(1, len(blocks), figsize=(4.3 * len(blocks), 3.8), sharey=True, squeeze=False)
    for ax, b in zip(axs[0], blocks):
        for j, s in enumerate(v for v in summary.values() if v["block"] == b):
            lab = f"{_LABEL[s['convention']]}, sb2={_fmt(s['sigma_b2'])}: {s['verdict']}"
            ls = "-" if s["convention"] == "shared" else "--"
            ax.loglog(s["sigma_w2"], s["alpha"], "o" + ls, color=f"C{j}", ms=4, label=lab)
            ax.loglog(s["sigma_w2"], s["alpha_analytic"], "x", color=f"C{j}", ms=6)
        ax.set_title(f"{b} block", fontsize=9)
        ax.set_xlabel("sigma_w2")
        ax.legend(fontsize=6)
    axs[0][0].set_ylabel("alpha*  (o numerical, x analytic)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path_png)
    plt.close(fig)
    return path_png


def variants_markdown(main, variants):
    """Verdict (and 30% range) of each curve of the main map and under each variant."""
    labels = list(variants)
    lines = ["| block | input variance | sigma_b2 | main | " + " | ".join(labels) + " |",
             "|---|---|---|---|" + "---|" * len(labels)]

    def cell(s):
        if s is None:
            return "-"
        r = s.get("range30")
        return s["verdict"] + ("" if r is None else f" [{_fmt(r[0], 2)}, {_fmt(r[1], 2)}]")

    for key, s in main.items():
        lines.append(f"| {key[0]} | {_LABEL[key[1]]} | {_fmt(key[2])} | {cell(s)} | "
                     + " | ".join(cell(variants[lab].get(key)) for lab in labels) + " |")
    return "\n".join(lines)
