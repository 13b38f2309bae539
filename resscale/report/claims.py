"""The verdict on each of the paper's four claims (SPEC), composed from the figures' verdict parts.

Each figure module words what its own numbers say (``verdict_*``); this module only joins them per claim:
claim 1 (finite-size theory, docs/theory.md Sec. 4): figs. 7 and 6; claim 2 (response function, Sec. 7):
figs. 3 and 2; claim 3 (empirical scalings, Secs. 5-6): figs. 3 and 4; claim 4 (analytic alpha*, Sec. 6):
figs. 4, 8 and 5.
"""
from __future__ import annotations

from . import (fig2_response_distance as fig2, fig3_sensitivity as fig3, fig4_alpha_vs_depth as fig4,
               fig5_universality as fig5, fig6_finite_width as fig6, fig7_finite_size as fig7,
               fig8_universality_map as fig8)
from .config import FW_MISSING, ReportConfig


def verdicts(figs: dict, cfg: ReportConfig) -> dict:
    """One verdict string per claim of the paper (SPEC), built from the figure summaries."""
    v = {}
    s = {k: f.summary for k, f in figs.items()}
    f2, f3, f4, f5, f6, f7, f8 = (s.get(f"fig{i}") for i in range(2, 9))
    # claim 1: finite-size theory
    if f7 is not None and f7["finite_width_theory"]:
        v["claim1"] = ("claim 1 (finite-size theory): " + fig7.verdict_finite_size(f7)
                       + (fig6.verdict_theory(f6) if f6 is not None else "") + ".")
    else:
        v["claim1"] = (f"claim 1 (finite-size theory): not tested here: {FW_MISSING}"
                       + (fig6.verdict_simulation_only(f6) if f6 is not None else "") + ".")
    # claim 2: response function
    if f2 is not None and f3 is not None:
        v["claim2"] = ("claim 2 (analytical response function): the exact mean-field response dc^L/dc^0 agrees "
                       "with " + fig3.verdict_simulation(f3) + " and " + fig2.verdict_response(f2))
    # claim 3: band / 1/sqrt(L)
    if f3 is not None:
        law = fig4.verdict_depth_law(f4) if f4 is not None else "alpha* ~ 1/sqrt(L)"
        v["claim3"] = (f"claim 3 (empirical scalings lie at maximal sensitivity; {cfg.activation}, full block, "
                       f"sigma_w2=1, c0={cfg.c0:g}): " + fig3.verdict_band(f3, law))
    # claim 4: analytic alpha*, weak dependence on the hyperparameters
    if f4 is not None and f5 is not None:
        sw_txt = fig8.verdict_sigma_w2(f8) if f8 is not None else None
        v["claim4"] = ("claim 4 (analytic alpha*, weak dependence on hyperparameters): "
                       + fig4.verdict_analytic(f4, cfg)
                       + (sw_txt + ". Fig. 5 view: " if sw_txt else "")
                       + fig5.verdict_hyperparameters(f5, cfg))
    return v
