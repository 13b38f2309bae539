"""Sizes of every sweep of the study: :class:`ReportConfig` and the presets of :func:`get_config`.

Shared by all figures (docs/theory.md: the reference network of Sec. 1, erf activation, full block).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

BAND = (0.1, 0.3)
FW_MISSING = "finite-width theory not available"


@dataclass(frozen=True)
class ReportConfig:
    """Sizes of every sweep. :func:`get_config` gives the "full", "quick" and "tiny" presets."""

    mode: str = "full"
    activation: str = "erf"          # the reference network: erf, full block, sigma_w2 = 1, sigma_b2 = 0
    c0: float = 0.9
    q0: float = 1.0
    # fig 1
    f1_depth: int = 100
    f1_alphas: tuple = (0.1, 0.3, 1.0)
    f1_ff_sigma_w2: float = 1.0
    f1_width: int = 512
    f1_networks: int = 400
    # fig 2
    f2_alpha: float = 0.5
    f2_max_distance: int = 10000
    f2_sim_distances: tuple = (1, 3, 10, 30, 100, 300)
    f2_width: int = 256
    f2_networks: int = 400
    # fig 3
    f3_depths: tuple = (10, 30, 100, 300, 1000)
    f3_n_alpha: int = 300
    f3_sim_depth: int = 100
    f3_sim_factors: tuple = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)   # simulated alphas = factor * alpha*(sim depth)
    f3_sim_width: int = 512
    f3_sim_networks: int = 1000
    # fig 4
    f4_depths: tuple = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
    f4_fit_min_depth: int = 100
    f4_settings: tuple = ("erf-full", "erf-reduced", "tanh-full")
    f4_grid: int = 40                 # scan points for quadrature activations (tanh)
    # fig 5
    f5_depth: int = 100
    f5_sigma_w2s: tuple = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    f5_activations: tuple = ("erf", "tanh", "relu", "gelu")
    f5_c0s: tuple = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
    f5_grid: int = 40                 # scan points for the quadrature activations (gelu)
    # fig 8: universality map (issue 13; resscale.universality)
    f8_depth: int = 100
    f8_blocks: tuple = ("full", "reduced", "two_layer")
    f8_sigma_b2s: tuple = (0.0, 0.1)
    f8_sigma_w2s: tuple = tuple(0.25 * 2 ** (k / 4) for k in range(25))       # 0.25 .. 16, factor 2^(1/4)
    f8_robust_sigma_w2s: tuple = tuple(0.25 * 2 ** (k / 2) for k in range(13))  # coarser, for the variants
    f8_depths: tuple = (30, 1000)      # variants: other depths,
    f8_activations: tuple = ("tanh", "relu")  # other activations (erf is the main map; gelu: too slow here),
    f8_c0s: tuple = (0.5, 0.99)        # other input correlations
    f8_grid: int = 100                 # scan points of each optimal_alpha
    # fig 6
    f6_depth: int = 100
    f6_widths: tuple = (32, 128, 512)
    f6_factors: tuple = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0)
    f6_networks: tuple = (4000, 2000, 1000)   # per width
    f6_theory_points: int = 16
    f6_opt_networks: tuple = (65536, 16384, 4096)   # per width: the CRN estimator of alpha*(N) - alpha*_inf
    f6_opt_n_alpha: int = 9                          # its grid: n_alpha alphas in [1 - rel, 1 + rel] alpha*_inf
    f6_opt_rel: float = 0.1
    # fig 7
    f7_depth: int = 20
    f7_alpha: float = 0.5
    f7_c0: float = 0.5
    f7_widths: tuple = (16, 32, 64, 128, 256)
    f7_networks: int = 40000
    f7_chunk: int = 5000
    seed: int = 2024
    pdf: bool = True
    dpi: int = 110

    def to_dict(self):
        return asdict(self)


def get_config(mode: str = "full", **overrides) -> ReportConfig:
    """Preset sizes: ``full`` (resumable, ~1 h on 2 cores), ``quick`` (~ minutes), ``tiny`` (tests)."""
    if mode == "full":
        cfg = ReportConfig()
    elif mode == "quick":
        cfg = ReportConfig(
            mode="quick", f1_depth=30, f1_alphas=(0.1, 0.3, 1.0), f1_width=256, f1_networks=100,
            f2_max_distance=3000, f2_sim_distances=(1, 4, 16, 64), f2_width=128, f2_networks=150,
            f3_n_alpha=200, f3_sim_depth=30, f3_sim_width=256, f3_sim_networks=200,
            f4_depths=(10, 30, 100, 300, 1000, 3000), f4_settings=("erf-full", "erf-reduced"),
            f5_depth=100, f5_sigma_w2s=(0.25, 1.0, 4.0, 16.0), f5_c0s=(0.5, 0.7, 0.8, 0.9, 0.99, 1.0),
            f5_grid=16,
            f6_depth=30, f6_factors=(0.35, 0.6, 1.0, 1.7), f6_networks=(1200, 400, 150), f6_theory_points=10,
            f6_opt_networks=(16384, 4096, 1024),
            f7_depth=10, f7_widths=(16, 32, 64, 128), f7_networks=4000, f7_chunk=2000,
            f8_sigma_w2s=tuple(0.25 * 2 ** (k / 2) for k in range(13)), f8_activations=("relu",),
            pdf=True, dpi=90)
    elif mode == "tiny":
        cfg = ReportConfig(
            mode="tiny", f1_depth=4, f1_alphas=(0.3, 1.0), f1_width=16, f1_networks=20,
            f2_max_distance=60, f2_sim_distances=(1, 3), f2_width=16, f2_networks=20,
            f3_depths=(10, 30), f3_n_alpha=40, f3_sim_depth=5, f3_sim_factors=(0.5, 1.0, 2.0),
            f3_sim_width=16, f3_sim_networks=20,
            f4_depths=(10, 30, 100), f4_fit_min_depth=10, f4_settings=("erf-full",),
            f5_depth=10, f5_sigma_w2s=(0.5, 2.0), f5_activations=("erf", "relu"), f5_c0s=(0.5, 0.9),
            f5_grid=12,
            f6_depth=3, f6_widths=(8, 16), f6_factors=(0.5, 1.0, 2.0), f6_networks=(20, 20), f6_theory_points=5,
            f6_opt_networks=(64, 32), f6_opt_n_alpha=5,
            f7_depth=2, f7_widths=(8, 16), f7_networks=40, f7_chunk=20,
            f8_depth=10, f8_blocks=("full", "two_layer"), f8_sigma_b2s=(0.0,), f8_sigma_w2s=(0.5, 1.0, 2.0, 4.0),
            f8_robust_sigma_w2s=(0.5, 2.0), f8_depths=(20,), f8_activations=(), f8_c0s=(), f8_grid=24,
            pdf=False, dpi=50)
    else:
        raise ValueError(f"mode must be 'full', 'quick' or 'tiny', got {mode!r}")
    return replace(cfg, **overrides) if overrides else cfg
