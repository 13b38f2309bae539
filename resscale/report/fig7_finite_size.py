"""Figure 7 (claim 1): N (E[Khat^L] - K^L) and N Var(Khat^L) vs N, against the theory's M and V.

Checks the finite-width theory's covariance V and mean shift M, docs/theory.md Secs. 4.4-4.5.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..inputs import two_input_kernel
from .config import FW_MISSING, ReportConfig
from .output import FigureResult, _f, _save, write_table
from .stats import _cv_mean, extrapolate_inv_n
from .tasks import TaskRunner, _fw_source_hash, _net, _netp, _sim_seed, finite_width_available


def figure7_finite_size(cfg: ReportConfig, runner: TaskRunner, out: Path) -> FigureResult:
    """N (E[Khat^L] - K^L) and N Var(Khat^L) vs N with the theory's M and V as asymptotes."""
    import matplotlib.pyplot as plt

    from ..kernel_recursion import mean_field_kernel

    p = _netp(cfg.f7_depth, cfg.f7_alpha, 1.0, 0.0, cfg.activation, "full")
    K0 = two_input_kernel(cfg.f7_c0, cfg.q0)
    KL = mean_field_kernel(_net(p), K0=K0)
    kL = np.array([KL[0, 0], KL[1, 1], KL[0, 1]])
    k0 = np.array([K0[0, 0], K0[1, 1], K0[0, 1]])
    nchunks = max(1, int(math.ceil(cfg.f7_networks / cfg.f7_chunk)))
    specs, where = [], []
    for N in cfg.f7_widths:
        for c in range(nchunks):
            specs.append(dict(kind="sim_kernel", net=p, width=N, networks=cfg.f7_chunk, c0=cfg.f7_c0, q0=cfg.q0,
                              seed=_sim_seed(cfg, "f7", N, c)))
            where.append(N)
    sims = runner.run(specs, "fig7 simulations", weights=[s["width"] * s["networks"] / 1000 for s in specs])
    fw_ok = finite_width_available()
    th, fw_note = None, ""
    if fw_ok:
        try:
            th = runner.run([dict(kind="fw_kernel", net=p, c0=cfg.f7_c0, q0=cfg.q0, fw=_fw_source_hash())],
                            "fig7 finite-width theory")[0]
        except Exception as exc:
            fw_ok, fw_note = False, f"{FW_MISSING} ({type(exc).__name__}: {exc})"
    else:
        fw_note = FW_MISSING + " (resscale.finite_width not importable)"
    names = ["aa", "bb", "ab"]
    idx = {"aa": (0, 0), "bb": (1, 1), "ab": (0, 1)}
    rows, summ = [], {"depth": cfg.f7_depth, "alpha": cfg.f7_alpha, "c0": cfg.f7_c0, "networks": cfg.f7_networks,
                      "finite_width_theory": fw_ok, "note": fw_note, "widths": {}}
    for N in cfg.f7_widths:
        KLs = np.concatenate([r["KL"] for w_, r in zip(where, sims) if w_ == N])
        K0s = np.concatenate([r["K0"] for w_, r in zip(where, sims) if w_ == N])
        n = KLs.shape[0]
        entry = {}
        for e, nm in enumerate(names):
            y = KLs[:, e]
            raw, raw_se = float(y.mean()), float(y.std(ddof=1) / math.sqrt(n))
            cv, cv_se = _cv_mean(y, K0s, k0)
            d = y - raw
            var = float(d.var(ddof=1))
            var_se = float(np.std(d ** 2, ddof=1) / math.sqrt(n))
            row = dict(width=N, entry=nm, networks=n, N_mean_shift=N * (cv - kL[e]), N_mean_shift_se=N * cv_se,
                       N_mean_shift_plain=N * (raw - kL[e]), N_mean_shift_plain_se=N * raw_se,
                       N_var=N * var, N_var_se=N * var_se)
            if th is not None:
                a, b = idx[nm]
                row.update(M_theory=float(th["M"][a, b]), V_theory=float(th["V"][a, b, a, b]),
                           V_independent_closure=float(th["V_ind"][a, b, a, b]))
            rows.append(row)
            entry[nm] = row
        summ["widths"][str(N)] = entry
    Ns = np.array(cfg.f7_widths)
    extrap = {}
    for nm in names:
        rr = [summ["widths"][str(N)][nm] for N in Ns]
        m, m_se = extrapolate_inv_n(Ns, [r["N_mean_shift"] for r in rr], [r["N_mean_shift_se"] for r in rr])
        v_, v_se = extrapolate_inv_n(Ns, [r["N_var"] for r in rr], [r["N_var_se"] for r in rr])
        extrap[nm] = dict(M_sim=m, M_sim_se=m_se, V_sim=v_, V_sim_se=v_se)
        if th is not None:
            extrap[nm].update(M_theory=rr[0]["M_theory"], V_theory=rr[0]["V_theory"],
                              V_independent_closure=rr[0]["V_independent_closure"])
    summ["extrapolated"] = extrap
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    for j, nm in enumerate(["aa", "ab"]):
        col = f"C{j}"
        rr = [summ["widths"][str(N)][nm] for N in Ns]
        axs[0].errorbar(Ns * (1 + 0.03 * j), [r["N_mean_shift"] for r in rr], yerr=[r["N_mean_shift_se"] for r in rr],
                        fmt="o", color=col, capsize=2, label=f"sim N(E[Khat_{nm}] - K_{nm}) (control variates)")
        axs[1].errorbar(Ns * (1 + 0.03 * j), [r["N_var"] for r in rr], yerr=[r["N_var_se"] for r in rr], fmt="o",
                        color=col, capsize=2, label=f"sim N Var(Khat_{nm})")
        if th is not None:
            axs[0].axhline(rr[0]["M_theory"], color=col, ls="--", lw=1, label=f"theory M_{nm}")
            axs[1].axhline(rr[0]["V_theory"], color=col, ls="--", lw=1, label=f"theory V_{nm},{nm}")
            axs[1].axhline(rr[0]["V_independent_closure"], color=col, ls=":", lw=1,
                           label=f"independent-noise closure V_{nm},{nm}")
    axs[0].axhline(0, color="k", lw=0.5)
    from matplotlib.ticker import NullFormatter

    for ax in axs:
        ax.set_xscale("log"); ax.set_xlabel("width N"); ax.legend(fontsize=6)
        ax.set_xticks(Ns, [str(int(n)) for n in Ns]); ax.xaxis.set_minor_formatter(NullFormatter())
    axs[0].set_ylabel("N (E[Khat^L] - K^L)"); axs[1].set_ylabel("N Var(Khat^L)")
    if th is None:
        axs[0].text(0.02, 0.02, FW_MISSING, transform=axs[0].transAxes, fontsize=7, color="C3")
    fig.suptitle(f"Fig. 7: finite-size corrections, {cfg.activation} full block, alpha={cfg.f7_alpha:g}, "
                 f"L={cfg.f7_depth}, c0={cfg.f7_c0:g}, {cfg.f7_networks} nets per N", fontsize=9)
    files = _save(fig, out, "fig7_finite_size", cfg)
    write_table(rows, out / "fig7_finite_size.csv")
    files.append("fig7_finite_size.csv")
    big = summ["widths"][str(int(Ns[-1]))]
    parts = []
    for nm in ("aa", "ab"):
        r = big[nm]
        s = (f"Khat_{nm}: N Var={_f(r['N_var'])}±{_f(r['N_var_se'], 2)}, N(E-K)={_f(r['N_mean_shift'])}"
             f"±{_f(r['N_mean_shift_se'], 2)}")
        if th is not None:
            s += (f" vs theory V={_f(r['V_theory'])} (independent-noise closure {_f(r['V_independent_closure'])}), "
                  f"M={_f(r['M_theory'])}")
        parts.append(s)
    ex = summ["extrapolated"]
    parts.append("extrapolated to N -> inf (weighted fit a + b/N over all N): " + "; ".join(
        f"{nm}: M={_f(ex[nm]['M_sim'])}±{_f(ex[nm]['M_sim_se'], 2)}, V={_f(ex[nm]['V_sim'])}±{_f(ex[nm]['V_sim_se'], 2)}"
        + (f" (theory M={_f(ex[nm]['M_theory'])}, V={_f(ex[nm]['V_theory'])})" if th is not None else "")
        for nm in ("aa", "ab")))
    gain = np.nanmedian([summ["widths"][str(N)][nm]["N_mean_shift_plain_se"] / summ["widths"][str(N)][nm]["N_mean_shift_se"]
                         for N in Ns for nm in names])
    text = (f"Simulated N (E[Khat^L] - K^L) and N Var(Khat^L) for N in {list(map(int, Ns))} "
            f"({cfg.f7_networks} networks each; the mean uses Khat^0 as control variate, which shrinks its SE "
            f"by a factor {_f(gain)}). At N={int(Ns[-1])}: " + "; ".join(parts) +
            (". " if th is not None else f". {fw_note}: no theory asymptotes drawn."))
    summ["cv_se_gain"] = gain
    return FigureResult("fig7", "Finite-size corrections vs N", rows, summ, files, text)


def verdict_finite_size(summary: dict) -> str:
    """Claim 1, the figure-7 part: V and M at the largest N and extrapolated in 1/N (needs the theory)."""
    Nl = str(max(int(k) for k in summary["widths"]))
    parts = []
    for nm in ("aa", "ab"):
        r = summary["widths"][Nl][nm]
        zV = (r["N_var"] - r["V_theory"]) / r["N_var_se"]
        zI = (r["N_var"] - r["V_independent_closure"]) / r["N_var_se"]
        zM = (r["N_mean_shift"] - r["M_theory"]) / r["N_mean_shift_se"]
        parts.append(f"Khat_{nm}: simulated N Var={_f(r['N_var'])}±{_f(r['N_var_se'], 2)} vs theory V="
                     f"{_f(r['V_theory'])} ({_f(zV, 2)} SE; the independent-noise closure "
                     f"{_f(r['V_independent_closure'])} is off by {_f(zI, 2)} SE), N(E-K)="
                     f"{_f(r['N_mean_shift'])}±{_f(r['N_mean_shift_se'], 2)} vs M={_f(r['M_theory'])} "
                     f"({_f(zM, 2)} SE)")
    ex = summary["extrapolated"]
    parts.append("extrapolated in 1/N: " + "; ".join(
        f"V_{nm}={_f(ex[nm]['V_sim'])}±{_f(ex[nm]['V_sim_se'], 2)} vs {_f(ex[nm]['V_theory'])} "
        f"({_f((ex[nm]['V_sim'] - ex[nm]['V_theory']) / ex[nm]['V_sim_se'], 2)} SE), "
        f"M_{nm}={_f(ex[nm]['M_sim'])}±{_f(ex[nm]['M_sim_se'], 2)} vs {_f(ex[nm]['M_theory'])} "
        f"({_f((ex[nm]['M_sim'] - ex[nm]['M_theory']) / ex[nm]['M_sim_se'], 2)} SE)" for nm in ("aa", "ab")))
    return (f"at N={Nl} (fig. 7, {summary['networks']} networks; the "
            f"simulation includes O(1/N) corrections) " + "; ".join(parts))
