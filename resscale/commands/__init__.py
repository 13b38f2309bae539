"""CLI sub-commands, one module each; each defines ``register(app: typer.Typer)``.

:mod:`resscale.cli` imports the modules listed in ``COMMANDS`` and calls their
``register``; a module whose optional dependencies are missing still registers
its command, and fails with a clear message only when the command runs.
"""
COMMANDS = ("optimal", "kernel", "simulate", "finite", "report", "train")
