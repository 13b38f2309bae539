"""Fast 1/N theory of the FULL block at large depth: layer-pair sums from node layers
(docs/theory.md Sec. 4.9, Eq. 4.61-4.65).

The exact path (:mod:`.full`) evaluates the four-point functions of the Gaussian walk
Cov(f(h^k), f(h^m)) for all L(L-1)/2 layer pairs and stores them: O(L^2) time and memory.
Every layer-pair table, and every partial sum built from it, is a smooth function of the
layer indices (the walk's kernels K^l change by O(alpha^2) per layer), so

    V_cross = sum_{k<m} A_k C(k, m) A_m^T = sum_k A_k R(k),   R(k) = sum_{m>k} C(k, m) A_m^T   (Eq. 4.61)

is computed with R(k) known exactly at node rows k_i (the sum over m taken over every layer
with C(k_i, .) spline-interpolated from node columns and the exact propagators A_m) and
R interpolated in k. The mean shift needs the column sums

    X(l) = sum_{k<l} B^{l,k} C(k, l)          (walk cross term of the Sigma update, Eq. 4.62)
    self(l) = a2sw2/2 sum_{k<l} R2(k, l) : Xi^{l,k}   (self-interaction, Eq. 4.17, 4.63)

with the propagators accumulated backwards in k for each node column (B^{l,k-1} = B^{l,k} T^k,
Xi^{l,k-1} = I + s J^k + (Xi^{l,k} - I) T^k, Eq. 4.64), so nothing O(L^2) is stored.
The remaining recursions (Sigma, E k2) are O(L). Quadrature: O(n^2) node pairs, n ~ 60;
memory O(L P^4).

Nodes are placed uniformly in a coordinate u(l) that advances with the change of the
kernel (log-diagonal and correlations) plus a uniform share, every node l together with
l + 1 (so that column sums end at k = l - 1 on a node), the first ``n_dense`` layers all.
Interpolation: cubic splines in u. Error estimate (``extras["interp_error"]``): the same
assembly on the nested half set of nodes, max |fine - coarse| / max |fine| per quantity
(an over-estimate of the fine error for a fourth-order rule).
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import make_interp_spline

from ..kernel_recursion import mean_field_kernel
from .full import _covariance_tables, _d2f_mean
from .linalg import _outer_hh, _sym_pairs, curvature_batch, jac_G_batch
from .walk_integrals import _PairIntegrals

__all__ = ["full_block_interpolated", "choose_nodes"]


def _spline(x, y, xe):
    """Cubic (or lower, for few nodes) interpolating spline of y (n, ...) at x (n,), evaluated at xe."""
    n = len(x)
    if n == 1:
        return np.broadcast_to(y[0], (len(xe),) + y.shape[1:]).copy()
    k = min(3, n - 1)
    return make_interp_spline(x, y, k=k, axis=0)(xe)


def kernel_coordinate(Ks, uniform_share=0.3):
    """u(l) in [0, 1], l = 0..L: advances with |d log K_aa| + |d c_ab| per layer plus a uniform share."""
    L = Ks.shape[0] - 1
    d = np.diagonal(Ks, axis1=1, axis2=2)
    c = Ks / np.sqrt(d[:, :, None] * d[:, None, :])
    step = np.max(np.abs(np.diff(np.log(d), axis=0)), axis=1) + np.max(np.abs(np.diff(c, axis=0)), axis=(1, 2))
    u = np.concatenate([[0.0], np.cumsum(step)])
    u = u / u[-1] if u[-1] > 0 else np.linspace(0.0, 1.0, L + 1)
    return (1 - uniform_share) * u + uniform_share * np.arange(L + 1) / L


def choose_nodes(Ks, n_nodes=32, n_dense=6):
    """Node layers (sorted, in [0, L]) and the nested coarse subset (for the error estimate).

    Base nodes: layers 0..n_dense-1 and ``n_nodes`` layers uniform in u (incl. L-1); each
    base node l brings l+1; L is always a node.
    """
    L = Ks.shape[0] - 1
    u = kernel_coordinate(Ks)
    targets = np.linspace(0.0, u[L - 1], int(n_nodes))
    base = np.unique(np.concatenate([np.arange(min(n_dense, L)),
                                     np.clip(np.searchsorted(u, targets), 0, L - 1), [max(L - 2, 0), L - 1]]))
    coarse_base = np.unique(np.concatenate([base[base < n_dense], base[base >= n_dense][::2], [max(L - 2, 0), L - 1]]))

    def close(b):
        return np.unique(np.concatenate([b, np.minimum(b + 1, L), [L]]))
    return close(base), close(coarse_base), u


def _self_weights(P):
    """Index map of the self-interaction (Eq. 4.17): for each ordered output pair ab, the terms
    (p, q, derivative order, multiplicity); pq are the conditional-mean derivative directions."""
    out = {}
    for (a, b) in _sym_pairs(P):
        out[(a, b)] = [((a, a), (2, 0), 1.0)] if a == b else \
            [((a, a), (2, 0), 1.0), ((b, b), (0, 2), 1.0), ((a, b), (1, 1), 2.0)]
    return out


def full_block_interpolated(net, K0, compute_mean=True, n_nodes=32, n_dense=6, n_r=12, n_t=8,
                            error_estimate=True):
    """V, V_indep and M of the full block from node layers (Eq. 4.61-4.64); same keys as the exact path.

    Extra keys: ``nodes`` (layers where the walk tables were evaluated) and ``interp_error``
    (dict V, M: relative deviation of the nested coarse-node result, an error bound estimate).
    """
    phi = net.phi
    L, P = net.depth, K0.shape[0]
    P2 = P * P
    Ks = mean_field_kernel(net, K0=K0, all_layers=True)
    s = a2sw2 = net.alpha ** 2 * net.sigma_w2
    Gs, Js = jac_G_batch(phi, Ks)
    eye = np.eye(P2)
    T = eye[None] + s * Js                                   # one-step tangent (Eq. 4.10)
    A = np.empty((L, P2, P2))
    A[L - 1] = s * eye
    for m in range(L - 1, 0, -1):
        A[m - 1] = A[m] @ T[m]
    nodes, coarse, u = choose_nodes(Ks, n_nodes, n_dense)
    pi = _PairIntegrals(phi, Ks[nodes], walk=True, n_r=n_r, n_t=n_t)
    pi.need_deriv = compute_mean
    Cd_n, Cc_n, CfK_n = _covariance_tables(pi, Gs[nodes], Ks[nodes], True)
    nn = len(nodes) - 1                                      # node layers < L
    pair_pos = {}
    if Cc_n is not None:
        for n_, (i, j) in enumerate(zip(*np.triu_indices(nn, 1))):
            pair_pos[(i, j)] = n_
    R2 = _self_tables(pi, Gs[nodes], Ks[nodes], P) if compute_mean else None

    def assemble(sel_layers):
        sel = np.flatnonzero(np.isin(nodes[:nn], sel_layers))   # node indices (< L) in this set
        lay = nodes[sel]
        uall = u[:L]
        Cdiag = _spline(u[lay], Cd_n[sel], uall)              # (L, P2, P2)
        CfK = _spline(u[lay], CfK_n[sel], uall)
        # ---- V (Eq. 4.9-4.10, 4.61)
        V_ind = _outer_hh(Ks[L]) + np.einsum("kij,kjl,kml->im", A, Cdiag, A)
        V = V_ind.copy()
        t = np.einsum("kij,kjl->il", A, CfK)
        V = V + t + t.T
        rows, Rv = [], []
        for ii, i in enumerate(sel):
            k = nodes[i]
            if k >= L - 1:
                continue
            later = sel[ii + 1:]
            mlay = np.concatenate([[k], nodes[later]])
            vals = np.concatenate([Cd_n[i][None], np.stack([Cc_n[pair_pos[(i, j)]] for j in later])])
            Cc = _spline(u[mlay], vals, u[k + 1:L])            # C(k, m), m = k+1..L-1
            rows.append(k)
            Rv.append(np.einsum("mij,mlj->il", Cc, A[k + 1:L]))
        rows.append(L - 1)
        Rv.append(np.zeros((P2, P2)))
        Rall = _spline(u[np.array(rows)], np.stack(Rv), u[:L - 1])   # R(k), k = 0..L-2
        t = np.einsum("kij,kjl->il", A[:L - 1], Rall)
        V = V + t + t.T
        V = 0.5 * (V + V.T)
        out = dict(V=V.reshape(P, P, P, P), V_ind=V_ind.reshape(P, P, P, P))
        if not compute_mean:
            return out
        # ---- M: column sums X(l), self(l) at node columns (Eq. 4.62-4.64)
        cols, Xv, Sv = [0], [np.zeros((P2, P2))], [np.zeros(P2)]
        lay_set = set(lay.tolist())
        for jj, j in enumerate(sel):
            l = nodes[j]
            if l < 1 or l > L - 1 or (l - 1) not in lay_set:
                continue                                   # columns end on a node at k = l - 1
            earlier = sel[:jj]
            klay = nodes[earlier]
            vals = np.concatenate([np.stack([Cc_n[pair_pos[(i, j)]] for i in earlier]), Cd_n[j][None]])
            Cc = _spline(u[np.concatenate([klay, [l]])], vals, u[:l])     # C(k, l), k = 0..l-1
            Bst = np.empty((l, P2, P2))
            Xst = np.empty((l, P2, P2))
            B = s * eye
            Y = np.zeros((P2, P2))
            for k in range(l - 1, -1, -1):
                Bst[k] = B
                Xst[k] = eye + Y
                B = B @ T[k]
                Y = s * Js[k] + Y @ T[k]
            cols.append(l)
            Xv.append(np.einsum("kij,kjl->il", Bst, Cc))
            W = np.stack([R2[(i, j)] for i in earlier])            # (n_k, P2, P2, P2)
            Wk = _spline(u[klay], W, u[:l])
            Sv.append(0.5 * a2sw2 * np.einsum("kaqc,kqc->a", Wk, Xst))
        cols = np.array(cols)
        X = _spline(u[cols], np.stack(Xv), u[:L])
        Sf = _spline(u[cols], np.stack(Sv), u[:L])
        Sig = np.zeros((L, P2, P2))                              # Cov(k1^l)
        for l in range(L - 1):
            Sig[l + 1] = T[l] @ Sig[l] @ T[l].T + s * (T[l] @ X[l] + X[l].T @ T[l].T) + s * s * Cdiag[l]
        lay_c = np.unique(np.concatenate([lay, [0]]))
        curv = _spline(u[lay_c], curvature_batch(phi, Ks[lay_c], Sig[lay_c]), u[:L])
        Ek2 = np.zeros(P2)
        for l in range(L):
            Ek2 = T[l] @ Ek2 + s * (curv[l] + 2.0 * Sf[l])
        out["M"] = (0.5 * Ek2).reshape(P, P)
        return out

    fine = assemble(nodes)
    out = dict(fine, Ks=Ks, A=A, G=Gs, nodes=nodes)
    if error_estimate:
        crude = assemble(coarse)
        err = {}
        for key in ("V", "M"):
            if key in fine:
                scale = max(float(np.max(np.abs(fine[key]))), 1e-300)
                err[key] = float(np.max(np.abs(fine[key] - crude[key]))) / scale
        out["interp_error"] = err
    return out


def _self_tables(pi, Gs, Ks, P):
    """R2(k, m) for node pairs k < m < L: (P2 ab, P2 pq, P2 cd) with
    R2[ab, pq, cd] = mult * Cov(f_cd(h^k), D^{pq} f_ab(h^m)) folded with the Xi index symmetry
    of Eq. 4.17, so that self^m_ab = a2sw2/2 sum_k sum_{pq,cd} R2[ab,pq,cd] Xi^{m,k}[pq,cd]."""
    phi = pi.phi
    L = Ks.shape[0] - 1
    P2 = P * P
    out = {}
    if L < 2:
        return out
    kk, mm = np.triu_indices(L, 1)
    W = np.zeros((kk.size, P2, P2, P2))
    mean_d2 = {}
    sp = _sym_pairs(P)
    for (a, b), terms in _self_weights(P).items():
        for (p, q), dord, mult in terms:
            key = ((a, b), dord)
            if key not in mean_d2:
                mean_d2[key] = np.array([_d2f_mean(phi, Ks[m], (a, b), dord) for m in range(L)])
            for (c, d) in sp:
                val = pi.cross(kk, mm, (c, d), (a, b), d=dord) - mean_d2[key][mm] * Gs[kk, c, d]
                targets = [(p, q)] if p == q else [(p, q), (q, p)]
                f = 1.0 if p == q else 0.5
                for (p_, q_) in targets:
                    for (c_, d_) in ([(c, d)] if c == d else [(c, d), (d, c)]):
                        W[:, a * P + b, p_ * P + q_, c_ * P + d_] += f * mult * val
        if a != b:
            W[:, b * P + a] = W[:, a * P + b]
    for n_, (i, j) in enumerate(zip(kk, mm)):
        out[(i, j)] = W[n_]
    return out
