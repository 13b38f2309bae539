"""Command-line interface (Typer): ``resscale --help``.

The sub-commands live in :mod:`resscale.commands` (one module each).
"""
from __future__ import annotations

import importlib

import typer

from .commands import COMMANDS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Signal propagation in ResNets with a scaled residual branch.")

for _name in COMMANDS:
    try:
        _mod = importlib.import_module(f"resscale.commands.{_name}")
    except ModuleNotFoundError as _exc:  # a command module not written yet
        if _exc.name != f"resscale.commands.{_name}":
            raise
        continue
    _mod.register(app)


def main():  # pragma: no cover
    app()
