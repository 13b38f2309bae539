"""Figure 1: q^l and c^l through depth, ResNet vs feed-forward, mean field against simulation.

Checks the mean-field kernel recursion, docs/theory.md Sec. 3 (simulation points carry O(1/N) bias).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..inputs import two_input_kernel
from .config import ReportConfig
from .output import FigureResult, _f, _save, write_table
from .tasks import TaskRunner, _net, _netp, _sim_seed


def figure1_signal_propagation(cfg: ReportConfig, runner: TaskRunner, out: Path) -> FigureResult:
    """q^l and c^l vs layer for several alpha and the feed-forward baseline (theory + simulation)."""
    import matplotlib.pyplot as plt

    from ..kernel_recursion import mean_field_kernel

    K0 = two_input_kernel(cfg.c0, cfg.q0)
    models = [("resnet", a, _netp(cfg.f1_depth, a, 1.0, 0.0, cfg.activation, "full")) for a in cfg.f1_alphas]
    models.append(("feedforward", math.nan, _netp(cfg.f1_depth, 1.0, cfg.f1_ff_sigma_w2, 0.0,
                                                  cfg.activation, "feedforward")))
    specs = [dict(kind="sim_layers", net=p, width=cfg.f1_width, networks=cfg.f1_networks, c0=cfg.c0,
                  q0=cfg.q0, seed=_sim_seed(cfg, "f1", i)) for i, (_, _, p) in enumerate(models)]
    sims = runner.run(specs, "fig1 simulations", weights=[cfg.f1_networks * cfg.f1_depth] * len(specs))
    rows, summ = [], {"models": []}
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, ((kind, a, p), sim) in enumerate(zip(models, sims)):
        Ks = mean_field_kernel(_net(p), K0=K0, all_layers=True)
        q = 0.5 * (Ks[:, 0, 0] + Ks[:, 1, 1])
        c = Ks[:, 0, 1] / np.sqrt(Ks[:, 0, 0] * Ks[:, 1, 1])
        lab = f"ResNet alpha={a:g}" if kind == "resnet" else f"feed-forward (sigma_w2={cfg.f1_ff_sigma_w2:g})"
        col = f"C{i}"
        layers = np.arange(len(q))
        axs[0].semilogy(layers, q, color=col, lw=1.5, label=lab)
        axs[1].plot(layers, c, color=col, lw=1.5, label=lab)
        step = max(1, len(q) // 12)
        sl = slice(0, None, step)
        axs[0].errorbar(layers[sl], sim["q"][sl], yerr=sim["q_se"][sl], fmt="o", ms=3, color=col, capsize=2)
        axs[1].errorbar(layers[sl], sim["c"][sl], yerr=sim["c_se"][sl], fmt="o", ms=3, color=col, capsize=2)
        zq = (sim["q"] - q) / np.maximum(sim["q_se"], 1e-300)
        zc = (sim["c"] - c) / np.maximum(sim["c_se"], 1e-300)
        for l in layers:
            rows.append(dict(model=kind, alpha=a, layer=int(l), q_theory=q[l], q_sim=sim["q"][l],
                             q_se=sim["q_se"][l], c_theory=c[l], c_sim=sim["c"][l], c_se=sim["c_se"][l]))
        summ["models"].append(dict(model=kind, alpha=a, q_L=float(q[-1]), c_L=float(c[-1]),
                                   q_L_sim=float(sim["q"][-1]), q_L_se=float(sim["q_se"][-1]),
                                   c_L_sim=float(sim["c"][-1]), c_L_se=float(sim["c_se"][-1]),
                                   max_abs_z_q=float(np.nanmax(np.abs(zq[1:]))),
                                   max_abs_z_c=float(np.nanmax(np.abs(zc[1:])))))
    axs[0].set_xlabel("layer l"); axs[0].set_ylabel("q^l (kernel diagonal)")
    axs[1].set_xlabel("layer l"); axs[1].set_ylabel("c^l (correlation)")
    axs[1].legend(fontsize=7)
    fig.suptitle(f"Fig. 1: signal propagation, {cfg.activation}, c0={cfg.c0:g}, q0={cfg.q0:g}; lines: mean field, "
                 f"points: simulation N={cfg.f1_width}, {cfg.f1_networks} nets (±SE)", fontsize=9)
    files = _save(fig, out, "fig1_signal_propagation", cfg)
    write_table(rows, out / "fig1_signal_propagation.csv")
    files.append("fig1_signal_propagation.csv")
    ms = summ["models"]
    parts = []
    for m in ms:
        nm = f"ResNet alpha={_f(m['alpha'])}" if m["model"] == "resnet" else "the feed-forward net"
        parts.append(f"{nm}: q^L={_f(m['q_L'])} (sim {_f(m['q_L_sim'])}±{_f(m['q_L_se'], 2)}), "
                     f"c^L={_f(m['c_L'], 4)} (sim {_f(m['c_L_sim'], 4)}±{_f(m['c_L_se'], 2)})")
    zmax = max(max(m["max_abs_z_q"], m["max_abs_z_c"]) for m in ms)
    text = (f"Mean-field q^l and c^l through L={cfg.f1_depth} layers (lines) against simulated networks of width "
            f"N={cfg.f1_width} (points, ±1 SE), inputs with c0={cfg.c0:g}. At the output, " + "; ".join(parts) +
            f". The largest deviation over all layers and models is {_f(zmax, 2)} SE (the simulation carries an "
            f"O(1/N) bias, so small systematic deviations are expected). Remaining input difference 1 - c^L "
            f"(mean field): " + ", ".join(
                (f"ResNet alpha={_f(m['alpha'])}: " if m["model"] == "resnet" else "feed-forward: ")
                + _f(1 - m["c_L"]) for m in ms) + f" (input: {_f(1 - cfg.c0)}).")
    summ["max_abs_z"] = zmax
    return FigureResult("fig1", "Signal propagation through depth", rows, summ, files, text)
