import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def sqrtm_psd(C):
    """Symmetric square root of a (batch of) PSD matrices (negative rounding eigenvalues clipped)."""
    lam, U = np.linalg.eigh(C)
    return (U * np.sqrt(np.maximum(lam, 0.0))[..., None, :]) @ np.swapaxes(U, -1, -2)


def simulate_inline(net, K0, width, n_networks, seed=0):
    """Tiny independent reference simulator of the SPEC family (tests only).

    h^0_i ~ N(0, K0) i.i.d. over neurons; returns Khat^L for each network (S, P, P).
    """
    rng = np.random.default_rng(seed)
    P = K0.shape[0]
    w, V = np.linalg.eigh(K0)
    root = V * np.sqrt(np.clip(w, 0, None))
    out = np.empty((n_networks, P, P))
    phi = net.phi.fn
    for s in range(n_networks):
        h = rng.standard_normal((width, P)) @ root.T
        for _ in range(net.depth):
            W = rng.standard_normal((width, width)) * np.sqrt(net.sigma_w2 / width)
            b = rng.standard_normal((width, 1)) * np.sqrt(net.sigma_b2)
            if net.block == "full":
                h = h + net.alpha * (W @ phi(h) + b)
            elif net.block == "reduced":
                h = h + net.alpha * phi(W @ h + b)
            else:
                h = W @ phi(h) + b
        out[s] = h.T @ h / width
    return out
