"""Training validation: does the theory's alpha* predict the residual scaling that trains best?

See docs/training.md. Pieces (torch is optional: it is imported inside functions):

* :func:`build_model` -- an MLP-ResNet of exactly the SPEC family (input layer,
  ``depth`` blocks ``full`` / ``reduced`` / ``two_layer`` / ``feedforward`` with scaling alpha,
  linear readout), initialised with the SPEC variances of a :class:`ResNet`.
* :func:`train_run` -- train one (depth, alpha, seed) on a dataset of
  :mod:`resscale.datasets`; returns a JSON-friendly record.
* :func:`data_kernel_stats` -- q0 and c0 of the data through the input layer.
* :func:`theory_for_depth` -- alpha*, the sensitivity curve S(alpha) and the
  high-sensitivity band for the data's (c0, q0).
* :func:`run_sweep` -- the sweep over depths x alphas x seeds: Rich progress,
  resumable (one JSON per finished run under ``out/runs/``, written atomically),
  parallel across processes; writes ``results.json``, ``summary.md`` and
  ``accuracy_vs_alpha.png``.

Modules: :mod:`resscale.training_run` (model, config, one run), :mod:`resscale.training_theory`
(data statistics, alpha* and the band), :mod:`resscale.training_sweep` (sweep, resume, summary,
plot); this module re-exports their names.
"""
from __future__ import annotations

# re-exported: resscale.training.<name> keeps working for all of these
from .datasets import check_dataset_name, load_dataset  # noqa: F401
from .training_run import (  # noqa: F401
    OPTIMIZERS, READOUTS, TORCH_ACTIVATIONS, TrainConfig, _evaluate, _finite_or_none, _model_class, _torch,
    build_model, resolve_device, torch_activation, train_run)
from .training_sweep import (  # noqa: F401
    _atomic_write_json, _best_n, _interp_S, _job_path, _run_job, _versions, _worker_init, format_mean_spread,
    format_summary_markdown, parse_alphas, parse_ints, plot_results, run_sweep, summarize)
from .training_theory import (  # noqa: F401
    BAND_LEVEL, C0_PAIRS, _log_sensitivity_curve, data_kernel_stats, theory_for_depth)
