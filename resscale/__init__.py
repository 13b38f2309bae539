"""resscale: signal propagation in ResNets with a scaled residual branch.

Core pipeline (docs/theory.md): kernel recursion -> response function ->
finite-width corrections -> optimal alpha, each checked against Monte-Carlo
simulation of finite-width networks.
"""
from .activations import Activation, from_callable, get_activation
from .network import ResNet

__version__ = "0.1.0"

__all__ = ["ResNet", "Activation", "get_activation", "from_callable", "__version__"]
