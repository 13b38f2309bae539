"""Matplotlib figures shared by the CLI and the report (Agg backend, no display needed)."""
from __future__ import annotations

import math
import os
import uuid

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path, dpi=130, bbox_inches="tight"):
    """Write a figure atomically and close it.

    The figure goes to a temporary file with a unique name in the target
    directory (``.<name>.<pid>.<random>.tmp<ext>``: two writers of the same
    path never share a temporary file), which then replaces ``path`` with
    :func:`os.replace`; a reader sees the old file or the complete new one.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    ext = os.path.splitext(name)[1]
    fmt = ext[1:].lower() or None
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp{ext}")
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches=bbox_inches, format=fmt)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):  # savefig or os.replace failed: no stray temporary file
            try:
                os.unlink(tmp)
            except OSError:  # pragma: no cover
                pass
    return path


def plot_sensitivity(result, net, c0, q0, path, band=(0.1, 0.3)):
    """S(alpha) on log axes with alpha* (numeric and analytic) and the empirical band marked."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.semilogx(result.alphas, result.sensitivities, color="C0", lw=2, label="S(alpha), mean field"
                if result.width is None else f"S_N(alpha), N = {result.width}")
    if band:
        ax.axvspan(*band, color="0.85", zorder=0, label=f"empirical band {band[0]}-{band[1]}")
    ax.axvline(1.0 / math.sqrt(net.depth), color="C2", ls=":", label=r"$1/\sqrt{L}$")
    if result.interior:
        ax.axvline(result.alpha, color="C3", ls="--", label=f"alpha* = {result.alpha:.3g}")
    if math.isfinite(result.alpha_analytic):
        ax.axvline(result.alpha_analytic, color="C1", ls="-.",
                   label=f"analytic alpha* = {result.alpha_analytic:.3g}")
    ax.set_xlabel("residual scaling alpha")
    ax.set_ylabel(r"sensitivity $S = dc^L/dc^0$")
    ax.set_title(f"{net.block} block, {net.phi.name}, L = {net.depth}, sigma_w2 = {net.sigma_w2:g}, "
                 f"c0 = {c0:g}, q0 = {q0:g}", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
