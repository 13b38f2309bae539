"""Figure 5 (claim 4): alpha* vs sigma_w2 (full and reduced block), vs activation and vs c0, at one depth.

Checks the weak-dependence claim against the sigma_w2 scaling (6.5) of docs/theory.md Sec. 6.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import BAND, ReportConfig
from .output import FigureResult, _f, _save, write_table
from .stats import loglog_slope
from .tasks import TaskRunner, _netp


def _opt_spec(cfg, L, sw2, act, block, c0):
    p = _netp(L, 0.1, sw2, 0.0, act, block)
    if act in ("erf", "tanh", "linear"):
        return dict(kind="optimal", net=p, c0=c0, q0=cfg.q0)
    note = ("analytic expression not computed for the quadrature activation gelu (its continuum flow is "
            "too slow to integrate here)" if act == "gelu" else
            "no continuum maximum (see docs/theory.md Sec. 6)")
    lo, hi = (1e-3, 3.0) if act == "gelu" else (1e-4, 1e2)
    n = cfg.f5_grid if act == "gelu" else 200
    return dict(kind="scan", net=p, c0=c0, q0=cfg.q0, lo=lo, hi=hi, n=n, analytic_note=note)


def figure5_universality(cfg: ReportConfig, runner: TaskRunner, out: Path) -> FigureResult:
    """alpha* vs sigma_w2 (both blocks), vs activation (both blocks), vs c0, at depth f5_depth."""
    import matplotlib.pyplot as plt

    L = cfg.f5_depth
    blocks = ("full", "reduced")
    sw_specs = [_opt_spec(cfg, L, sw, cfg.activation, b, cfg.c0) for b in blocks for sw in cfg.f5_sigma_w2s]
    act_specs = [_opt_spec(cfg, L, 1.0, a, b, cfg.c0) for b in blocks for a in cfg.f5_activations]
    c_specs = [_opt_spec(cfg, L, 1.0, cfg.activation, b, c) for b in blocks for c in cfg.f5_c0s]
    res = runner.run(sw_specs + act_specs + c_specs, "fig5 universality",
                     weights=[20 if s["net"]["activation"] == "gelu" else 1 for s in sw_specs + act_specs + c_specs])
    nsw, nact = len(sw_specs), len(act_specs)
    r_sw, r_act, r_c = res[:nsw], res[nsw:nsw + nact], res[nsw + nact:]
    rows, summ = [], {"depth": L, "sigma_w2": {}, "activation": {}, "c0": {}}
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.8))
    sws = np.array(cfg.f5_sigma_w2s)
    for j, b in enumerate(blocks):
        rr = r_sw[j * len(sws):(j + 1) * len(sws)]
        a = np.array([r["alpha"] for r in rr]); an = np.array([r["alpha_analytic"] for r in rr])
        slope = loglog_slope(sws, a)
        # local slopes at the two ends of the range
        s_lo = loglog_slope(sws[:2], a[:2]); s_hi = loglog_slope(sws[-2:], a[-2:])
        for sw, r in zip(sws, rr):
            rows.append(dict(panel="sigma_w2", block=b, activation=cfg.activation, sigma_w2=sw, c0=cfg.c0,
                             alpha_star=r["alpha"], alpha_analytic=r["alpha_analytic"], interior=r["interior"]))
        summ["sigma_w2"][b] = dict(slope=slope, slope_low=s_lo, slope_high=s_hi,
                                   ratio_max_min=float(np.nanmax(a) / np.nanmin(a)),
                                   alpha_min=float(np.nanmin(a)), alpha_max=float(np.nanmax(a)),
                                   values=dict(zip([str(s) for s in sws], a)))
        axs[0].loglog(sws, a, "o-", color=f"C{j}", label=f"{b} block: slope {slope:.3f}")
        axs[0].loglog(sws, an, "x", color=f"C{j}", ms=6)
    axs[0].loglog(sws, r_sw[list(sws).index(1.0)]["alpha"] / np.sqrt(sws) if 1.0 in list(sws) else
                  r_sw[0]["alpha"] * np.sqrt(sws[0] / sws), "k:", label="∝ 1/sigma_w")
    axs[0].set_xlabel("sigma_w2"); axs[0].set_ylabel(f"alpha* (L={L})")
    axs[0].axhspan(*BAND, color="0.9", zorder=0)
    axs[0].legend(fontsize=7); axs[0].set_title("vs weight variance (x: analytic)", fontsize=8)
    acts = list(cfg.f5_activations)
    xs = np.arange(len(acts))
    for j, b in enumerate(blocks):
        rr = r_act[j * len(acts):(j + 1) * len(acts)]
        vals = {}
        for act, r in zip(acts, rr):
            rows.append(dict(panel="activation", block=b, activation=act, sigma_w2=1.0, c0=cfg.c0,
                             alpha_star=r["alpha"], alpha_analytic=r["alpha_analytic"], interior=r["interior"],
                             S_max=r["S"], note=r["message"] if not r["interior"] else ""))
            vals[act] = dict(alpha=r["alpha"], interior=r["interior"], S=r["S"], message=r["message"],
                             alpha_analytic=r["alpha_analytic"])
        a = np.array([v["alpha"] for v in vals.values()])
        fin = a[np.isfinite(a)]
        summ["activation"][b] = dict(values=vals,
                                     ratio_max_min=float(fin.max() / fin.min()) if fin.size else math.nan,
                                     no_interior=[k for k, v in vals.items() if not v["interior"]])
        axs[1].plot(xs + (j - 0.5) * 0.15, a, "o", color=f"C{j}", ms=7, label=f"{b} block")
        for x, v in zip(xs, vals.values()):
            if not v["interior"]:
                axs[1].annotate("no interior max", (x + (j - 0.5) * 0.15, BAND[1]), rotation=90, fontsize=6,
                                color=f"C{j}", ha="center", va="bottom")
    axs[1].set_xticks(xs, acts); axs[1].set_ylabel(f"alpha* (L={L})"); axs[1].set_ylim(0, None)
    axs[1].axhspan(*BAND, color="0.9", zorder=0)
    axs[1].legend(fontsize=7); axs[1].set_title("vs activation (sigma_w2=1)", fontsize=8)
    c0s = np.array(cfg.f5_c0s)
    for j, b in enumerate(blocks):
        rr = r_c[j * len(c0s):(j + 1) * len(c0s)]
        a = np.array([r["alpha"] for r in rr])
        for c, r in zip(c0s, rr):
            rows.append(dict(panel="c0", block=b, activation=cfg.activation, sigma_w2=1.0, c0=c,
                             alpha_star=r["alpha"], alpha_analytic=r["alpha_analytic"], interior=r["interior"],
                             note=r["message"] if not r["interior"] else ""))
        fin = a[np.isfinite(a)]
        okc = np.isfinite(a) & (c0s < 1)
        summ["c0"][b] = dict(values=dict(zip([str(c) for c in c0s], a)),
                             interior_range=[float(c0s[okc].min()), float(c0s[okc].max())] if okc.any() else None,
                             slope_vs_1mc=loglog_slope(1 - c0s[okc], a[okc]),
                             ratio_max_min=float(fin.max() / fin.min()) if fin.size else math.nan,
                             no_interior=[float(c) for c, r in zip(c0s, rr) if not r["interior"]],
                             edges={str(c): ("smallest" if "smallest" in r["message"] else "largest"
                                             if "largest" in r["message"] else "flat")
                                    for c, r in zip(c0s, rr) if not r["interior"]})
        axs[2].plot(c0s, a, "o-", color=f"C{j}", label=f"{b} block", ms=5 - j)
    axs[2].set_xlabel("input correlation c0"); axs[2].set_ylabel(f"alpha* (L={L})")
    axs[2].axhspan(*BAND, color="0.9", zorder=0)
    axs[2].legend(fontsize=7); axs[2].set_title(f"vs c0 ({cfg.activation}, sigma_w2=1)", fontsize=8)
    fig.suptitle(f"Fig. 5: universality of alpha* (L={L}, sigma_b2=0; grey: band [0.1, 0.3])", fontsize=9)
    files = _save(fig, out, "fig5_universality", cfg)
    write_table(rows, out / "fig5_universality.csv")
    files.append("fig5_universality.csv")
    sw, ac, cc = summ["sigma_w2"], summ["activation"], summ["c0"]
    act_txt = []
    for b in blocks:
        v = ac[b]["values"]
        act_txt.append(f"{b} block: " + ", ".join(
            f"{k} {_f(x['alpha'])} (S_max={_f(x['S'], 4)})" if x["interior"] else
            f"{k} none ({x['message'].split(': ', 1)[-1]})" for k, x in v.items()))
    c_txt = []
    for b in blocks:
        v = cc[b]["values"]
        c_txt.append(f"{b}: " + ", ".join(
            f"c0={k}: {_f(x)}" if x is not None and math.isfinite(x) else
            f"c0={k}: none (S largest at the {cc[b]['edges'].get(k, '?')} alpha)" for k, x in v.items()))
    text = (f"At L={L}: over sigma_w2 in [{_f(min(sws))}, {_f(max(sws))}] log alpha* vs log sigma_w2 has slope "
            f"{_f(sw['full']['slope'], 4)} in the full block (alpha* ∝ sigma_w2^{_f(sw['full']['slope'], 3)}; "
            f"-0.5 would be alpha* ∝ 1/sigma_w, a factor {_f(sw['full']['ratio_max_min'])} over the range) and "
            f"{_f(sw['reduced']['slope'], 4)} in the reduced block (local slope {_f(sw['reduced']['slope_low'], 3)} "
            f"at small and {_f(sw['reduced']['slope_high'], 3)} at large sigma_w2; factor "
            f"{_f(sw['reduced']['ratio_max_min'])}). Activations (sigma_w2=1): " + "; ".join(act_txt) +
            f" (ratio max/min among interior maxima: full {_f(ac['full']['ratio_max_min'])}, reduced "
            f"{_f(ac['reduced']['ratio_max_min'])}). Input correlation: " + "; ".join(c_txt) +
            f" (ratio max/min {_f(cc['full']['ratio_max_min'])} full, {_f(cc['reduced']['ratio_max_min'])} reduced"
            + (f"; no interior maximum at c0 = {cc['full']['no_interior']}" if cc['full']['no_interior'] else "")
            + ").")
    return FigureResult("fig5", "Universality of alpha*", rows, summ, files, text)


def _strength(slope) -> str:
    """Words for a log-log slope of alpha* vs sigma_w2 (0: independent, -0.5: alpha* ∝ 1/sigma_w)."""
    if slope is None or not math.isfinite(slope):
        return "undetermined"
    a = abs(slope)
    return ("NOT weak" if a >= 0.35 else "moderate" if a >= 0.15 else "weak" if a >= 0.05 else "very weak")


def verdict_hyperparameters(summary: dict, cfg: ReportConfig) -> str:
    """Claim 4, the figure-5 part: how strongly alpha* depends on sigma_w2, the activation and c0."""
    sw = summary["sigma_w2"]
    ac = summary["activation"]
    cc = summary["c0"]
    nofull = ac["full"]["no_interior"]
    return (f"Dependence on sigma_w2 in the full block: {_strength(sw['full']['slope'])} "
            f"(slope of log alpha* vs log sigma_w2 = {_f(sw['full']['slope'], 4)}; -0.5 means alpha* ∝ "
            f"1/sigma_w; a factor {_f(sw['full']['ratio_max_min'])} over sigma_w2 in "
            f"[{_f(min(cfg.f5_sigma_w2s))}, {_f(max(cfg.f5_sigma_w2s))}]); in the reduced block: "
            f"{_strength(sw['reduced']['slope'])} (slope "
            f"{_f(sw['reduced']['slope'], 4)}, local {_f(sw['reduced']['slope_low'], 3)} to "
            f"{_f(sw['reduced']['slope_high'], 3)}; factor {_f(sw['reduced']['ratio_max_min'])}). Across "
            f"activations with an interior maximum alpha* varies by a factor "
            f"{_f(ac['full']['ratio_max_min'])} (full block)"
            + (f"; {', '.join(nofull)} ha{'s' if len(nofull) == 1 else 've'} no interior maximum in the "
               f"full block" if nofull else "")
            + (f" and {', '.join(ac['reduced']['no_interior'])} none in the reduced block"
               if ac['reduced']['no_interior'] else "")
            + " (full-block S_max: " + ", ".join(f"{k} {_f(x['S'], 4)}" for k, x in ac['full']['values'].items()
                                      if x['interior']) + ")"
            + f"; across c0 by a factor {_f(cc['full']['ratio_max_min'])} between c0 = "
            f"{cc['full']['interior_range']} (log-log slope of alpha* vs 1 - c0: "
            f"{_f(cc['full']['slope_vs_1mc'], 3)})"
            + (f" (no interior maximum at c0 = {cc['full']['no_interior']})" if cc['full']['no_interior'] else "")
            + ".")
