"""Typer options shared by the sub-commands (one definition of each network parameter)."""
from __future__ import annotations

import json
import sys

import typer

from ..network import ResNet


def _hide_flag_placeholder() -> None:
    """Show boolean flags (``--json``, ``--no-progress``, ``--help``) without a ``<bool>`` value placeholder.

    Typer's Rich help prints the type of every option, also of flags that take no
    value, which reads as if ``--json <bool>`` needed an argument. Flags with an
    explicit ``metavar`` keep it. Applied once, when the sub-commands import this module.
    """
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - other Typer layout: leave its help as it is
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_resscale_flag_patch", False):
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) and self.metavar is None and not getattr(self, "count", False):
            return None
        return original(self, ctx)

    display_type_rich._resscale_flag_patch = True
    TyperOption.display_type_rich = display_type_rich


_hide_flag_placeholder()

Depth = typer.Option(100, "--depth", "-L", help="Number of residual blocks L.")
Alpha = typer.Option(0.1, "--alpha", help="Residual scaling alpha.")
SigmaW2 = typer.Option(1.0, "--sigma-w2", help="Block weight variance (W ~ N(0, sigma_w2/N)).")
SigmaB2 = typer.Option(0.0, "--sigma-b2", help="Block bias variance.")
SigmaIn2 = typer.Option(1.0, "--sigma-in2", help="Input-layer weight variance (W0 ~ N(0, sigma_in2/d)).")
SigmaBin2 = typer.Option(0.0, "--sigma-bin2", help="Input-layer bias variance.")
ActivationOpt = typer.Option("erf", "--activation", "-a", help="erf | tanh | relu | linear | gelu.")
Block = typer.Option("full", "--block", "-b", help="full | reduced | two_layer | feedforward.")
C0 = typer.Option(0.9, "--c0", help="Input correlation c0 in [-1, 1].")
Q0 = typer.Option(1.0, "--q0", help="Input norm q0 > 0 (kernel diagonal at layer 0).")
Json = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def make_net(depth, alpha, sigma_w2, sigma_b2, sigma_in2, sigma_bin2, activation, block) -> ResNet:
    """Build a ResNet, turning a validation error into a clean CLI error (exit code 2)."""
    try:
        return ResNet(depth=depth, alpha=alpha, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                      sigma_in2=sigma_in2, sigma_bin2=sigma_bin2, activation=activation, block=block)
    except ValueError as exc:
        fail(str(exc))


def fail(message: str):
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=2)


def _json_safe(obj):
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def print_json(obj) -> None:
    """JSON on stdout; NaN/inf become null (bare NaN is not valid JSON)."""
    json.dump(_json_safe(obj), sys.stdout, indent=2, default=str, allow_nan=False)
    sys.stdout.write("\n")
