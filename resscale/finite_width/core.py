"""finite_width(): V, M and K^L of the output kernel for every block (docs/theory.md Sec. 4, Eq. 4.1-4.2)."""
from __future__ import annotations

import numpy as np

from ..inputs import check_choice, check_int, check_memory, input_kernel
from ..inputs import check_finite_result
from .full import _full_or_ff
from .interpolated import full_block_interpolated  # Sec. 4.9, Eq. 4.61-4.65
from .reduced import reduced_block_theory  # Sec. 4.8, Eq. 4.40-4.52
from .next_order import check_cost, check_next_order, next_order_theory  # Sec. 4.12
from .full_next_order import check_full_cost, full_next_order, phi_key  # Sec. 4.12.5
from .result import FiniteWidthResult
from .two_layer import two_layer_block_theory  # Sec. 4.11, Eq. 4.70-4.75

# the finite-width engine of each block (resscale.blocks): the per-neuron walk (full), fresh
# noise per layer (feedforward), closed linear-noise recursions (reduced, two_layer)
EXACT_THEORY = {"full": _full_or_ff, "feedforward": _full_or_ff, "reduced": reduced_block_theory,
                "two_layer": two_layer_block_theory}


METHODS = ("auto", "exact", "interpolated")
EXACT_MAX_DEPTH = 64      # method="auto": exact layer sums up to this depth, interpolated beyond


def _check_width(width, required=False):
    if width is None and required:
        raise ValueError("width is required (an integer >= 1)")
    return check_int("width", width, lo=1, allow_none=True)


def resolve_method(net, method):
    """The path ``finite_width`` takes: "exact" (every layer pair) or "interpolated" (node layers,
    full block only, Sec. 4.9). ``auto``: interpolated for the full block deeper than
    EXACT_MAX_DEPTH, exact otherwise (feed-forward and reduced blocks are O(L) already)."""
    method = check_choice("method", method, METHODS)
    if method == "interpolated" and net.block != "full":
        raise ValueError(f"method='interpolated' exists for block='full' only (got block={net.block!r}); "
                         "the reduced, two_layer and feed-forward theories are O(L) on the exact path")
    if method == "auto":
        method = "interpolated" if (net.block == "full" and net.depth > EXACT_MAX_DEPTH) else "exact"
    return method


def estimate_memory(net, P, method, mean_shift=True, n_nodes=32):
    """Rough peak memory in bytes of :func:`finite_width` (measured: full block, P = 2, exact
    L = 1000: 8.6 GB; interpolated L = 10^4: < 0.1 GB)."""
    L, P2 = net.depth, P * P
    if method == "exact" and net.block == "full":
        return 150.0 * L * L * (2 * P2 * P2 + 25)
    if method != "interpolated":
        n = 2 * (int(n_nodes) + 8)
        per_pair = P2 * P2 * (3 + (P2 if mean_shift else 0))
        return 8.0 * (12 * L * P2 * P2 + 3 * n * n / 2 * per_pair) + 2e7
    # interpolated (docs/theory.md Sec. 4.10): symmetric-pair coordinates Q = P(P+1)/2; V (Q, Q) per layer
    # and per V node pair, M in (Q, 3, 3) pair blocks; quadrature work arrays of fixed size.
    from .interpolated import default_v_nodes
    Q = P * (P + 1) // 2
    n = 2 * (int(n_nodes) + 8)
    nv = n if P <= 3 else default_v_nodes(n_nodes, P) + 8
    words = 10 * L * Q * Q + 2.5 * nv * nv * Q * Q + (L * P2 * P2 if P <= 4 else 0)
    if mean_shift:
        words += 12 * 9 * L * Q + 9 * n * n * Q
    return 8.0 * words + 1.5e8


def finite_width(net, width=None, X=None, K0=None, mean_shift=True, n_r=12, n_t=8, method="auto",
                 n_nodes=32, order=1, next_order_samples=None, next_order_seed=0) -> FiniteWidthResult:
    """1/N theory of the output kernel: K^L, M^L and V^L (docs/theory.md Sec. 4).

    Parameters
    ----------
    net : ResNet (block "full", "reduced", "two_layer" or "feedforward")
    width : int >= 1, optional
        Network width N (only used by the convenience properties
        ``expected_kernel`` / ``kernel_covariance``; M and V are N-independent).
    X, K0 : data (P, d) or layer-0 kernel (P, P); exactly one.
    mean_shift : bool
        Also compute M (costlier than V for the full block). With ``False`` the result's
        ``mean_shift`` is None (and ``expected_kernel`` raises ValueError).
    n_r, n_t : radial / angular quadrature orders of the outer integrals
        (docs/theory.md Sec. 4.6; defaults give relative accuracy ~1e-4; at most 30, above
        which the same-layer rule (3 n_r outer nodes) loses precision).
    method : "auto" | "exact" | "interpolated"
        "exact": every layer pair (O(L^2) time and memory, the reference); "interpolated"
        (full block): walk tables at ~2 (n_nodes + 6) node layers, layer sums by spline
        interpolation (Sec. 4.9; O(L) memory; measured deviation from exact <= 2e-4 relative,
        its own estimate in ``extras["interp_error"]``). "auto": interpolated for the full
        block deeper than 64 layers.
    n_nodes : int, node layers of the interpolated path (more: more accurate, cost ~ n_nodes^2).
    order : 1 (default, the leading 1/N theory) | 2 (also the next order, Sec. 4.12: V1 and M2,
        ``covariance_correction`` / ``mean_shift2``; blocks "two_layer" and "reduced"; P > 4 through
        C(P, 4) four-input sub-kernels, Eq. 4.98, refused with a cost estimate above
        ``next_order.MAX_SECONDS``) | "resummed" (order 2 plus the non-perturbative moment-closure
        prediction of Sec. 4.12.3, ``resummed_covariance`` / ``resummed_mean``, P <= 3).
        Block "full" (erf, tanh, gelu, linear, a smooth callable, and relu with its kink terms, Sec. 4.12.6): V1, M2 from the fourth-order von
        Mises expansion integrated by randomized quasi-Monte-Carlo (Sec. 4.12.5, Eq. 4.107-4.109);
        their integration standard errors are in ``extras["next_order_se"]``, and the leading order
        re-integrated from the same seeds (a check against V, M) in ``extras["next_order_check"]``.
    next_order_samples : int (power of 2), seed pairs per Sobol scramble for the full block's order 2
        (default 2^12 x 16 scrambles; the SE falls like 1/sqrt(samples)). next_order_seed : its seed.

    Returns
    -------
    FiniteWidthResult with ``kernel`` K^L, ``mean_shift`` M^L (Eq. 4.1),
    ``covariance`` V^L (Eq. 4.2) and ``covariance_independent`` (Eq. 4.11). Never inf/NaN:
    a result that overflows float64 (X entries ~1e150, sigma_w2 / sigma_b2 / alpha ~1e16 and
    above) raises OverflowError naming the parameter(s) that set the scale.
    """
    width = _check_width(width)
    order = check_next_order(net, order, resummed=True, full=True)
    K0 = input_kernel(net, X=X, K0=K0)
    n_r = check_int("n_r", n_r, lo=4, hi=30)
    n_t = check_int("n_t", n_t, lo=2, hi=64)
    n_nodes = check_int("n_nodes", n_nodes, lo=8, hi=512)
    if not isinstance(mean_shift, (bool, np.bool_)):
        raise TypeError(f"mean_shift must be a bool, got {mean_shift!r}")
    if not net.phi.supports_finite_width:
        raise ValueError(f"activation {net.phi.name!r} has kinks (phi'' is a delta function) that the "
                         "finite-width theory cannot integrate from a callable; use the built-in 'relu' "
                         "or declare a smooth phi (see resscale.activations.from_callable)")
    method = resolve_method(net, method)
    P = K0.shape[0]
    if order != 1 and net.block == "full":   # Sec. 4.12.5: cost of the von Mises integration
        check_full_cost(P, net.depth, next_order_samples, activation=phi_key(net))
    elif order != 1:   # Sec. 4.12: cost of the next-order recursion (Eq. 4.98)
        check_cost(P, net.depth, what="K0" if X is None else "X")
    check_memory("depth or P (number of inputs); or use method='interpolated'",
                 estimate_memory(net, P, method, mean_shift, n_nodes), f"finite_width(method={method!r})")
    try:
        if method == "interpolated":
            out = full_block_interpolated(net, K0, compute_mean=mean_shift, n_nodes=n_nodes, n_r=n_r, n_t=n_t)
        else:
            out = EXACT_THEORY[net.block](net, K0, compute_mean=mean_shift, n_r=n_r, n_t=n_t)
    except OverflowError as exc:  # Python float arithmetic (alpha ** 4 at alpha ~1e100): name the parameters
        if "net" in str(exc) or "K0" in str(exc):
            raise
        check_finite_result("finite_width", {"the theory": np.inf}, net=net, K0=K0,
                            kernel_name="K0" if X is None else "X", advice=f" ({exc})")
    M = out.get("M") if mean_shift else None   # mean_shift=False: M not computed, None (documented)
    # no inf/NaN without an error (issue 12): huge X / K0 or variances overflow the four-point functions
    V_ind = out["V_ind"]   # all-NaN by design where there is no independent closure (reduced, two_layer)
    check_finite_result("finite_width", {"K^L": out["Ks"][-1], "M": M, "V": out["V"],
                                         "V_ind": None if np.all(np.isnan(V_ind)) else V_ind},
                        net=net, K0=K0, kernel_name="K0" if X is None else "X")
    res = {}
    if order == "resummed":   # Sec. 4.12.3 (first: its refusals are cheap)
        from .resummed import resummed_theory
        res = resummed_theory(net, K0, width, n_r=n_r, n_t=n_t)
    if order != 1 and net.block == "full":   # Sec. 4.12.5 (exact V, M as control variates)
        nxt = full_next_order(net, K0, V=out["V"], M=M, n_samples=next_order_samples, seed=next_order_seed)
        out["next_order_se"] = dict(V1=nxt["V1_se"], M2=nxt["M2_se"], n_pairs=nxt["n_pairs"])
        out["next_order_check"] = dict(V_mc=nxt["V_mc"], V_mc_se=nxt["V_mc_se"], M_mc=nxt["M_mc"],
                                       M_mc_se=nxt["M_mc_se"])
    else:
        nxt = next_order_theory(net, K0, n_r=n_r, n_t=n_t) if order != 1 else {}   # Sec. 4.12
    return FiniteWidthResult(net=net, K0=K0, kernel=out["Ks"][-1], mean_shift=M,
                             covariance=out["V"], covariance_independent=out["V_ind"], width=width,
                             order=order, covariance_correction=nxt.get("V1"), mean_shift2=nxt.get("M2"),
                             resummed_covariance=res.get("cov"), resummed_mean=res.get("mean"),
                             extras={"method": method, **{k: v for k, v in out.items() if k not in ("V", "V_ind", "M")}})
