"""Fast 1/N theory of the FULL block at large depth: layer-pair sums from node layers
(docs/theory.md Sec. 4.9, Eq. 4.61-4.65; any number of inputs P: Sec. 4.10, Eq. 4.66-4.69).

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

Compressed representation (Sec. 4.10). Everything lives on the Q = P(P+1)/2 symmetric-pair
coordinates. A tangent couples the entry ab only to ab, aa, bb, so every propagator keeps that
pattern and the mean shift splits into Q independent pair blocks of size 3 (M_ab depends on the
inputs a, b only): M uses (Q, 3, 3) blocks, its tables are the P = 2 fused tables of each input
pair. V needs every entry, (Q, Q), from :func:`walk_tables_general` (one shared grid per outer input
pair, all inner pairs on it), on its own node set (``n_nodes_v``, fewer nodes for P >= 4: V converges
much faster in the nodes than M).

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

from ..kernel_maps import pair_matrix
from ..kernel_recursion import mean_field_kernel
from .full import _d2f_mean
from .linalg import jac_sym_batch, outer_hh_sym, pair_hessian_blocks, sym_pairs_index
from .walk_integrals import _PairIntegrals, walk_tables_general

__all__ = ["full_block_interpolated", "choose_nodes", "default_v_nodes"]


def _spline(x, y, xe):
    """Cubic (or lower, for few nodes) interpolating spline of y (n, ...) at x (n,), evaluated at xe."""
    n = len(x)
    if n == 1:
        return np.broadcast_to(y[0], (len(xe),) + y.shape[1:]).copy()
    k = min(3, n - 1)
    return make_interp_spline(x, y, k=k, axis=0)(xe)


def _tr(a):
    return np.swapaxes(a, -1, -2)


def kernel_coordinate(Ks, uniform_share=0.3):
    """u(l) in [0, 1], l = 0..L: advances with |d log K_aa| + |d c_ab| per layer plus a uniform share."""
    L = Ks.shape[0] - 1
    d = np.diagonal(Ks, axis1=1, axis2=2)
    c = Ks / np.sqrt(d[:, :, None] * d[:, None, :])
    step = np.max(np.abs(np.diff(np.log(d), axis=0)), axis=1) + np.max(np.abs(np.diff(c, axis=0)), axis=(1, 2))
    u = np.concatenate([[0.0], np.cumsum(step)])
    u = u / u[-1] if u[-1] > 0 else np.linspace(0.0, 1.0, L + 1)
    return (1 - uniform_share) * u + uniform_share * np.arange(L + 1) / L


def choose_nodes(Ks, n_nodes=32, n_dense=6, close=True):
    """Node layers (sorted, in [0, L]) and the nested coarse subset (for the error estimate).

    Base nodes: layers 0..n_dense-1 and ``n_nodes`` layers uniform in u (incl. L-1); with
    ``close`` each base node l brings l+1 (needed by the column sums of M); L is always a node.
    """
    L = Ks.shape[0] - 1
    u = kernel_coordinate(Ks)
    targets = np.linspace(0.0, u[L - 1], int(n_nodes))
    base = np.unique(np.concatenate([np.arange(min(n_dense, L)),
                                     np.clip(np.searchsorted(u, targets), 0, L - 1), [max(L - 2, 0), L - 1]]))
    coarse_base = np.unique(np.concatenate([base[base < n_dense], base[base >= n_dense][::2], [max(L - 2, 0), L - 1]]))

    def fin(b):
        return np.unique(np.concatenate([b, np.minimum(b + 1, L), [L]] if close else [b, [L]]))
    return fin(base), fin(coarse_base), u


def default_v_nodes(n_nodes, P):
    """Node count of the V tables: n_nodes for P <= 3; fewer for more inputs, where the V tables
    (P^2 (P+1)^2 / 4 entries per node pair) dominate: n_nodes // 2 for P = 4..6, n_nodes // 3 beyond
    (at least 8). V converges much faster in the nodes than M (benchmarks/README.md)."""
    if P <= 3:
        return int(n_nodes)
    return max(8, int(n_nodes) // (2 if P <= 6 else 3))


# ---------------------------------------------------------------- tables
def _multiset_same(pi, Gn, n, sp, keys):
    """Cov(f_x(h^k), f_y(h^k)) at the node layers for index multisets (same-layer four-point functions)."""
    out = {}
    kk = np.arange(n)
    for key in keys:
        if key not in out:
            out[key] = pi.same(kk, key)
    return out


def _block_tables(phi, Kn, Gn, KL, nbr, idx, sp, n_r, n_t, need_deriv, need_lin=False):
    """Pair-block tables at node layers from the P = 2 fused tables of each input pair (a, b):
    C_b (npairs, Q, 3, 3) = Cov(f_{nbr_i}(h^k), f_{nbr_j}(h^m)) (k < m node layers < L), the
    self-interaction tables W_b (npairs, Q, 3, 3) (row: conditional-mean derivative direction pq in the
    block, column: cd in the block, multiplicities of Eq. 4.17 folded in), same-layer Cd_b (n, Q, 3, 3)
    and optionally Cov(f(h^k), h^L h^L^T) blocks lin_b (n, Q, 3, 3)."""
    n = Kn.shape[0] - 1
    P = Kn.shape[1]
    Q = len(sp)
    kk, mm = np.triu_indices(n, 1)
    C_b = np.zeros((kk.size, Q, 3, 3))
    W_b = np.zeros((kk.size, Q, 3, 3)) if need_deriv else None
    lin_b = np.zeros((n, Q, 3, 3)) if need_lin else None
    loc_nbr = [(0, 1), (0, 0), (1, 1)]
    pairs = [(a, b) for a, b in sp if a != b] or [(0, 0)]
    diag_done = set()
    kn = np.arange(n)
    for (a, b) in pairs:
        g = [a, b]
        sub = Kn[:, g][:, :, g]
        if a == b:                     # P = 1: a fictitious independent second input
            sub = np.zeros((Kn.shape[0], 2, 2))
            sub[:, 0, 0] = sub[:, 1, 1] = Kn[:, 0, 0]
        pi = _PairIntegrals(phi, sub, walk=True, n_r=n_r, n_t=n_t)
        pi.need_deriv = need_deriv
        pms = None
        Gl = np.stack([np.stack([Gn[:, a, a], Gn[:, a, b]], -1), np.stack([Gn[:, b, a], Gn[:, b, b]], -1)], -2)
        targets = []
        if a != b:
            targets.append((idx[a, b], [0, 1, 2]))
        for loc, r in ((0, a), (1, b)):
            if r not in diag_done:
                diag_done.add(r)
                targets.append((idx[r, r], [1 + loc]))
        for q, slots in targets:
            for i, si in enumerate(slots):
                x = loc_nbr[si]
                for j, sj in enumerate(slots):
                    y = loc_nbr[sj]
                    C_b[:, q, i, j] = pi.cross(kk, mm, x, y) - Gl[kk, x[0], x[1]] * Gl[mm, y[0], y[1]]
                    if need_lin:
                        lin_b[:, q, i, j] = (pi.cross(kn, np.full(n, n), x, y, inner_kind="lin")
                                             - Gl[:n, x[0], x[1]] * KL[g][:, g][y[0], y[1]])
            if not need_deriv:
                continue
            # self-interaction (Eq. 4.17): terms (pq, derivative order, multiplicity) of the block's entry
            ab = loc_nbr[slots[0]]
            if ab[0] == ab[1]:
                terms = [(0, ab, (2, 0), 1.0)]
            else:
                terms = [(1, (0, 0), (2, 0), 1.0), (2, (1, 1), (0, 2), 1.0), (0, (0, 1), (1, 1), 2.0)]
            if pms is None:
                pms = [pair_matrix(phi, sub[m], grad=True) for m in range(n)]    # once per pair block
            for slot_pq, _pq, dord, mult in terms:
                md = np.array([_d2f_mean(phi, sub[m], ab, dord, pm=pms[m]) for m in range(n)])
                for j, sj in enumerate(slots):
                    cd = loc_nbr[sj]
                    val = pi.cross(kk, mm, cd, ab, d=dord) - md[mm] * Gl[kk, cd[0], cd[1]]
                    W_b[:, q, slot_pq if len(slots) == 3 else 0, j] = mult * val
    # same layer (Eq. 4.9): index multisets of each block
    pi_full = _PairIntegrals(phi, Kn, walk=True, n_r=n_r, n_t=n_t)
    keys = {}
    for q, (a, b) in enumerate(sp):
        for i in range(3):
            for j in range(3):
                keys[(q, i, j)] = tuple(sorted(sp[nbr[q, i]] + sp[nbr[q, j]]))
    raw = _multiset_same(pi_full, Gn, n, sp, set(keys.values()))
    Cd_b = np.zeros((n, Q, 3, 3))
    for (q, i, j), key in keys.items():
        x, y = sp[nbr[q, i]], sp[nbr[q, j]]
        Cd_b[:, q, i, j] = raw[key] - Gn[:n, x[0], x[1]] * Gn[:n, y[0], y[1]]
    return C_b, W_b, Cd_b, lin_b


def _blocks_to_full(Xb, nbr, mask):
    """Scatter (..., Q, 3, 3) pair blocks into (..., Q, Q) (blocks that cover every entry: P <= 2)."""
    Q = nbr.shape[0]
    out = np.zeros(Xb.shape[:-3] + (Q, Q))
    for q in range(Q):
        for i in range(3):
            for j in range(3):
                if mask[q, i] and mask[q, j]:
                    out[..., nbr[q, i], nbr[q, j]] = Xb[..., q, i, j]
    return out


def _to_blocks(Xq, nbr, mask):
    """(..., Q, Q) -> (..., Q, 3, 3) pair blocks (rows/columns outside a diagonal block zeroed)."""
    return Xq[..., nbr[:, :, None], nbr[:, None, :]] * (mask[:, :, None] * mask[:, None, :])


# ---------------------------------------------------------------- main
def full_block_interpolated(net, K0, compute_mean=True, n_nodes=32, n_dense=6, n_r=12, n_t=8,
                            error_estimate=True, n_nodes_v=None):
    """V, V_indep and M of the full block from node layers (Eq. 4.61-4.64); same keys as the exact path.

    Extra keys: ``nodes`` (layers where the M (and, for P <= 3, V) walk tables were evaluated),
    ``nodes_v`` (those of the V tables), ``interp_error`` (dict V, M: relative deviation of the
    nested coarse-node result, an error bound estimate), ``A_sym`` (propagators on symmetric-pair
    coordinates, (L, Q, Q)); ``A`` ((L, P^2, P^2), as the exact path) for P <= 4.
    ``n_nodes_v``: node count of the V tables (default :func:`default_v_nodes`).
    """
    phi = net.phi
    L, P = net.depth, K0.shape[0]
    sp, idx, nbr, mask = sym_pairs_index(P)
    Q = len(sp)
    Ks = mean_field_kernel(net, K0=K0, all_layers=True)
    s = a2sw2 = net.alpha ** 2 * net.sigma_w2
    Gs, Jq = jac_sym_batch(phi, Ks)
    eye = np.eye(Q)
    Tq = eye[None] + s * Jq                                   # one-step tangent (Eq. 4.10), sym coordinates
    A = np.empty((L, Q, Q))
    A[L - 1] = s * eye
    for m in range(L - 1, 0, -1):
        A[m - 1] = A[m] @ Tq[m]
    nodes, coarse, u = choose_nodes(Ks, n_nodes, n_dense)
    n_nodes_v = default_v_nodes(n_nodes, P) if n_nodes_v is None else int(n_nodes_v)
    shared = P <= 2 and n_nodes_v == n_nodes                 # V from the pair tables on the same nodes
    if shared:
        vnodes, vcoarse = nodes, coarse
    else:
        vnodes, vcoarse, _ = choose_nodes(Ks, n_nodes_v, min(n_dense, 3) if P >= 4 else n_dense,
                                          close=P <= 3 and n_nodes_v == n_nodes)
    nn = len(nodes) - 1                                      # node layers < L
    pair_pos = {(i, j): n_ for n_, (i, j) in enumerate(zip(*np.triu_indices(nn, 1)))}
    need_blocks = compute_mean or shared
    if need_blocks:
        C_b, W_b, Cd_b, lin_b = _block_tables(phi, Ks[nodes], Gs[nodes], Ks[L], nbr, idx, sp, n_r, n_t,
                                              compute_mean, need_lin=shared)
    # ---- V tables (full Q x Q) on the V nodes
    nv = len(vnodes) - 1
    vpos = {(i, j): n_ for n_, (i, j) in enumerate(zip(*np.triu_indices(nv, 1)))}
    if shared:
        Cc_v, Cd_v, CfK_v = (_blocks_to_full(X, nbr, mask) for X in (C_b, Cd_b, lin_b))
    else:
        cr, li, sa = walk_tables_general(phi, Ks[vnodes], n_r=n_r, n_t=n_t)
        Gq = Gs[vnodes][:, sp_a(sp), sp_b(sp)]                 # (nv+1, Q)
        kk, mm = np.triu_indices(nv, 1)
        Cc_v = cr - Gq[kk, :, None] * Gq[mm, None, :]
        Cd_v = sa - Gq[:nv, :, None] * Gq[:nv, None, :]
        Cd_v = 0.5 * (Cd_v + _tr(Cd_v))
        KLq = Ks[L][sp_a(sp), sp_b(sp)]
        CfK_v = li - Gq[:nv, :, None] * KLq[None, None, :]
        del cr, li, sa

    def assemble_V(sel_layers):
        sel = np.flatnonzero(np.isin(vnodes[:nv], sel_layers))   # node indices (< L) in this set
        lay = vnodes[sel]
        uall = u[:L]
        Cdiag = _spline(u[lay], Cd_v[sel], uall)              # (L, Q, Q)
        CfK = _spline(u[lay], CfK_v[sel], uall)
        # ---- V (Eq. 4.9-4.10, 4.61)
        V_ind = outer_hh_sym(Ks[L]) + np.einsum("kij,kjl,kml->im", A, Cdiag, A, optimize=True)
        V = V_ind.copy()
        t = np.einsum("kij,kjl->il", A, CfK)
        V = V + t + t.T
        rows, Rv = [], []
        for ii, i in enumerate(sel):
            k = vnodes[i]
            if k >= L - 1:
                continue
            later = sel[ii + 1:]
            mlay = np.concatenate([[k], vnodes[later]])
            vals = np.concatenate([Cd_v[i][None], np.stack([Cc_v[vpos[(i, j)]] for j in later])])
            Cc = _spline(u[mlay], vals, u[k + 1:L])            # C(k, m), m = k+1..L-1
            rows.append(k)
            Rv.append(np.tensordot(Cc, A[k + 1:L], axes=([0, 2], [0, 2])))    # sum_m C(k, m) A_m^T
        rows.append(L - 1)
        Rv.append(np.zeros((Q, Q)))
        Rall = _spline(u[np.array(rows)], np.stack(Rv), u[:L - 1])   # R(k), k = 0..L-2
        t = np.einsum("kij,kjl->il", A[:L - 1], Rall)
        V = V + t + t.T
        V = 0.5 * (V + V.T)
        return dict(V=V, V_ind=V_ind)

    if compute_mean:
        T = _to_blocks(Tq[:L], nbr, mask)                  # (L, Q, 3, 3) pair blocks (Sec. 4.10)
        Js = _to_blocks(Jq[:L], nbr, mask)
        eyeb = np.broadcast_to(np.eye(3) * mask[:, None, :], (Q, 3, 3)).copy()

    def assemble_M(sel_layers):
        sel = np.flatnonzero(np.isin(nodes[:nn], sel_layers))
        lay = nodes[sel]
        Cdiag = _spline(u[lay], Cd_b[sel], u[:L])             # (L, Q, 3, 3)
        # ---- M: column sums X(l), self(l) at node columns (Eq. 4.62-4.64), per pair block
        cols, Xv, Sv = [0], [np.zeros((Q, 3, 3))], [np.zeros(Q)]
        lay_set = set(lay.tolist())
        for jj, j in enumerate(sel):
            l = nodes[j]
            if l < 1 or l > L - 1 or (l - 1) not in lay_set:
                continue                                   # columns end on a node at k = l - 1
            earlier = sel[:jj]
            klay = nodes[earlier]
            vals = np.concatenate([np.stack([C_b[pair_pos[(i, j)]] for i in earlier]), Cd_b[j][None]])
            Cc = _spline(u[np.concatenate([klay, [l]])], vals, u[:l])     # C(k, l), k = 0..l-1
            Bst = np.empty((l, Q, 3, 3))
            Xst = np.empty((l, Q, 3, 3))
            B = s * eyeb
            Y = np.zeros((Q, 3, 3))
            for k in range(l - 1, -1, -1):
                Bst[k] = B
                Xst[k] = eyeb + Y
                B = B @ T[k]
                Y = s * Js[k] + Y @ T[k]
            cols.append(l)
            Xv.append(np.einsum("kqij,kqjl->qil", Bst, Cc))
            W = np.stack([W_b[pair_pos[(i, j)]] for i in earlier])          # (n_k, Q, 3, 3)
            Wk = _spline(u[klay], W, u[:l])
            Sv.append(0.5 * a2sw2 * np.einsum("kqij,kqij->q", Wk, Xst))
        cols = np.array(cols)
        X = _spline(u[cols], np.stack(Xv), u[:L])
        Sf = _spline(u[cols], np.stack(Sv), u[:L])
        Sig = np.zeros((L, Q, 3, 3))                              # Cov(k1^l), pair blocks
        for l in range(L - 1):
            Sig[l + 1] = T[l] @ Sig[l] @ _tr(T[l]) + s * (T[l] @ X[l] + _tr(X[l]) @ _tr(T[l])) + s * s * Cdiag[l]
        lay_c = np.unique(np.concatenate([lay, [0]]))
        curv = _spline(u[lay_c], np.einsum("bqij,bqij->bq", pair_hessian_blocks(phi, Ks[lay_c]), Sig[lay_c]), u[:L])
        Ek2 = np.zeros((Q, 3))
        for l in range(L):
            Ek2 = np.einsum("qij,qj->qi", T[l], Ek2) + s * (curv[l] + 2.0 * Sf[l])[nbr] * mask
        return 0.5 * Ek2[:, 0]

    def full(Vq):
        return Vq[idx[:, :, None, None], idx[None, None, :, :]]

    fine = assemble_V(vnodes)
    out = dict(V=full(fine["V"]), V_ind=full(fine["V_ind"]))
    if compute_mean:
        fine["M"] = assemble_M(nodes)
        out["M"] = fine["M"][idx]
    out.update(Ks=Ks, A_sym=A, G=Gs, nodes=nodes, nodes_v=vnodes)
    if P <= 4:
        out["A"] = _sym_to_full_op(A, P, sp, idx)
    if error_estimate:
        err = {}
        crude = assemble_V(vcoarse)
        scale = max(float(np.max(np.abs(fine["V"]))), 1e-300)
        err["V"] = float(np.max(np.abs(fine["V"] - crude["V"]))) / scale
        if compute_mean:
            Mc = assemble_M(coarse)
            scale = max(float(np.max(np.abs(fine["M"]))), 1e-300)
            err["M"] = float(np.max(np.abs(fine["M"] - Mc))) / scale
        out["interp_error"] = err
    return out


def sp_a(sp):
    return np.array([p[0] for p in sp])


def sp_b(sp):
    return np.array([p[1] for p in sp])


def _sym_to_full_op(Aq, P, sp, idx):
    """Operator on symmetric-pair coordinates -> (…, P^2, P^2) on flattened symmetric matrices
    (the exact path's convention: an off-diagonal column carries half of the pair's coefficient)."""
    half = np.where(np.eye(P, dtype=bool), 1.0, 0.5).reshape(-1)
    flat = idx.reshape(-1)
    return Aq[..., flat[:, None], flat[None, :]] * half[None, :]
