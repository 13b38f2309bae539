"""Figure 2 (claim 2): the response dc^L/dc^k vs layer distance; power law (ResNet) vs exponential (feed-forward).

Checks the exact response function, docs/theory.md Sec. 7 (and the sensitivity of Sec. 5) against simulation.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import ReportConfig
from .output import FigureResult, _f, _save, write_table
from .stats import fit_power_exp
from .tasks import TaskRunner, _net, _netp, _sim_seed


def _sens_mf(p, c0, q0):
    from ..sensitivity import sensitivity

    net = _net(p)
    return float(sensitivity(net, c0, q0, alphas=np.array([net.alpha]))[0])


def figure2_response_distance(cfg: ReportConfig, runner: TaskRunner, out: Path) -> FigureResult:
    """chi = d c^L / d c^k vs distance D = L - k for ResNet and feed-forward, with fitted forms.

    The recursion is homogeneous in depth, so chi^{L,k} is the sensitivity of a depth-D
    network started from K^k; here K^k = q0 [[1, c0], [c0, 1]] (k = 0).
    """
    import matplotlib.pyplot as plt

    Ds = np.unique(np.round(np.logspace(0, math.log10(cfg.f2_max_distance), 40)).astype(int))
    models = {"resnet": lambda D: _netp(D, cfg.f2_alpha, 1.0, 0.0, cfg.activation, "full"),
              "feedforward": lambda D: _netp(D, 1.0, cfg.f1_ff_sigma_w2, 0.0, cfg.activation, "feedforward")}
    rows, summ = [], {}
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    specs, where = [], []
    for m, mk in models.items():
        for D in cfg.f2_sim_distances:
            specs.append(dict(kind="sim_sens", net=mk(D), width=cfg.f2_width, networks=cfg.f2_networks,
                              c0=cfg.c0, q0=cfg.q0, seed=_sim_seed(cfg, "f2", m, D)))
            where.append((m, D))
    sims = runner.run(specs, "fig2 simulations", weights=[s["net"]["depth"] * s["networks"] for s in specs])
    for j, (m, mk) in enumerate(models.items()):
        chi = np.array([_sens_mf(mk(int(D)), cfg.c0, cfg.q0) for D in Ds])
        # fit the tail: beyond 3x the distance of the maximum (the initial rise is not the asymptotic form)
        dpk = Ds[int(np.argmax(chi))]
        tail = Ds >= max(3 * dpk, 3)
        fit = fit_power_exp(Ds[tail], chi[tail])
        sim_pts = [(D, r["S"], r["se"]) for (mm, D), r in zip(where, sims) if mm == m]
        sD = np.array([d for d, _, _ in sim_pts]); sS = np.array([s for _, s, _ in sim_pts])
        sE = np.array([e for _, _, e in sim_pts])
        chi_at = np.array([_sens_mf(mk(int(D)), cfg.c0, cfg.q0) for D in sD])
        z = (sS - chi_at) / np.maximum(sE, 1e-300)
        for D, cval in zip(Ds, chi):
            rows.append(dict(model=m, distance=int(D), chi_theory=cval, chi_sim=None, chi_se=None))
        for D, s, e, ct in zip(sD, sS, sE, chi_at):
            rows.append(dict(model=m, distance=int(D), chi_theory=ct, chi_sim=s, chi_se=e))
        summ[m] = dict(fit=fit, peak_distance=int(dpk), peak_chi=float(chi.max()),
                       chi_at_max_distance=float(chi[-1]), max_distance=int(Ds[-1]),
                       sim=[dict(distance=int(d), S=float(s), se=float(e), theory=float(t))
                            for d, s, e, t in zip(sD, sS, sE, chi_at)],
                       sim_max_abs_z=float(np.max(np.abs(z))) if z.size else math.nan)
        col = f"C{j}"
        lab = (f"ResNet alpha={cfg.f2_alpha:g}" if m == "resnet" else
               f"feed-forward sigma_w2={cfg.f1_ff_sigma_w2:g}")
        for ax in axs:
            ax.plot(Ds, chi, color=col, lw=1.5, label=f"{lab} (mean field)")
            pos = sS > 0
            ax.errorbar(sD[pos], sS[pos], yerr=sE[pos], fmt="o", ms=3, color=col, capsize=2,
                        label=f"simulation N={cfg.f2_width}")
            if fit["n"] >= 3:
                xx = Ds[tail]
                if fit["better"] == "power law":
                    ax.plot(xx, np.exp(fit["logA"]) * xx ** (-fit["p"]), "--", color="k", lw=0.8,
                            label=f"fit D^-{fit['p']:.2f}" if j == 0 or True else None)
                else:
                    ax.plot(xx, np.exp(fit["logB"] - xx / fit["xi"]), ":", color="k", lw=0.9,
                            label=f"fit exp(-D/{fit['xi']:.3g})")
    axs[0].set_xscale("log"); axs[0].set_yscale("log")
    axs[1].set_yscale("log")
    axs[1].set_xlim(0, min(cfg.f2_max_distance, 20 * max(summ["feedforward"]["peak_distance"], 5)))
    for ax in axs:
        ax.set_xlabel("layer distance D = L - k"); ax.set_ylabel("response chi = dc^L/dc^k")
    axs[0].set_title("log-log (power law = straight line)", fontsize=8)
    axs[1].set_title("log-linear (exponential = straight line)", fontsize=8)
    axs[0].legend(fontsize=6)
    axs[1].set_ylim(bottom=max(1e-12, float(np.min([r["chi_theory"] for r in rows if r["chi_theory"] > 0]))))
    fig.suptitle(f"Fig. 2: response vs layer distance ({cfg.activation}, c0={cfg.c0:g})", fontsize=9)
    files = _save(fig, out, "fig2_response_distance", cfg)
    write_table(rows, out / "fig2_response_distance.csv")
    files.append("fig2_response_distance.csv")
    r, f_ = summ["resnet"], summ["feedforward"]
    text = (f"The response chi = dc^L/dc^k of the output correlation to the correlation D = L - k layers "
            f"earlier (mean field, lines; simulation N={cfg.f2_width}, points ±SE). ResNet (alpha={cfg.f2_alpha:g}): "
            f"chi first rises to {_f(r['peak_chi'])} at D={r['peak_distance']}, then decays; on the tail "
            f"D in [{_f(r['fit'].get('x_min'))}, {_f(r['fit'].get('x_max'))}] a power law D^-p fits with "
            f"p={_f(r['fit']['p'])} (rms log-residual {_f(r['fit']['rms_power'], 2)}) vs an exponential with "
            f"xi={_f(r['fit']['xi'])} layers (rms {_f(r['fit']['rms_exp'], 2)}): the {r['fit']['better']} fits "
            f"better, chi is still {_f(r['chi_at_max_distance'])} at D={r['max_distance']}. Feed-forward: "
            f"the {f_['fit']['better']} fits better (xi={_f(f_['fit']['xi'])} layers, rms {_f(f_['fit']['rms_exp'], 2)}; "
            f"power law rms {_f(f_['fit']['rms_power'], 2)}), chi={_f(f_['chi_at_max_distance'])} at "
            f"D={f_['max_distance']}. Simulation vs theory: largest deviation {_f(r['sim_max_abs_z'], 2)} SE "
            f"(ResNet), {_f(f_['sim_max_abs_z'], 2)} SE (feed-forward).")
    return FigureResult("fig2", "Response function vs layer distance", rows, summ, files, text)


def _an(form: str) -> str:
    return {"power law": "a power law", "exponential": "an exponential"}.get(form, "neither form (too few points)")


def verdict_response(summary: dict) -> str:
    """Claim 2, the figure-2 part: simulation vs theory over layer distances and the form of the tail."""
    r, ff = summary["resnet"], summary["feedforward"]
    return (f"within {_f(r['sim_max_abs_z'], 2)} / {_f(ff['sim_max_abs_z'], 2)} SE over layer distances for "
            f"ResNet / feed-forward (fig. 2). "
            f"Tail of the response: better fitted by {_an(r['fit']['better'])} in the ResNet (power-law exponent "
            f"{_f(r['fit']['p'])}, still {_f(r['chi_at_max_distance'])} at D={r['max_distance']}) and by "
            f"{_an(ff['fit']['better'])} in the feed-forward net (decay length {_f(ff['fit']['xi'])} "
            f"layers, chi={_f(ff['chi_at_max_distance'])} at D={ff['max_distance']}).")
