"""Figure 6 (claim 1): finite-width sensitivity S_N(alpha), 1/N theory vs simulation, and alpha*(N).

Checks the finite-width sensitivity, docs/theory.md Sec. 4.6, and the finite-width optimum (6.6) of Sec. 6.
The simulated shift alpha*(N) - alpha*_inf is the common-random-numbers estimator of Sec. 4.6.1
(:mod:`resscale.simulated_optimum`): a dense grid around alpha*_inf, pathwise derivatives, control
variates with known mean, SE from the network-level covariance; it is set against the theory's shift
on the same grid, and the number of networks that would resolve the predicted shift is stated.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import FW_MISSING, ReportConfig
from .output import FigureResult, _f, _save, write_table
from .stats import _template_argmax
from .tasks import TaskRunner, _fw_source_hash, _net, _netp, _sim_seed, finite_width_available


def _simulations(cfg: ReportConfig, runner: TaskRunner, sim_alphas: list):
    """Simulated S_N at ``sim_alphas`` for every width: ``where`` = [(N, alpha)], ``sims`` = [{S, se}]."""
    L = cfg.f6_depth
    nets = dict(zip(cfg.f6_widths, cfg.f6_networks))
    specs, where = [], []
    for N in cfg.f6_widths:
        for i, a in enumerate(sim_alphas):
            specs.append(dict(kind="sim_sens", net=_netp(L, a, 1.0, 0.0, cfg.activation, "full"), width=N,
                              networks=nets[N], c0=cfg.c0, q0=cfg.q0, seed=_sim_seed(cfg, "f6", N, i)))
            where.append((N, a))
    sims = runner.run(specs, "fig6 simulations", weights=[s["networks"] * s["width"] / 32 for s in specs])
    return where, sims


def simulated_optimum(sim_alphas, S, se, grid, S_grid, a_star, seed=0):
    """The earlier template estimator (kept for comparison, no longer plotted): the mean-field curve
    shifted in log alpha and rescaled, fitted to a few noisy points (:func:`.stats._template_argmax`).
    It is biased by the heavy-tailed per-network sensitivities at small N (docs/theory.md Sec. 4.6.1)."""
    return _template_argmax(sim_alphas, S, se, grid, S_grid, a_star, seed=seed)


def _shift_tasks(cfg: ReportConfig, runner: TaskRunner):
    """Per width the CRN estimate of alpha*(N) - alpha*_inf and the theory's shift on the same grid.

    Returns ({N: simulate_optimum dict}, theory dict or None, note)."""
    L = cfg.f6_depth
    netp = _netp(L, 0.1, 1.0, 0.0, cfg.activation, "full")
    widths = list(cfg.f6_widths)
    nets = dict(zip(widths, cfg.f6_opt_networks))
    specs = [dict(kind="sim_optimum", net=netp, width=N, networks=nets[N], c0=cfg.c0, q0=cfg.q0,
                  n_alpha=cfg.f6_opt_n_alpha, rel=cfg.f6_opt_rel, seed=_sim_seed(cfg, "f6opt", N)) for N in widths]
    try:
        sims = runner.run(specs, "fig6 CRN optimum", weights=[s["networks"] * s["width"] / 32 for s in specs])
    except ValueError as exc:   # e.g. no interior mean-field maximum (tiny configurations)
        return {}, None, f"CRN estimator not run: {exc}"
    sims = dict(zip(widths, sims))
    pred, note = None, ""
    if finite_width_available():
        r0 = sims[widths[0]]
        try:
            pred = runner.run([dict(kind="fw_shift", net=netp, c0=cfg.c0, q0=cfg.q0, widths=widths,
                                    alphas=list(map(float, r0["alphas"])), alpha_inf=float(r0["alpha_inf"]),
                                    fw=_fw_source_hash())], "fig6 theory shift")[0]
        except Exception as exc:  # theory failing: keep the simulation
            note = f"theory shift failed ({type(exc).__name__}: {exc})"
    return sims, pred, note


def _theory(cfg: ReportConfig, runner: TaskRunner, netL, grid, sim_alphas, S_mf):
    """The 1/N theory: (available, note, {N: S_N on grid + at sim_alphas}, {N: alpha*(N), S}, C(alpha) or None)."""
    from ..sensitivity import sensitivity

    L = cfg.f6_depth
    fw_ok = finite_width_available()
    fw_note = ""
    th = {}
    th_opt = {}
    summ_C = None
    if fw_ok:
        # the 1/N theory is linear in 1/N: S_N = S + C(alpha)/N with C = S_{N=1} - S (one theory
        # evaluation per alpha serves every N); C is interpolated (cubic spline in log alpha)
        from scipy.interpolate import CubicSpline

        th_alphas = sorted(set(np.round(np.logspace(math.log10(grid[0]), math.log10(grid[-1]),
                                                     cfg.f6_theory_points), 10)) | set(np.round(sim_alphas, 10)))
        try:
            fws = runner.run([dict(kind="fw_sens", net=_netp(L, 0.1, 1.0, 0.0, cfg.activation, "full"), c0=cfg.c0,
                                   q0=cfg.q0, width=1, alphas=[float(a)], fw=_fw_source_hash())
                              for a in th_alphas], "fig6 finite-width theory",
                             weights=[1] * len(th_alphas))
            ta = np.array(th_alphas, float)
            S1 = np.array([float(r["S"][0]) for r in fws])
            C = S1 - np.asarray(sensitivity(netL, cfg.c0, cfg.q0, alphas=ta), float)
            spl = CubicSpline(np.log(ta), C)
            fine = np.logspace(math.log10(ta[0]), math.log10(ta[-1]), 2000)
            S_fine = np.asarray(sensitivity(netL, cfg.c0, cfg.q0, alphas=fine), float)
            for N in cfg.f6_widths:
                th[N] = np.concatenate([S_mf + spl(np.log(grid)) / N,
                                        np.asarray(sensitivity(netL, cfg.c0, cfg.q0, alphas=np.array(sim_alphas)), float)
                                        + spl(np.log(np.array(sim_alphas))) / N])
                SN = S_fine + spl(np.log(fine)) / N
                k = int(np.argmax(SN))
                th_opt[N] = {"alpha": float(fine[k]) if 0 < k < fine.size - 1 else math.nan, "S": float(SN[k])}
            summ_C = dict(alphas=ta, C=C)
        except Exception as exc:  # theory present but failing: report, keep the simulation
            fw_ok = False
            fw_note = f"{FW_MISSING} ({type(exc).__name__}: {exc})"
            th, th_opt = {}, {}
    else:
        fw_note = FW_MISSING + " (resscale.finite_width.sensitivity_finite_width not importable)"
    return fw_ok, fw_note, th, th_opt, summ_C


def figure6_finite_width(cfg: ReportConfig, runner: TaskRunner, out: Path) -> FigureResult:
    """S_N(alpha): 1/N theory (when available) vs simulation for several N; alpha*(N)."""
    import matplotlib.pyplot as plt

    from ..sensitivity import sensitivity
    from ..simulated_optimum import networks_to_resolve

    L = cfg.f6_depth
    base = runner.run([dict(kind="optimal", net=_netp(L, 0.1, 1.0, 0.0, cfg.activation, "full"),
                            c0=cfg.c0, q0=cfg.q0)], "fig6 alpha*")[0]
    a_mf = base["alpha"] if math.isfinite(base["alpha"]) else 1 / math.sqrt(L)
    sim_alphas = [float(a_mf * f) for f in cfg.f6_factors]
    widths = list(cfg.f6_widths)
    nets = dict(zip(widths, cfg.f6_networks))
    where, sims = _simulations(cfg, runner, sim_alphas)
    grid = np.logspace(math.log10(a_mf * min(cfg.f6_factors) * 0.8), math.log10(a_mf * max(cfg.f6_factors) * 1.25), 60)
    netL = _net(_netp(L, 0.1, 1.0, 0.0, cfg.activation, "full"))
    S_mf = np.asarray(sensitivity(netL, cfg.c0, cfg.q0, alphas=grid), float)
    fw_ok, fw_note, th, th_opt, summ_C = _theory(cfg, runner, netL, grid, sim_alphas, S_mf)
    opt, pred, opt_note = _shift_tasks(cfg, runner)
    rows = []
    summ = {"depth": L, "alpha_star_mean_field": base["alpha"], "finite_width_theory": fw_ok,
            "note": "; ".join(x for x in (fw_note, opt_note) if x),
            "widths": {}, "theory_C": summ_C if fw_ok else None}
    fig, axs = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw=dict(width_ratios=[1.5, 1]))
    axs[0].semilogx(grid, S_mf, "k-", lw=1.2, label="mean field (N = inf)")
    S_mf_at = np.asarray(sensitivity(netL, cfg.c0, cfg.q0, alphas=np.array(sim_alphas)), float)
    for j, N in enumerate(widths):
        col = f"C{j}"
        sS = np.array([r["S"] for (n_, _), r in zip(where, sims) if n_ == N])
        sE = np.array([r["se"] for (n_, _), r in zip(where, sims) if n_ == N])
        o = opt.get(N)
        a_sim = float(o["alpha_inf"] + o["shift_mf"]) if o else math.nan
        a_sim_se = float(o["shift_mf_se"]) if o else math.nan
        axs[0].errorbar(sim_alphas, sS, yerr=sE, fmt="o", color=col, ms=4, capsize=2,
                        label=f"simulation N={N} ({nets[N]} nets)")
        w = dict(alpha_star_sim=a_sim, alpha_star_sim_se=a_sim_se, sim=dict(alphas=sim_alphas, S=sS, se=sE),
                 z_mean_field=(sS - S_mf_at) / sE, S_sim_minus_mf_at_alpha_star=None)
        if o:
            w.update(shift_sim=float(o["shift_mf"]), shift_sim_se=a_sim_se, n_opt_networks=int(o["n_networks"]),
                     opt_alphas=o["alphas"], opt_S=o["S"], opt_S_se=o["S_se"], opt_cpu_s=float(o["cpu_s"]),
                     slope_kurtosis=o["kurtosis"].get("slope") if isinstance(o.get("kurtosis"), dict) else None)
        if pred is not None and N in pred["widths"]:
            p = pred["widths"][N]
            w.update(shift_pred=p["shift"], shift_pred_library=p["shift_library"])
            if o:
                w["z_shift"] = (w["shift_sim"] - p["shift"]) / a_sim_se
                w["networks_to_resolve"] = networks_to_resolve(o["n_networks"], a_sim_se, p["shift"])
        if N in th:
            tN = np.asarray(th[N], float)
            axs[0].semilogx(grid, tN[:len(grid)], "-", color=col, lw=1.2, label=f"1/N theory N={N}")
            tN_at = tN[len(grid):]
            w["z_theory"] = (sS - tN_at) / sE
            w["alpha_star_theory"] = (float(opt[N]["alpha_inf"] + w["shift_pred"]) if "shift_pred" in w
                                      else th_opt[N]["alpha"])
        i1 = int(np.argmin(np.abs(np.array(cfg.f6_factors) - 1.0)))
        w["S_sim_minus_mf_at_alpha_star"] = float(sS[i1] - S_mf_at[i1])
        w["S_sim_minus_mf_se"] = float(sE[i1])
        summ["widths"][str(N)] = w
        for k, (a, s, e) in enumerate(zip(sim_alphas, sS, sE)):
            rows.append(dict(kind="simulation", width=N, alpha=a, S=s, S_se=e, S_mean_field=S_mf_at[k],
                             S_theory_N=(float(th[N][len(grid) + k]) if N in th else None)))
        for a, s in zip(grid, (th[N][:len(grid)] if N in th else [None] * len(grid))):
            if s is not None:
                rows.append(dict(kind="theory", width=N, alpha=a, S=s))
    for a, s in zip(grid, S_mf):
        rows.append(dict(kind="mean_field", width=None, alpha=a, S=s))
    from matplotlib.ticker import NullFormatter

    axs[0].xaxis.set_minor_formatter(NullFormatter())
    axs[0].set_xticks(sim_alphas, [f"{a:.2g}" for a in sim_alphas])
    axs[0].set_xlabel("alpha"); axs[0].set_ylabel(f"S_N (L={L})")
    axs[0].legend(fontsize=6)
    if not fw_ok:
        axs[0].text(0.02, 0.02, FW_MISSING + ": simulation and mean field only", transform=axs[0].transAxes,
                    fontsize=7, color="C3")
    invN = np.array([1.0 / N for N in widths])
    ws_ = [summ["widths"][str(N)] for N in widths]
    if opt:
        axs[1].errorbar(invN, [w.get("shift_sim", math.nan) for w in ws_],
                        yerr=[w.get("shift_sim_se", 0.0) for w in ws_], fmt="o", color="C3", capsize=2,
                        label="simulation: CRN grid, pathwise derivative, control variates (±SE)")
    axs[1].axhline(0.0, color="k", lw=1, label="mean field (no shift)")
    if any("shift_pred" in w for w in ws_):
        axs[1].plot(invN, [w.get("shift_pred", math.nan) for w in ws_], "s-", color="C0", ms=4,
                    label="1/N theory: predicted shift")
    axs[1].set_xlabel("1/N"); axs[1].set_ylabel("alpha*(N) - alpha*_inf"); axs[1].legend(fontsize=6)
    fig.suptitle(f"Fig. 6: finite width, {cfg.activation} full block, L={L}, c0={cfg.c0:g}", fontsize=9)
    files = _save(fig, out, "fig6_finite_width", cfg)
    write_table(rows, out / "fig6_finite_width.csv")
    files.append("fig6_finite_width.csv")
    parts = []
    for N in widths:
        w = summ["widths"][str(N)]
        s = f"N={N}: S_N - S at alpha*={_f(w['S_sim_minus_mf_at_alpha_star'])}±{_f(w['S_sim_minus_mf_se'], 2)}"
        if "shift_sim" in w:
            s += (f", simulated shift alpha*(N) - alpha*_inf = {_f(w['shift_sim'])}±{_f(w['shift_sim_se'], 2)} "
                  f"({w['n_opt_networks']} networks)")
        if "shift_pred" in w:
            s += f", predicted shift {_f(w['shift_pred'], 2)}"
            if "networks_to_resolve" in w:
                s += f" (resolving it at 1 SE would take ~{w['networks_to_resolve']:.2g} networks)"
        if "z_theory" in w:
            s += f", S_N theory-simulation deviations up to {_f(float(np.max(np.abs(w['z_theory']))), 2)} SE"
        parts.append(s)
    text = (f"S_N(alpha) at L={L} for N in {widths}: simulation (points ±SE), mean field (black)"
            + (", and the 1/N theory (coloured lines)" if fw_ok else f" ({fw_note})") +
            f". Mean-field alpha*={_f(base['alpha'])}. " + "; ".join(parts) +
            ". The shift of alpha* is measured on a CRN grid of " + str(cfg.f6_opt_n_alpha) + " alphas in "
            f"[{1 - cfg.f6_opt_rel:g}, {1 + cfg.f6_opt_rel:g}] alpha*_inf as -D/S'' (D = the control-variate "
            "estimate of dS_N/dalpha at alpha*_inf; docs/theory.md Sec. 4.6.1); the theory's shift is the same "
            "local estimator applied to S + delta/N." + (f" ({summ['note']})" if summ["note"] else ""))
    return FigureResult("fig6", "Finite-width sensitivity", rows, summ, files, text)


def verdict_theory(summary: dict) -> str:
    """Claim 1, the figure-6 part when the theory is available: largest theory-simulation deviation ("" if none)."""
    if not summary["finite_width_theory"]:
        return ""
    zs = [float(np.max(np.abs(w["z_theory"]))) for w in summary["widths"].values() if "z_theory" in w]
    if not zs:
        return ""
    return f"; S_N(alpha) theory vs simulation deviates by at most {_f(max(zs), 2)} SE (fig. 6)"


def verdict_simulation_only(summary: dict) -> str:
    """Claim 1, the figure-6 part without the theory: the simulated finite-width shift of S at alpha*."""
    ws = summary["widths"]
    Ns = sorted(ws, key=int)
    return ("; simulation alone shows S_N - S at alpha* = " +
            ", ".join(f"{_f(ws[N]['S_sim_minus_mf_at_alpha_star'])}±{_f(ws[N]['S_sim_minus_mf_se'], 2)} "
                      f"(N={N})" for N in Ns))
