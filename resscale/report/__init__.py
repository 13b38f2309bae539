"""The optimal-scaling study: ``resscale report`` (docs/report.md).

Eight figures test the four claims of Fischer, Dahmen & Helias (SPEC), one module each:

1. :mod:`.fig1_signal_propagation` - q^l and c^l vs layer, ResNet vs feed-forward
   (mean-field lines, simulated points with SE; theory Sec. 3);
2. :mod:`.fig2_response_distance` - response d c^L/d c^k vs layer distance L - k,
   power-law and exponential fits (theory and simulation; Sec. 7);
3. :mod:`.fig3_sensitivity` - S(alpha) for several depths, alpha*, the
   empirical band [0.1, 0.3] and the 1/sqrt(L) rule; simulated S with SE (Secs. 5-6);
4. :mod:`.fig4_alpha_vs_depth` - alpha*(L): numeric argmax, analytic sqrt(T*/L), fitted exponent (Sec. 6);
5. :mod:`.fig5_universality` - alpha* vs sigma_w2 (both blocks), activation and c0 (Sec. 6);
6. :mod:`.fig6_finite_width` - S_N(alpha) theory vs simulation, alpha*(N) (Sec. 4.6);
7. :mod:`.fig7_finite_size` - N (E[Khat] - K) and N Var(Khat) vs N with the theory's M, V (Secs. 4.4-4.5);
8. :mod:`.fig8_universality_map` - alpha*(sigma_w2) per block and parameterisation (Sec. 6.4).

Each figure function takes a :class:`ReportConfig` (:mod:`.config`) and a :class:`TaskRunner`
(:mod:`.tasks`), computes its points as cached tasks (``DIR/cache/<key>.pkl``, written
atomically: a killed run resumes where it stopped), writes ``figN_*.png``
(and ``.pdf``) and ``figN_*.csv`` (:mod:`.output`), and returns a :class:`FigureResult`
(rows = its data table, ``summary`` = the numbers quoted in ``report.md``); its ``verdict_*``
functions word what those numbers say about the claims. Shared statistics are in :mod:`.stats`.
:func:`verdicts` (:mod:`.claims`) joins the figures' verdict parts per claim, and
:func:`run_report` (:mod:`.runner`) runs everything and writes ``report.json`` (summaries and
the verdict on each claim) and ``report.md``.

Dependencies go one way: config <- tasks, stats, output <- figN_* <- claims <- runner.
"""
from __future__ import annotations

from .._storage import ChunkStore, atomic_write_bytes, save_json_atomic  # noqa: F401  (old module namespace)
from ..inputs import two_input_kernel  # noqa: F401
from ..network import ResNet  # noqa: F401
from ..parallel import run_tasks  # noqa: F401
from .claims import verdicts
from .config import BAND, FW_MISSING, ReportConfig, get_config
from .fig1_signal_propagation import figure1_signal_propagation
from .fig2_response_distance import _an, _sens_mf, figure2_response_distance  # noqa: F401
from .fig3_sensitivity import figure3_sensitivity_curves
from .fig4_alpha_vs_depth import figure4_alpha_vs_depth
from .fig5_universality import _opt_spec, _strength, figure5_universality  # noqa: F401
from .fig6_finite_width import figure6_finite_width
from .fig7_finite_size import figure7_finite_size
from .fig8_universality_map import figure8_universality_map
from .output import FigureResult, _clean, _f, _markdown, _save, _training_section, write_table  # noqa: F401
from .runner import FIGURES, run_report
from .stats import (_cv_mean, _quad_argmax, _template_argmax, extrapolate_inv_n, fit_power_exp,  # noqa: F401
                    loglog_slope)
from .tasks import (CACHE_VERSION, TaskRunner, _argmax_scan, _fw_source_hash, _net, _netp,  # noqa: F401
                    _run_task, _sim_seed, finite_width_available, task_key)

__all__ = ["BAND", "CACHE_VERSION", "FIGURES", "FW_MISSING", "FigureResult", "ReportConfig", "TaskRunner",
           "extrapolate_inv_n", "figure1_signal_propagation", "figure2_response_distance",
           "figure3_sensitivity_curves", "figure4_alpha_vs_depth", "figure5_universality", "figure6_finite_width",
           "figure7_finite_size", "figure8_universality_map", "finite_width_available", "fit_power_exp",
           "get_config", "loglog_slope", "run_report", "task_key", "verdicts", "write_table"]
