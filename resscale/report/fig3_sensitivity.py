"""Figure 3 (claims 2, 3): S(alpha) for several depths, alpha*, the band [0.1, 0.3] and 1/sqrt(L).

Checks the mean-field sensitivity and its numerical argmax, docs/theory.md Secs. 5 and 6, against simulated S.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import BAND, ReportConfig
from .output import FigureResult, _f, _save, write_table
from .tasks import TaskRunner, _net, _netp, _sim_seed


def figure3_sensitivity_curves(cfg: ReportConfig, runner: TaskRunner, out: Path) -> FigureResult:
    """S(alpha) for several depths with alpha*, the band [0.1, 0.3], 1/sqrt(L); simulated S at one depth."""
    import matplotlib.pyplot as plt

    from ..sensitivity import sensitivity

    alphas = np.logspace(-3, 1.5, cfg.f3_n_alpha)
    depths = sorted(set(cfg.f3_depths) | {cfg.f3_sim_depth})
    opts = runner.run([dict(kind="optimal", net=_netp(L, 0.1, 1.0, 0.0, cfg.activation, "full"),
                            c0=cfg.c0, q0=cfg.q0) for L in depths], "fig3 optimal alpha")
    opt = dict(zip(depths, opts))
    a_sim_star = opt[cfg.f3_sim_depth]["alpha"]
    if not math.isfinite(a_sim_star):
        a_sim_star = 1.0 / math.sqrt(cfg.f3_sim_depth)
    sim_alphas = [float(a_sim_star * f) for f in cfg.f3_sim_factors]
    specs = [dict(kind="sim_sens", net=_netp(cfg.f3_sim_depth, a, 1.0, 0.0, cfg.activation, "full"),
                  width=cfg.f3_sim_width, networks=cfg.f3_sim_networks, c0=cfg.c0, q0=cfg.q0,
                  seed=_sim_seed(cfg, "f3", i)) for i, a in enumerate(sim_alphas)]
    sims = runner.run(specs, "fig3 simulations", weights=[cfg.f3_sim_networks] * len(specs))
    rows, per_L = [], []
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.axvspan(*BAND, color="0.88", zorder=0, label=f"empirical band [{BAND[0]}, {BAND[1]}]")
    for i, L in enumerate(cfg.f3_depths):
        net = _net(_netp(L, 0.1, 1.0, 0.0, cfg.activation, "full"))
        with np.errstate(all="ignore"):
            S = np.asarray(sensitivity(net, cfg.c0, cfg.q0, alphas=alphas), float)
        o = opt[L]
        col = f"C{i}"
        ax.semilogx(alphas, S, color=col, lw=1.4, label=f"L={L}")
        if o["interior"]:
            ax.plot([o["alpha"]], [o["S"]], "v", color=col, ms=7)
        ax.axvline(1 / math.sqrt(L), color=col, ls=":", lw=0.9)
        for a, s in zip(alphas, S):
            rows.append(dict(kind="theory", depth=L, alpha=a, S=s, S_se=None))
        smax = o["S"]
        band_S = np.asarray(sensitivity(net, cfg.c0, cfg.q0, alphas=np.array(BAND + (1 / math.sqrt(L),))), float)
        near = alphas[S >= 0.95 * smax] if math.isfinite(smax) else np.array([])
        per_L.append(dict(depth=L, alpha_star=o["alpha"], S_max=smax, alpha_analytic=o["alpha_analytic"],
                          inv_sqrt_L=1 / math.sqrt(L),
                          alpha_star_times_sqrt_L=o["alpha"] * math.sqrt(L),
                          position=("inside" if BAND[0] <= o["alpha"] <= BAND[1] else
                                    "above" if o["alpha"] > BAND[1] else "below"),
                          S_at_band_lo=float(band_S[0]), S_at_band_hi=float(band_S[1]),
                          S_at_inv_sqrt_L=float(band_S[2]),
                          band_frac_of_max=float(max(band_S[0], band_S[1]) / smax),
                          inv_sqrt_L_frac_of_max=float(band_S[2] / smax),
                          near95_lo=float(near.min()) if near.size else math.nan,
                          near95_hi=float(near.max()) if near.size else math.nan))
    sS = np.array([r["S"] for r in sims]); sE = np.array([r["se"] for r in sims])
    netS = _net(_netp(cfg.f3_sim_depth, 0.1, 1.0, 0.0, cfg.activation, "full"))
    thS = np.asarray(sensitivity(netS, cfg.c0, cfg.q0, alphas=np.array(sim_alphas)), float)
    for a, s, e, t in zip(sim_alphas, sS, sE, thS):
        rows.append(dict(kind="simulation", depth=cfg.f3_sim_depth, alpha=a, S=s, S_se=e, S_theory=t,
                         width=cfg.f3_sim_width))
    ax.errorbar(sim_alphas, sS, yerr=sE, fmt="ko", ms=4, capsize=2,
                label=f"simulation L={cfg.f3_sim_depth}, N={cfg.f3_sim_width}")
    ax.plot([], [], "kv", label="alpha* (numerical argmax)")
    ax.plot([], [], "k:", label="1/sqrt(L)")
    ax.set_xlabel("residual scaling alpha"); ax.set_ylabel("sensitivity S = dc^L/dc^0")
    ax.set_ylim(0, max(r["S_max"] for r in per_L if math.isfinite(r["S_max"])) * 1.15)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"Fig. 3: S(alpha), {cfg.activation} full block, sigma_w2=1, c0={cfg.c0:g}", fontsize=9)
    files = _save(fig, out, "fig3_sensitivity", cfg)
    write_table(rows, out / "fig3_sensitivity.csv")
    files.append("fig3_sensitivity.csv")
    z = (sS - thS) / sE
    summ = dict(per_depth=per_L, sim=dict(depth=cfg.f3_sim_depth, width=cfg.f3_sim_width,
                                          networks=cfg.f3_sim_networks, alphas=sim_alphas, S=sS, se=sE,
                                          theory=thS, z=z))
    inside = [r["depth"] for r in per_L if r["position"] == "inside"]
    desc = "; ".join(f"L={r['depth']}: alpha*={_f(r['alpha_star'])} ({r['position']} the band; "
                     f"1/sqrt(L)={_f(r['inv_sqrt_L'])} reaches {_f(100 * r['inv_sqrt_L_frac_of_max'], 3)}% of S_max)"
                     for r in per_L)
    text = (f"S(alpha) for L in {list(cfg.f3_depths)}; triangles mark alpha*, the grey band is [0.1, 0.3], dotted "
            f"lines 1/sqrt(L). {desc}. The band contains alpha* for L in {inside if inside else 'none of these depths'}. "
            f"alpha* sqrt(L) = {_f(per_L[-1]['alpha_star_times_sqrt_L'])} at L={per_L[-1]['depth']}, i.e. "
            f"alpha* is about {_f(per_L[-1]['alpha_star_times_sqrt_L'])}/sqrt(L) here. Simulated S at L={cfg.f3_sim_depth} "
            f"(N={cfg.f3_sim_width}, {cfg.f3_sim_networks} nets): deviations from mean field "
            f"{', '.join(_f(x, 2) for x in z)} SE.")
    return FigureResult("fig3", "Sensitivity S(alpha) vs depth", rows, summ, files, text)


def verdict_simulation(summary: dict) -> str:
    """Claim 2, the figure-3 part: simulated S(alpha) vs the exact mean-field response."""
    z = np.abs(np.asarray(summary["sim"]["z"], float))
    return (f"simulated sensitivities at L={summary['sim']['depth']}, N={summary['sim']['width']} "
            f"within {_f(float(z.max()), 2)} SE (fig. 3)")


def verdict_band(summary: dict, law: str) -> str:
    """Claim 3: where alpha* lies relative to the band and to 1/sqrt(L); ``law`` is the depth law (fig. 4)."""
    pl = summary["per_depth"]
    inside = [r["depth"] for r in pl if r["position"] == "inside"]
    desc = ", ".join(f"L={r['depth']}: alpha*={_f(r['alpha_star'])} ({r['position']})" for r in pl)
    near = ", ".join(f"L={r['depth']}: [{_f(r['near95_lo'])}, {_f(r['near95_hi'])}]" for r in pl)
    bandf = ", ".join(f"L={r['depth']}: {_f(100 * r['band_frac_of_max'], 3)}%" for r in pl)
    sq = ", ".join(f"{_f(100 * r['inv_sqrt_L_frac_of_max'], 3)}%" for r in pl)
    c = pl[-1]["alpha_star_times_sqrt_L"]
    ref = pl[[r["depth"] for r in pl].index(100)] if 100 in [r["depth"] for r in pl] else pl[-1]
    return (f"at L={ref['depth']} alpha*={_f(ref['alpha_star'])} lies "
            f"{ref['position']} the band [0.1, 0.3]; {desc}; the band contains alpha* for L in "
            f"{inside if inside else 'none of the depths tested'}. The alphas with S >= 95% of S_max are "
            f"{near}; the better end of the band reaches {bandf} of S_max. Scaling: {law}, "
            f"with prefactor alpha* sqrt(L) = {_f(c)}, so alpha = 1/sqrt(L) reaches "
            f"only {sq} of S_max at these depths.")
