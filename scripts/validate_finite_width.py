"""Validate the 1/N theory (resscale.finite_width) against Monte-Carlo simulation.

Writes docs/validation.md (finite-width section) with, per test point, the
theory value of V and M entries and the Monte-Carlo estimate extrapolated in
1/N from several widths, with standard errors and the deviation in SE.

Simulator: the exact conditional-Gaussian dynamics of the N neurons
(docs/theory.md Eq. 4.4): given layer l-1, the branch pre-activations of the
full block are i.i.d. over neurons, N(0, sigma_w2 Ghat^{l-1} + sigma_b2), so a
network is simulated without drawing the N x N weight matrices (same law of
(Khat^0, ..., Khat^L) as the real network; rs.simulate draws the weights).

Variance reduction for M: reference particles hbar_i driven by the *mean-field*
step covariances with the same Gaussian draws (coupling); their additive
functional Phi (the influence function, Eq. 4.9) has exactly known mean, and
N (Khat^L - mean_i Phi(hbar_i) + E Phi) has O(1) instead of O(N) variance.
The control variate has known mean, so the estimator stays unbiased whatever
the theory says.

Usage:  python scripts/validate_finite_width.py [--quick] [--out docs/validation.md]
Results are cached in .cache/validate_finite_width/*.npz (resumable).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import resscale as rs  # noqa: E402
from resscale._storage import write_marked_section  # noqa: E402
from resscale.finite_width import finite_width  # noqa: E402

CACHE = os.path.join(os.path.dirname(__file__), "..", ".cache", "validate_finite_width")


def _sqrtm(C):
    P = C.shape[-1]
    if P == 2:   # closed-form symmetric square root of 2x2 SPD matrices
        det = np.maximum(C[..., 0, 0] * C[..., 1, 1] - C[..., 0, 1] ** 2, 0.0)
        sd = np.sqrt(det)
        t = np.sqrt(np.maximum(C[..., 0, 0] + C[..., 1, 1] + 2 * sd, 1e-300))
        R = C.copy()
        R[..., 0, 0] += sd
        R[..., 1, 1] += sd
        return R / t[..., None, None]
    lam, U = np.linalg.eigh(C)
    return (U * np.sqrt(np.maximum(lam, 0.0))[..., None, :]) @ np.swapaxes(U, -1, -2)


def simulate_full(net, K0, N, S, seed, theory, chunk=4000):
    """Per network: Khat^L (S,P,P) and the control variate Y - E Y (S,P,P). Full block."""
    rng = np.random.default_rng(seed)
    P = K0.shape[0]
    phi, a, sw2, sb2, L = net.phi.fn, net.alpha, net.sigma_w2, net.sigma_b2, net.depth
    Ks, A, G = theory["Ks"], theory["A"], theory["G"]
    Cmf = [sw2 * G[l] + sb2 for l in range(L)]
    Rmf = [_sqrtm(C) for C in Cmf]
    A4 = A.reshape(L, P, P, P, P)
    EPhi = Ks[L] + np.einsum("mabcd,mcd->ab", A4, G[:L])
    R0 = _sqrtm(K0)
    Kh_all, Y_all = [], []
    for s0 in range(0, S, chunk):
        B = min(chunk, S - s0)
        e = rng.standard_normal((B, N, P))
        h = e @ R0.T
        hb = h.copy()
        Y = np.zeros((B, P, P))
        for l in range(L):
            f = phi(h)
            fb = phi(hb)
            Gb = np.matmul(np.swapaxes(fb, 1, 2), fb) / N
            Y += np.einsum("abcd,scd->sab", A4[l], Gb)
            C = sw2 * np.matmul(np.swapaxes(f, 1, 2), f) / N + sb2
            e = rng.standard_normal((B, N, P))
            h = h + a * np.matmul(e, np.swapaxes(_sqrtm(C), 1, 2))
            hb = hb + a * (e @ Rmf[l].T)
        Kh_all.append(np.matmul(np.swapaxes(h, 1, 2), h) / N)
        Y += np.matmul(np.swapaxes(hb, 1, 2), hb) / N
        Y_all.append(Y - EPhi)
    return np.concatenate(Kh_all), np.concatenate(Y_all)


def simulate_sensitivity_full(net, c0, N, S, seed=139, h=0.02, chunk=20000):
    """Per network (S,): the pathwise S_N sample of the full block, the Richardson combination
    (4 D(h/2) - D(h)) / 3 of the central differences of c_hat^L = Khat_12 / sqrt(Khat_11 Khat_22) at
    c0 + (-h, -h/2, h/2, h) (q0 = 1), with common random numbers (the same seed at every c0). Bias O(h^4)."""
    from resscale.inputs import two_input_kernel
    vals = []
    for dh in (-h, -h / 2, h / 2, h):
        K0 = two_input_kernel(c0 + dh, 1.0)
        fw = finite_width(net, K0=K0, method="exact")
        th = dict(Ks=fw.extras["Ks"], A=fw.extras["A"], G=fw.extras["G"])
        Kh, _ = simulate_full(net, K0, N, S, seed, th, chunk=chunk)
        vals.append(Kh[:, 0, 1] / np.sqrt(Kh[:, 0, 0] * Kh[:, 1, 1]))
    c = np.stack(vals, 1)
    return (4 * (c[:, 2] - c[:, 1]) / h - (c[:, 3] - c[:, 0]) / (2 * h)) / 3


def simulate_reduced(net, K0, N, S, seed, theory, chunk=4000):
    """Per network: Khat^L (S,P,P) and a zero-mean control variate (S,P,P). Reduced block.

    Exact dynamics (docs/theory.md Eq. 4.40): z^l_i | F_{l-1} ~ N(0, sw2 Khat^{l-1} + sb2)
    i.i.d., h^l = h^{l-1} + alpha phi(z^l). Control variate: the linear-noise state
    y^l = J^l y^{l-1} + xibar^l, y^0 = (Khat^0 - K^0, mhat^0), with xibar^l the layer-l noise
    (Eq. 4.44) of reference particles hbar driven by the mean-field Z^l with the same draws
    (E xibar^l = 0 exactly, so E y^L = 0 and the M estimator stays unbiased).
    """
    rng = np.random.default_rng(seed)
    P = K0.shape[0]
    P2 = P * P
    phi, a, sw2, sb2, L = net.phi.fn, net.alpha, net.sigma_w2, net.sigma_b2, net.depth
    Ks, J, mu, G = theory["Ks"], theory["J"], theory["mu_z"], theory["G_z"]
    Rmf = [_sqrtm(sw2 * Ks[l] + sb2) for l in range(L)]
    R0 = _sqrtm(K0)
    Kh_all, Y_all = [], []
    for s0 in range(0, S, chunk):
        B = min(chunk, S - s0)
        h = rng.standard_normal((B, N, P)) @ R0.T
        hb = h.copy()
        Kh = np.matmul(np.swapaxes(h, 1, 2), h) / N
        y = np.concatenate([(Kh - Ks[0]).reshape(B, P2), h.mean(1)], axis=1)
        for l in range(L):
            C = sw2 * Kh + sb2
            e = rng.standard_normal((B, N, P))
            h = h + a * phi(np.matmul(e, np.swapaxes(_sqrtm(C), 1, 2)))
            fb = phi(e @ Rmf[l].T)
            ub = fb - mu[l]
            hu = np.matmul(np.swapaxes(hb, 1, 2), ub) / N
            xK = a * (hu + np.swapaxes(hu, 1, 2)) + a * a * (np.matmul(np.swapaxes(fb, 1, 2), fb) / N - G[l])
            y = y @ J[l].T + np.concatenate([xK.reshape(B, P2), a * ub.mean(1)], axis=1)
            hb = hb + a * fb
            Kh = np.matmul(np.swapaxes(h, 1, 2), h) / N
        Kh_all.append(Kh)
        Y_all.append(y[:, :P2].reshape(B, P, P))
    return np.concatenate(Kh_all), np.concatenate(Y_all)

def simulate_two_layer(net, K0, N, S, seed, theory, chunk=4000):
    """Per network: Khat^L (S,P,P) and a zero-mean control variate (S,P,P). Two-layer block.

    Exact dynamics (docs/theory.md Eq. 4.70): z_j | F_{l-1} ~ N(0, sw2 Khat^{l-1} + sb2) i.i.d.
    (hidden units), d_i | z ~ N(0, Sigma), Sigma = a^2 (sw2 Ghat + sb2) i.i.d. (branch outputs),
    h^l = h^{l-1} + d. Control variate: y^l = J^l y^{l-1} + xibar^l, y^0 = Khat^0 - K^0, with
    xibar^l = Cbar + Cbar^T + Dbar - Sigma_mf the layer noise (Eq. 4.71) of reference units driven by
    the mean-field Z^l with the same draws (zbar = e1 chol(Z_mf), Sigmabar = a^2 (sw2 Gbar + sb2),
    dbar = e2 chol(Sigmabar), hbar += dbar); E xibar^l = 0 exactly, so E y^L = 0.
    """
    rng = np.random.default_rng(seed)
    P = K0.shape[0]
    P2 = P * P
    phi, a, sw2, sb2, L = net.phi.fn, net.alpha, net.sigma_w2, net.sigma_b2, net.depth
    Ks, J = theory["Ks"], theory["J"]
    Rmf = [_sqrtm(sw2 * Ks[l] + sb2) for l in range(L)]
    Smf = [Ks[l + 1] - Ks[l] for l in range(L)]       # a^2 (sw2 G(Z^l) + sb2): the mean-field branch covariance
    R0 = _sqrtm(K0)
    gram = lambda x, y: np.matmul(np.swapaxes(x, 1, 2), y) / N  # noqa: E731
    Kh_all, Y_all = [], []
    for s0 in range(0, S, chunk):
        B = min(chunk, S - s0)
        h = rng.standard_normal((B, N, P)) @ R0.T
        hb = h.copy()
        Kh = gram(h, h)
        y = (Kh - Ks[0]).reshape(B, P2)
        for l in range(L):
            e1 = rng.standard_normal((B, N, P))
            e2 = rng.standard_normal((B, N, P))
            f = phi(np.matmul(e1, np.swapaxes(_sqrtm(sw2 * Kh + sb2), 1, 2)))
            d = np.matmul(e2, np.swapaxes(_sqrtm(a * a * (sw2 * gram(f, f) + sb2)), 1, 2))
            fb = phi(e1 @ Rmf[l].T)
            db = np.matmul(e2, np.swapaxes(_sqrtm(a * a * (sw2 * gram(fb, fb) + sb2)), 1, 2))
            cb = gram(hb, db)
            xi = cb + np.swapaxes(cb, 1, 2) + gram(db, db) - Smf[l]
            y = y @ J[l].T + xi.reshape(B, P2)
            h, hb = h + d, hb + db
            Kh = gram(h, h)
        Kh_all.append(Kh)
        Y_all.append(y.reshape(B, P, P))
    return np.concatenate(Kh_all), np.concatenate(Y_all)


def estimates(Kh, Y, K, N):
    """(M_est, M_se) from the control-variate estimator and (V_est, V_se) (P,P,P,P)."""
    S = Kh.shape[0]
    z = N * (Kh - Y - K)
    M, Mse = z.mean(0), z.std(0, ddof=1) / np.sqrt(S)
    d = Kh - Kh.mean(0)
    prod = N * np.einsum("sab,scd->sabcd", d, d)
    V, Vse = prod.mean(0) * S / (S - 1), prod.std(0, ddof=1) / np.sqrt(S)
    return M, Mse, V, Vse


def extrapolated_estimates(net, K0, fw, Ns, S, seed):
    """(M, M_se, V, V_se) at N -> inf: S networks per width N (seed + N) with the block's simulator
    and control variate, :func:`estimates` per width, then :func:`extrapolate` in 1/N."""
    simulate = SIMULATORS.get(net.block, simulate_full)
    rows = [estimates(*simulate(net, K0, N, S, seed + N, fw.extras), fw.kernel, N) for N in Ns]
    Mx, Mse = extrapolate(Ns, [r[0] for r in rows], [r[1] for r in rows])
    Vx, Vse = extrapolate(Ns, [r[2] for r in rows], [r[3] for r in rows])
    return Mx, Mse, Vx, Vse


def extrapolate(Ns, est, se):
    """Weighted least squares est(N) = a + b/N; returns (a, se_a) elementwise."""
    x = 1.0 / np.asarray(Ns, dtype=float)
    est, se = np.asarray(est), np.asarray(se)
    w = 1.0 / np.maximum(se, 1e-300) ** 2
    Sw = w.sum(0)
    xx = x.reshape((-1,) + (1,) * (est.ndim - 1))
    Sx = (w * xx).sum(0)
    Sxx = (w * xx * xx).sum(0)
    Sy = (w * est).sum(0)
    Sxy = (w * xx * est).sum(0)
    det = Sw * Sxx - Sx * Sx
    a = (Sxx * Sy - Sx * Sxy) / det
    se_a = np.sqrt(Sxx / det)
    return a, se_a


SIMULATORS = {"full": simulate_full, "feedforward": simulate_full, "reduced": simulate_reduced,
              "two_layer": simulate_two_layer}

POINTS = [
    # (activation, alpha, L, sigma_w2, sigma_b2, K0)
    ("erf", 0.5, 20, 1.0, 0.0, [[1.0, 0.5], [0.5, 1.0]]),
    ("erf", 0.3, 10, 2.0, 0.1, [[1.0, 0.3], [0.3, 1.5]]),
    ("relu", 0.5, 10, 1.0, 0.0, [[1.0, 0.5], [0.5, 1.0]]),
    ("relu", 0.3, 20, 2.0, 0.1, [[1.0, 0.2], [0.2, 0.8]]),
    ("erf", 0.5, 8, 1.0, 0.05, [[1.0, 0.4, 0.1], [0.4, 1.2, 0.3], [0.1, 0.3, 0.9]]),
    ("relu", 0.4, 8, 1.5, 0.0, [[1.0, 0.4, 0.1], [0.4, 1.2, 0.3], [0.1, 0.3, 0.9]]),
    # optional 7th entry: block (default "full"; 6-tuples keep their cache keys)
    ("erf", 0.5, 20, 1.0, 0.0, [[1.0, 0.5], [0.5, 1.0]], "reduced"),
    ("erf", 0.3, 10, 2.0, 0.1, [[1.0, 0.3], [0.3, 1.5]], "reduced"),
    ("relu", 0.5, 10, 1.0, 0.0, [[1.0, 0.5], [0.5, 1.0]], "reduced"),
    ("relu", 0.3, 20, 2.0, 0.1, [[1.0, 0.2], [0.2, 0.8]], "reduced"),
    ("erf", 0.5, 8, 1.0, 0.05, [[1.0, 0.4, 0.1], [0.4, 1.2, 0.3], [0.1, 0.3, 0.9]], "reduced"),
    ("relu", 0.4, 8, 1.5, 0.0, [[1.0, 0.4, 0.1], [0.4, 1.2, 0.3], [0.1, 0.3, 0.9]], "reduced"),
    ("erf", 0.5, 20, 1.0, 0.0, [[1.0, 0.5], [0.5, 1.0]], "two_layer"),
    ("erf", 0.3, 10, 2.0, 0.1, [[1.0, 0.3], [0.3, 1.5]], "two_layer"),
    ("relu", 0.5, 10, 1.0, 0.0, [[1.0, 0.5], [0.5, 1.0]], "two_layer"),
    ("relu", 0.3, 20, 2.0, 0.1, [[1.0, 0.2], [0.2, 0.8]], "two_layer"),
    ("tanh", 0.5, 8, 1.5, 0.05, [[1.0, 0.4, 0.1], [0.4, 1.2, 0.3], [0.1, 0.3, 0.9]], "two_layer"),
]


def _block(pt):
    return pt[6] if len(pt) > 6 else "full"


def run_point(pt, widths, S_of_N, seed=0):
    act, alpha, L, sw2, sb2, K0 = pt[:6]
    K0 = np.array(K0)
    block = _block(pt)
    net = rs.ResNet(depth=L, alpha=alpha, sigma_w2=sw2, sigma_b2=sb2, activation=act, block=block)
    fw = finite_width(net, K0=K0)
    theory = fw.extras
    simulate = SIMULATORS.get(block, simulate_full)
    rows = []
    for N in widths:
        S = S_of_N(N)
        key = hashlib.md5(json.dumps([pt, N, S, seed]).encode()).hexdigest()[:16]
        path = os.path.join(CACHE, f"{key}.npz")
        if os.path.exists(path):
            z = np.load(path)
            rows.append((N, z["M"], z["Mse"], z["V"], z["Vse"]))
            continue
        t = time.time()
        Kh, Y = simulate(net, K0, N, S, seed + N, theory)
        M, Mse, V, Vse = estimates(Kh, Y, fw.kernel, N)
        os.makedirs(CACHE, exist_ok=True)
        np.savez(path, M=M, Mse=Mse, V=V, Vse=Vse)
        print(f"  {block} {act} a={alpha} L={L} N={N} S={S}: {time.time() - t:.1f}s", flush=True)
        rows.append((N, M, Mse, V, Vse))
    Ns = [r[0] for r in rows]
    Mx, Mxse = extrapolate(Ns, [r[1] for r in rows], [r[2] for r in rows])
    Vx, Vxse = extrapolate(Ns, [r[3] for r in rows], [r[4] for r in rows])
    return net, K0, fw, Mx, Mxse, Vx, Vxse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer networks (smoke run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "validation.md"))
    ap.add_argument("--budget", type=float, default=4e8, help="simulated neuron-layers per width (S*N*L*P)")
    ap.add_argument("--block", default=None, help="only the points of this block, in their own section")
    args = ap.parse_args(argv)
    widths = (16, 32, 64)
    points = [pt for pt in POINTS if args.block is None or _block(pt) == args.block]
    marker = "<!-- finite-width -->" if args.block is None else f"<!-- finite-width-{args.block} -->"
    budget = args.budget / (10 if args.quick else 1)
    title = "" if args.block is None else f": {args.block} block (--block {args.block})"
    lines = ["## Finite-width theory (V and M) vs Monte-Carlo (generated by scripts/validate_finite_width.py" + title + ")", "",
             "Full, reduced and two-layer blocks. MC: exact conditional-Gaussian simulator, widths N = " + ", ".join(map(str, widths))
             + "; estimates extrapolated to 1/N -> 0 by weighted least squares in 1/N (a + b/N) with "
             "propagated standard errors. M uses the reference-particle control variate (known mean, unbiased). "
             "dev = (theory - MC)/SE. Independent closure = FFNet-style V that drops cross-layer terms "
             "(full block only; the reduced-block recursion is closed and exact at O(1/N), docs/theory.md Sec. 4.8).", "",
             "| block | act | alpha | L | sw2 | sb2 | P | quantity | theory | MC (N->inf) | SE | dev/SE | indep. closure |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    maxdev = 0.0
    ndev = 0
    for pt in points:
        act, alpha, L, sw2, sb2, K0 = pt[:6]
        P = len(K0)

        def S_of_N(N, L=L, P=P):
            return int(min(100000, max(2000, budget / (N * L * P))))
        net, K0a, fw, Mx, Mxse, Vx, Vxse = run_point(pt, widths, S_of_N)
        ents = [("V", (0, 0, 0, 0)), ("V", (0, 1, 0, 1)), ("V", (0, 0, 1, 1)), ("M", (0, 0)), ("M", (0, 1))]
        if P == 3:
            ents += [("V", (0, 1, 1, 2)), ("M", (1, 2))]
        for q, ix in ents:
            th = (fw.covariance if q == "V" else fw.mean_shift)[ix]
            mc = (Vx if q == "V" else Mx)[ix]
            se = (Vxse if q == "V" else Mxse)[ix]
            dev = (th - mc) / se
            maxdev = max(maxdev, abs(dev))
            ndev += 1
            ind = f"{fw.covariance_independent[ix]:.3f}" if q == "V" and _block(pt) == "full" else ""
            lines.append(f"| {_block(pt)} | {act} | {alpha} | {L} | {sw2} | {sb2} | {P} | {q}{''.join(map(str, ix))} | "
                         f"{th:.4f} | {mc:.4f} | {se:.4f} | {dev:+.2f} | {ind} |")
    lines += ["", f"{ndev} comparisons; max |theory - MC| / SE = {maxdev:.2f}.", ""]
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_marked_section(args.out, text, marker)
    print(text)
    return maxdev


if __name__ == "__main__":
    main()
