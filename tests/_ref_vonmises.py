"""Independent finite-width reference for small depth (tests only; shares no code with resscale).

Exact structure (docs/theory.md Sec. 4.2): conditionally on layer l-1 the N neurons get
i.i.d. Gaussian increments whose covariance is an empirical average over the neurons.
Write neuron i's randomness as a seed omega_i = (u^0_i, e^1_i, ..., e^L_i) of i.i.d.
standard normals; then Khat^L = T(P_N) exactly (in law) for the McKean-Vlasov functional
T of the empirical seed measure Q:

  full         x^l = x^{l-1} + alpha chol(C^l) e^l,  C^l = sw2 E_Q[phi(x^{l-1}) phi(x^{l-1})^T] + sb2
  reduced      x^l = x^{l-1} + alpha phi(chol(Z^l) e^l),  Z^l = sw2 E_Q[x^{l-1} x^{l-1}^T] + sb2
  two_layer    z = chol(Z^l) e1^l,  Sig^l = alpha^2 (sw2 E_Q[phi(z) phi(z)^T] + sb2),  x^l = x^{l-1} + chol(Sig^l) e2^l
               (two seeds per layer: the neuron's hidden unit and its branch output)
  feedforward  x^l = chol(C^l) e^l,  C^l as for the full block
  T(Q) = E_Q[x^L x^L^T],  x^0 = chol(K0) u^0.

For Q_eps = (1 - eps) P + eps delta_omega (P: the Gaussian seed law) the P-part of the
population stays explicit: it is a Gaussian walk (full, feedforward) or a walk with
independent increments (reduced) whose second moments follow the mean-field map with
the mixed drivers, and the tagged particle omega is propagated by hand. The von Mises
expansion of a smooth functional of N i.i.d. seeds gives, to O(1/N),

  N Cov(Khat^L) = Var_omega T1(omega),  N (E Khat^L - K^L) = 1/2 E_omega T2(omega, omega),

T1, T2 = first / second derivative of eps -> T(Q_eps) at 0. Here they are central
differences in eps of the explicit map, and E_omega is randomized quasi-Monte-Carlo
(scrambled Sobol points; the spread over independent scrambles gives a standard error).
Only 2x2 closed-form Gaussian integrals of phi are used (erf arcsine, relu arc-cosine,
linear), written here independently of resscale.activations.
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf, ndtri
from scipy.stats import qmc

# ------------------------------------------------------------------ closed-form Gaussian integrals (P = 2)


def _phi(act, u):
    if act == "erf":
        return erf(u)
    if act == "relu":
        return np.maximum(u, 0.0)
    if act == "linear":
        return u
    raise ValueError(act)


def _G(act, K):
    """E[phi(u) phi(u)^T], u ~ N(0, K), for a batch (..., 2, 2)."""
    a, b, c = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1]
    if act == "linear":
        return K.copy()
    if act == "erf":
        f = lambda x, y, z: (2 / np.pi) * np.arcsin(2 * z / np.sqrt((1 + 2 * x) * (1 + 2 * y)))  # noqa: E731
        gaa, gbb, gab = f(a, a, a), f(b, b, b), f(a, b, c)
    elif act == "relu":
        r = np.sqrt(a * b)
        cos = np.clip(c / r, -1.0, 1.0)
        th = np.arccos(cos)
        gab = r / (2 * np.pi) * (np.sin(th) + (np.pi - th) * cos)
        gaa, gbb = a / 2, b / 2
    else:
        raise ValueError(act)
    return np.stack([np.stack([gaa, gab], -1), np.stack([gab, gbb], -1)], -2)


def _mu(act, K):
    """E[phi(u)], u ~ N(0, K), (..., 2)."""
    d = np.stack([K[..., 0, 0], K[..., 1, 1]], -1)
    if act == "relu":
        return np.sqrt(d / (2 * np.pi))
    return np.zeros_like(d)


def _chol(C):
    l11 = np.sqrt(C[..., 0, 0])
    l21 = C[..., 1, 0] / l11
    l22 = np.sqrt(np.maximum(C[..., 1, 1] - l21 * l21, 0.0))
    z = np.zeros_like(l11)
    return np.stack([np.stack([l11, z], -1), np.stack([l21, l22], -1)], -2)


def _outer(x):
    return x[..., :, None] * x[..., None, :]


def _mv(A, x):
    return np.einsum("...ij,...j->...i", A, x)


# ------------------------------------------------------------------ the functional T(Q_eps)


def functional(block, act, alpha, sw2, sb2, K0, seeds, eps):
    """T(Q_eps) for every seed (S, 2(L+1)): returns (T, kappa_P) each (S, 2, 2)."""
    S = seeds.shape[0]
    L = (seeds.shape[1] - 2) // (4 if block == "two_layer" else 2)
    x = _mv(np.linalg.cholesky(K0), seeds[:, :2])
    kap = np.broadcast_to(K0, (S, 2, 2)).copy()
    m = np.zeros((S, 2))
    for l in range(1, L + 1):
        e = seeds[:, 2 * l:2 * l + 2] if block != "two_layer" else None
        if block in ("full", "feedforward"):
            D = (1 - eps) * _G(act, kap) + eps * _outer(_phi(act, x))
            C = sw2 * D + sb2
            step = _mv(_chol(C), e)
            if block == "full":
                x = x + alpha * step
                kap = kap + alpha ** 2 * C
            else:
                x = step
                kap = C
        elif block == "two_layer":  # seeds per layer: e1 (hidden unit z), e2 (branch output d)
            e1, e2 = seeds[:, 2 + 4 * (l - 1):4 + 4 * (l - 1)], seeds[:, 4 + 4 * (l - 1):6 + 4 * (l - 1)]
            Z = sw2 * ((1 - eps) * kap + eps * _outer(x)) + sb2
            z = _mv(_chol(Z), e1)
            Sig = alpha ** 2 * (sw2 * ((1 - eps) * _G(act, Z) + eps * _outer(_phi(act, z))) + sb2)
            x = x + _mv(_chol(Sig), e2)
            kap = kap + Sig
        elif block == "reduced":
            Z = sw2 * ((1 - eps) * kap + eps * _outer(x)) + sb2
            z = _mv(_chol(Z), e)
            mu = _mu(act, Z)
            x = x + alpha * _phi(act, z)
            kap = kap + alpha * (_outer2(m, mu) + _outer2(mu, m)) + alpha ** 2 * _G(act, Z)
            m = m + alpha * mu
        else:
            raise ValueError(block)
    return (1 - eps) * kap + eps * _outer(x), kap


def _outer2(a, b):
    return a[..., :, None] * b[..., None, :]


def seeds_rqmc(L, log2n, rep, seed=0, per_layer=2):
    """Scrambled Sobol points (2^log2n, 2 + per_layer L) mapped to standard normals (scramble ``rep``)."""
    sob = qmc.Sobol(d=2 + per_layer * L, scramble=True, seed=np.random.default_rng([seed, rep]))
    u = sob.random_base2(log2n)
    return ndtri(np.clip(u, 1e-15, 1 - 1e-15))


def reference(block, act, L, alpha, sw2, sb2, K0, log2n=15, reps=8, eta=1e-4, seed=0):
    """(M, M_se, V, V_se): the O(1/N) mean shift and N Cov of Khat^L with standard errors.

    M uses the exact zero-mean control variate kappa_P'(omega) (E_omega d kappa_P / d eps = 0,
    a linear functional of f(x^l) - E f(x^l) along the unperturbed walk).
    """
    K0 = np.asarray(K0, dtype=float)
    Ms, Vs = [], []
    for r in range(reps):
        w = seeds_rqmc(L, log2n, r, seed, per_layer=4 if block == "two_layer" else 2)
        Tp, kp = functional(block, act, alpha, sw2, sb2, K0, w, eta)
        T0, _ = functional(block, act, alpha, sw2, sb2, K0, w, 0.0)
        Tm, km = functional(block, act, alpha, sw2, sb2, K0, w, -eta)
        T2 = (Tp - 2 * T0 + Tm) / eta ** 2
        dk = (kp - km) / (2 * eta)
        Ms.append(0.5 * (T2 + 2 * dk).mean(0))
        T1 = (Tp - Tm) / (2 * eta)
        Vs.append(np.einsum("sab,scd->abcd", T1, T1) / T1.shape[0])
    Ms, Vs = np.array(Ms), np.array(Vs)
    se = lambda a: a.std(0, ddof=1) / np.sqrt(reps)  # noqa: E731
    return Ms.mean(0), se(Ms), Vs.mean(0), se(Vs)
