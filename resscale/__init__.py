"""resscale: signal propagation in ResNets with a scaled residual branch.

Core pipeline (docs/theory.md): kernel recursion -> response function ->
finite-width corrections -> optimal alpha, each checked against Monte-Carlo
simulation of finite-width networks. Thin layers on top: simulation,
training validation, report, CLI. torch is imported only where it is used.
"""
from .activations import Activation, from_callable, get_activation
from .network import ResNet
from .kernel_recursion import kernel_recursion, mean_field_kernel, mean_field_mean
from .response import response_function
from .sensitivity import log_sensitivity, sensitivity
from .optimal_alpha import NoInteriorMaximumWarning, OptimalAlphaResult, analytic_alpha, optimal_alpha
from .data_sensitivity import DataSensitivity, data_sensitivity  # noqa: F401 (issue 11)
from .finite_width import FiniteWidthResult, finite_width, sensitivity_finite_width
from .simulation import SimulationResult, simulate
from .training import TrainConfig, build_model, data_kernel_stats, load_dataset, run_sweep, train_run

__version__ = "0.1.0"

__all__ = [
    "ResNet", "Activation", "get_activation", "from_callable",
    "kernel_recursion", "mean_field_kernel", "mean_field_mean", "response_function",
    "sensitivity", "log_sensitivity", "optimal_alpha", "analytic_alpha",
    "OptimalAlphaResult", "NoInteriorMaximumWarning",
    "finite_width", "FiniteWidthResult", "sensitivity_finite_width",
    "simulate", "SimulationResult",
    "TrainConfig", "build_model", "data_kernel_stats", "load_dataset", "run_sweep", "train_run",
    "__version__",
]
