"""resscale: signal propagation in ResNets with a scaled residual branch.

Core pipeline (docs/theory.md): kernel recursion -> response function ->
finite-width corrections -> optimal alpha, each checked against Monte-Carlo
simulation of finite-width networks.
"""
from .activations import Activation, from_callable, get_activation
from .network import ResNet

__version__ = "0.1.0"

__all__ = ["ResNet", "Activation", "get_activation", "from_callable", "__version__"]
from .kernel_recursion import kernel_recursion, mean_field_kernel, mean_field_mean
from .response import response_function
from .sensitivity import log_sensitivity, sensitivity
from .optimal_alpha import NoInteriorMaximumWarning, OptimalAlphaResult, analytic_alpha, optimal_alpha

__all__ += ["kernel_recursion", "mean_field_kernel", "mean_field_mean", "response_function",
            "sensitivity", "log_sensitivity", "optimal_alpha", "analytic_alpha",
            "OptimalAlphaResult", "NoInteriorMaximumWarning"]
from .simulation import SimulationResult, simulate  # noqa: E402  (issue 3; add to __all__)
