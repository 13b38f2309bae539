"""Validate the next order in 1/N (issue 10; docs/theory.md Sec. 4.12) against Monte-Carlo.

For each test point (closed-chain blocks two_layer / reduced / feedforward) and width N it compares

    N Cov(Khat^L)            with  V (leading order)  and  V + V1/N (next order)
    N (E Khat^L - K^L)       with  M                  and  M + M2/N

and writes the table to docs/validation.md (section "Next order in 1/N (issue 10)").

Sampler: the exact conditional-Gaussian law of the closed chain (Eq. 4.40 reduced, 4.70
two_layer; the construction of docs/simulation.md), vectorised over networks; it is checked
against ``rs.simulate(method="gram")`` at one width per point (column "sim check": N Var of
Khat_00 from both, in SE). Estimators:

* covariance: sample covariance (ddof = 1, unbiased) of the upper-triangle entries; SE by the
  delta method, sd((x_i - xbar_i)(x_j - xbar_j)) / sqrt(S) (valid with heavy tails as long as
  the 4th moment exists; the per-chunk estimates are also kept);
* mean: martingale control variate (Eq. 4.93): y^l = J^l y^{l-1} + xi^l with the *actual* noise
  xi^l = s^l - f(s^{l-1}) of each network (E[xi^l | F_{l-1}] = 0 exactly, so E y^L = 0 at
  every N), J^l the mean-field drift Jacobians; estimator N mean(x^L - x_mf^L - y^L), whose
  variance is O(1) instead of O(N).

Resumable: every (point, N, chunk) is saved atomically to .cache/validate_next_order/*.npz
(resscale._storage.save_npz_atomic); rerunning skips finished chunks. Progress on stderr.

Usage:  python scripts/validate_next_order.py [--quick] [--points A,B] [--write]
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
from resscale._storage import load_npz, save_json_atomic, save_npz_atomic, write_marked_section  # noqa: E402
from resscale.finite_width.next_order import _ENGINES, _Coords, expansion_ratio  # noqa: E402
from resscale.kernel_maps import pair_matrix  # noqa: E402

CACHE = os.path.join(os.path.dirname(__file__), "..", ".cache", "validate_next_order")
DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "validation.md")
MARK = "<!-- next-order-issue-10 -->"
MARK_FF = "<!-- next-order-feedforward-issue-10 -->"   # the feed-forward rows (Eq. 4.103) have their own section

K2 = [[1.0, 0.6], [0.6, 1.5]]
K3 = [[1.0, 0.5, 0.3], [0.5, 1.2, 0.4], [0.3, 0.4, 0.8]]
POINTS = {
    "A": dict(block="two_layer", activation="relu", depth=4, alpha=0.6, sigma_w2=1.4, sigma_b2=0.2, K0=K2),
    "B": dict(block="two_layer", activation="erf", depth=8, alpha=0.7, sigma_w2=1.3, sigma_b2=0.1, K0=K2),
    "C": dict(block="two_layer", activation="relu", depth=8, alpha=0.7, sigma_w2=1.3, sigma_b2=0.0, K0=K3),
    "D": dict(block="reduced", activation="gelu", depth=20, alpha=0.3, sigma_w2=1.5, sigma_b2=0.0, K0=K2),
    "E": dict(block="reduced", activation="relu", depth=8, alpha=0.7, sigma_w2=1.3, sigma_b2=0.0, K0=K3),
    "F": dict(block="reduced", activation="erf", depth=10, alpha=0.5, sigma_w2=1.3, sigma_b2=0.1, K0=K2),
    # feed-forward block (Eq. 4.103: the closed chain of Sigma = sigma_w2 Ghat + sigma_b2, then a Wishart readout)
    "G": dict(block="feedforward", activation="erf", depth=8, alpha=1.0, sigma_w2=1.3, sigma_b2=0.1, K0=K2),
    "H": dict(block="feedforward", activation="relu", depth=3, alpha=1.0, sigma_w2=2.0, sigma_b2=0.0, K0=K3),
    "I": dict(block="feedforward", activation="gelu", depth=2, alpha=1.0, sigma_w2=1.5, sigma_b2=0.0, K0=K2),
}
FF_POINTS = ("G", "H", "I")
WIDTHS = (16, 24, 32, 64, 128)


def _sqrtm_psd(C):
    lam, U = np.linalg.eigh(0.5 * (C + np.swapaxes(C, -1, -2)))
    return (U * np.sqrt(np.maximum(lam, 0.0))[..., None, :]) @ np.swapaxes(U, -1, -2)


def make_net(pt):
    kw = {k: v for k, v in pt.items() if k != "K0"}
    return rs.ResNet(**kw), np.array(pt["K0"], dtype=float)


class Chain:
    """Exact sampler of the closed chain + martingale control variate (x-coordinates)."""

    def __init__(self, net, K0):
        self.net, self.K0 = net, K0
        self.eng = _ENGINES[net.block](net, K0, 12, 8)
        co = self.eng.co
        self.co = co
        self.xs = np.array([self.eng.point(l) for l in range(net.depth + 1)])
        self.Js = [self.eng.jac(self.xs[l][None])[0] for l in range(net.depth)]

    def f(self, K, m):
        """Mean-field map at the empirical state (exact conditional mean, Eq. 4.42 / 4.70)."""
        net = self.net
        a, sw2, sb2, phi = net.alpha, net.sigma_w2, net.sigma_b2, net.phi
        Z = sw2 * K + sb2
        G = pair_matrix(phi, Z)
        if net.block == "two_layer":
            return K + a * a * (sw2 * G + sb2), m
        if phi.odd:
            return K + a * a * G, m
        mu = np.asarray(phi.mean(np.diagonal(Z, axis1=1, axis2=2).reshape(-1))[0]).reshape(m.shape)
        cross = m[:, :, None] * mu[:, None, :]
        return K + a * (cross + np.swapaxes(cross, 1, 2)) + a * a * G, m + a * mu

    def state(self, h):
        N = h.shape[1]
        K = np.einsum("sia,sib->sab", h, h) / N
        m = h.mean(axis=1)
        return K, m

    def x(self, K, m):
        return self.co.x_of(K, m if self.co.n > self.co.nk else None)

    def run(self, N, S, rng, cv=True):
        """(x^L, y^L) of S networks (y: the control variate of Eq. 4.93; None with ``cv=False``).
        The draws depend on K0 only through its Cholesky factor / square roots, so two runs with the
        same ``rng`` seed at nearby K0 use common random numbers (pathwise differences)."""
        if self.net.block == "feedforward":
            return self._run_feedforward(N, S, rng, cv)
        net, P = self.net, self.K0.shape[0]
        a, sw2, sb2, phi = net.alpha, net.sigma_w2, net.sigma_b2, net.phi
        h = rng.standard_normal((S, N, P)) @ np.linalg.cholesky(self.K0).T
        K, m = self.state(h)
        y = self.x(K, m) - self.xs[0] if cv else None
        for l in range(net.depth):
            if cv:
                fK, fm = self.f(K, m)
            Z = sw2 * K + sb2
            z = rng.standard_normal((S, N, P)) @ np.swapaxes(_sqrtm_psd(Z), 1, 2)
            if net.block == "two_layer":
                u = phi.fn(z)
                Sig = a * a * (sw2 * np.einsum("sia,sib->sab", u, u) / N + sb2)
                h = h + rng.standard_normal((S, N, P)) @ np.swapaxes(_sqrtm_psd(Sig), 1, 2)
            else:
                h = h + a * phi.fn(z)
            K, m = self.state(h)
            if cv:
                xi = self.x(K, m) - self.x(fK, fm)
                y = y @ self.Js[l].T + xi
        return self.x(K, m), y


    def _run_feedforward(self, N, S, rng, cv):
        """The feed-forward chain (Eq. 4.103): rows of h^l i.i.d. N(0, Sigma^{l-1}) given the previous
        layer, Sigma^{-1} = K0, Sigma^l = sigma_w2 phi(h^l)^T phi(h^l) / N + sigma_b2; the readout is Khat^L.
        Control variate: y = J y + (Sigma^l - f(Sigma^{l-1})) over the L steps, + (Khat^L - Sigma^{L-1})."""
        net, P = self.net, self.K0.shape[0]
        sw2, sb2, phi = net.sigma_w2, net.sigma_b2, net.phi
        Sig = np.broadcast_to(self.K0, (S, P, P))
        y = np.zeros((S, self.co.n)) if cv else None
        for l in range(net.depth + 1):
            h = rng.standard_normal((S, N, P)) @ np.swapaxes(_sqrtm_psd(Sig), 1, 2)
            if l == net.depth:
                K = np.einsum("sia,sib->sab", h, h) / N
                if cv:
                    y = y + self.co.x_of(K) - self.co.x_of(Sig)
                return self.co.x_of(K), y
            u = phi.fn(h)
            new = sw2 * np.einsum("sia,sib->sab", u, u) / N + sb2
            if cv:
                y = y @ self.Js[l].T + self.co.x_of(new) - self.co.x_of(sw2 * pair_matrix(phi, Sig) + sb2)
            Sig = new


def resumable_chunks(label, path_of, n_chunks, compute):
    """The dict of every chunk c in order: loaded from ``path_of(c)`` when saved, else ``compute(c)``,
    saved atomically (resscale._storage.save_npz_atomic), with progress on stderr."""
    t0 = time.time()
    for c in range(n_chunks):
        path = path_of(c)
        if os.path.exists(path):
            yield load_npz(path)
            continue
        d = compute(c)
        save_npz_atomic(path, d)
        print(f"  [{label}] chunk {c + 1}/{n_chunks}  {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        yield d


def run_cell(key, pt, N, S_total, chunk, seed):
    """Accumulate chunks of (x^L, y^L) for one (point, N); resumable."""
    net, K0 = make_net(pt)
    chain = []                       # built on the first chunk that is not saved yet

    def compute(c):
        if not chain:
            chain.append(Chain(net, K0))
        x, y = chain[0].run(N, chunk, np.random.default_rng([seed, N, c]))
        return dict(x=x, y=y)
    ds = list(resumable_chunks(f"{key} N={N}", lambda c: os.path.join(CACHE, f"{key}_N{N}_c{c:04d}_{chunk}.npz"),
                               -(-S_total // chunk), compute))
    return np.concatenate([d["x"] for d in ds]), np.concatenate([d["y"] for d in ds])


# ---------------------------------------------------------------- finite-width sensitivity S_N (Eq. 4.94-4.97)
SENS_POINTS = {
    "S1": dict(block="reduced", activation="erf", depth=10, alpha=0.5, sigma_w2=1.3, sigma_b2=0.1, c0=0.5),
    "S2": dict(block="reduced", activation="relu", depth=6, alpha=0.4, sigma_w2=1.3, sigma_b2=0.1, c0=0.5),
    "S3": dict(block="two_layer", activation="erf", depth=8, alpha=0.7, sigma_w2=1.3, sigma_b2=0.1, c0=0.5),
}
SENS_WIDTHS = (8, 16, 32)
SENS_DC = 0.02


def sens_cell(key, pt, N, S_total, chunk, seed, dc=SENS_DC):
    """Pathwise S_N samples: c_hat^L of every network at c0 + (-dc, -dc/2, dc/2, dc) with common
    random numbers (same seed at every c0; the draws enter through smooth square roots of the
    kernels). Resumable like run_cell; Richardson of the central differences in ``sens_estimate``."""
    kw = {k: v for k, v in pt.items() if k != "c0"}
    net = rs.ResNet(**kw)

    def compute(c):
        vals = []
        for h in (-dc, -dc / 2, dc / 2, dc):
            ch = Chain.__new__(Chain)
            ch.net, ch.K0 = net, rs.inputs.two_input_kernel(pt["c0"] + h, 1.0)
            ch.co = _Coords(2, with_mean=(net.block == "reduced"))
            x, _ = ch.run(N, chunk, np.random.default_rng([seed, N, c]), cv=False)
            vals.append(x[:, 1] / np.sqrt(x[:, 0] * x[:, 2]))
        return dict(c=np.stack(vals, axis=1))
    ds = resumable_chunks(f"{key} sens N={N}", lambda c: os.path.join(CACHE, f"{key}_sens_N{N}_dc{dc:g}_c{c:04d}_{chunk}.npz"),
                          -(-S_total // chunk), compute)
    return np.concatenate([d["c"] for d in ds])


def sens_estimate(c, dc=SENS_DC):
    """S_N estimate with SE from the per-network c_hat at c0 + (-dc, -dc/2, dc/2, dc): Richardson
    (4 D(dc/2) - D(dc)) / 3 of the central differences (bias O(dc^4) instead of O(dc^2)), per network,
    so the SE is that of the per-network combined values. Also returns the plain D(dc) mean."""
    d1 = (c[:, 3] - c[:, 0]) / (2 * dc)
    d2 = (c[:, 2] - c[:, 1]) / dc
    r = (4 * d2 - d1) / 3
    return float(r.mean()), float(r.std(ddof=1) / np.sqrt(r.size)), float(d1.mean())


def estimates(x, y, xmf, N, nk):
    """N Cov (nk, nk) of the kernel coordinates with SE, and the CV mean N E(x - xmf) with SE."""
    S = x.shape[0]
    xk = x[:, :nk]
    dx = xk - xk.mean(0)
    C = N * (dx.T @ dx) / (S - 1)
    prod = dx[:, :, None] * dx[:, None, :]
    Cse = N * prod.std(0) / np.sqrt(S)
    r = N * (x - xmf[None] - y)[:, :nk]
    return C, Cse, r.mean(0), r.std(0) / np.sqrt(S), N * xk.std(0) / np.sqrt(S)


def sim_check(net, K0, N, S, seed):
    """N Var(Khat_00) from rs.simulate(method='gram') (independent sampler) with its SE."""
    r = rs.simulate(net, width=N, n_networks=S, K0=K0, seed=seed, method="gram")
    k = r.kernels[:, 0, 0]
    d = k - k.mean()
    return N * d.var(ddof=1), N * (d * d).std() / np.sqrt(S)


def _saved_rows():
    rows = []
    for fn in sorted(os.listdir(CACHE)):
        if fn.startswith("results") and fn.endswith(".json"):
            rows += json.load(open(os.path.join(CACHE, fn)))
    rows.sort(key=lambda r: (r["point"], r["N"]))
    return rows


def sens_main(args):
    """S_N = d E c_hat^L / d c0 at SENS_POINTS x SENS_WIDTHS: Monte-Carlo (pathwise, CRN) against
    S_inf, order 1 (S + delta/N) and order 2 (S + delta/N + delta2/N^2), Eq. 4.94-4.97."""
    from resscale.finite_width.sensitivity import sensitivity_correction, sensitivity_correction2
    budget = {"S1": 400_000, "S2": 400_000, "S3": 300_000}
    out = []
    for key, pt in SENS_POINTS.items():
        net = rs.ResNet(**{k: v for k, v in pt.items() if k != "c0"})
        S = rs.sensitivity(net, pt["c0"], 1.0)
        d1 = sensitivity_correction(net, pt["c0"], 1.0)
        d2 = sensitivity_correction2(net, pt["c0"], 1.0)
        for N in SENS_WIDTHS:
            n_net = 8000 if args.quick else budget[key]
            c = sens_cell(key, pt, N, n_net, min(n_net, 20000), seed=7)
            m, se, m_plain = sens_estimate(c)
            o1, o2 = S + d1 / N, S + d1 / N + d2 / N ** 2
            out.append(dict(point=key, block=net.block, activation=net.phi.name, L=net.depth, alpha=net.alpha,
                            sigma_w2=net.sigma_w2, sigma_b2=net.sigma_b2, c0=pt["c0"], N=N, S=int(c.shape[0]),
                            mc=m, se=se, mc_plain=m_plain, S_inf=S, delta=d1, delta2=d2, o1=o1, o2=o2,
                            z1=(o1 - m) / se, z2=(o2 - m) / se, eps=abs(d2) / (N * abs(d1))))
            print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in out[-1].items()}), flush=True)
    return out


def render_sens():
    path = os.path.join(CACHE, "sens.json")
    if not os.path.exists(path):
        return []
    rows = json.load(open(path))
    out = ["### Finite-width sensitivity S_N to O(1/N^2) (Sec. 4.12.1, Eq. 4.94-4.97)", "",
           "S_N = d E[c_hat^L]/d c0 (two inputs, q0 = 1) from the exact chain sampler: per network c_hat^L at "
           f"c0 + (-{SENS_DC:g}, -{SENS_DC / 2:g}, {SENS_DC / 2:g}, {SENS_DC:g}) with common random numbers, "
           "Richardson of the two central differences (bias O(dc^4)); SE over networks. "
           "order 1 = S + delta/N, order 2 = S + delta/N + delta2/N^2 "
           "(`sensitivity_finite_width(..., order=2)`); z = (theory - MC)/SE; eps = |delta2|/(N |delta|).", "",
           "| pt | block | phi | L | alpha | sw2 | sb2 | c0 | N | S | MC S_N | SE | S_inf | order 1 | order 2 | "
           "z order 1 | z order 2 | eps |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['point']} | {r['block']} | {r['activation']} | {r['L']} | {r['alpha']} | {r['sigma_w2']} | "
                   f"{r['sigma_b2']} | {r['c0']} | {r['N']} | {r['S']} | {r['mc']:.5f} | {r['se']:.5f} | "
                   f"{r['S_inf']:.5f} | {r['o1']:.5f} | {r['o2']:.5f} | {r['z1']:.1f} | {r['z2']:.1f} | "
                   f"{r['eps']:.3f} |")
    out += ["", "Reading: order 2 is within 4 SE at every N = 16-32 row and closer to MC than order 1 on 4 of the 6 "
            "(S1/S3 at N = 16: 3.0/3.1 SE against 4.6/5.6 SE; S2 at N = 16: 0.1 against 1.3 SE; S1 at N = 32: 0.8 against "
            "2.0 SE; S2/S3 at N = 32: both orders within 1.8 SE, unresolved). At N = 8 with eps = |delta2|/(N |delta|) ~ 0.4-0.6 (S1, S3) it overshoots by about as much as order 1 "
            "undershoots (11.6 / 10.7 SE against 8.5 / 12.7 SE): the series is asymptotic there, as for the covariance. "
            "The level E c_hat^L (Eq. 4.96) is better than its derivative: S1, N = 8, c0 = 0.48: MC 0.42569 +- 0.00067, "
            "order 1 0.41931, order 2 0.42711."]
    return out + [""]


def theory(net, K0, N):
    fw = rs.finite_width(net, width=N, K0=K0, order=2)
    return fw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few networks (smoke run)")
    ap.add_argument("--points", default=",".join(POINTS))
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--budget", type=float, default=6e7, help="work units S*N*L*P per (point, N)")
    ap.add_argument("--write", action="store_true", help="write the docs/validation.md section")
    ap.add_argument("--json", default=os.path.join(CACHE, "results.json"))
    ap.add_argument("--render", action="store_true",
                    help="only (re)write the docs section from every saved results*.json")
    ap.add_argument("--resummed", action="store_true",
                    help="also the resummed prediction (order='resummed', Sec. 4.12.3) for N <= 32")
    ap.add_argument("--sens", action="store_true",
                    help="run the finite-width sensitivity table (S_N to O(1/N^2), Sec. 4.12.1) instead")
    args = ap.parse_args(argv)
    os.makedirs(CACHE, exist_ok=True)
    if args.sens:
        srows = sens_main(args)
        save_json_atomic(os.path.join(CACHE, "sens.json"), srows)
        if args.write:
            write_sections(_saved_rows())
        return srows
    if args.render:
        rows = _saved_rows()
        write_sections(rows)
        print(render(rows))
        return rows
    widths = [int(w) for w in args.widths.split(",")]
    rows = []
    for name in args.points.split(","):
        pt = POINTS[name]
        net, K0 = make_net(pt)
        P = K0.shape[0]
        t = time.time()
        fw = theory(net, K0, widths[0])
        t_th = time.time() - t
        co = _Coords(P, with_mean=(net.block == "reduced"))
        xmf = co.x_of(fw.kernel, np.asarray(rs.mean_field_mean(net, K0=K0), dtype=float)
                      if net.block == "reduced" else None)
        key = name + "_" + hashlib.sha1(json.dumps(pt, sort_keys=True).encode()).hexdigest()[:8]
        pairs = co.pairs
        V = np.array([[fw.covariance[a, b, c, d] for (c, d) in pairs] for (a, b) in pairs])
        V1 = np.array([[fw.covariance_correction[a, b, c, d] for (c, d) in pairs] for (a, b) in pairs])
        M = np.array([fw.mean_shift[a, b] for (a, b) in pairs])
        M2 = np.array([fw.mean_shift2[a, b] for (a, b) in pairs])
        for N in widths:
            S = int(min(4e5, max(2e4, args.budget / (N * net.depth * P))))
            if args.quick:
                S = 4000
            chunk = min(S, 20000)
            S = chunk * (-(-S // chunk))
            x, y = run_cell(key, pt, N, S, chunk, seed=1)
            C, Cse, Mest, Mse, Mse_plain = estimates(x, y, xmf, N, co.nk)
            iu = np.triu_indices(co.nk)
            lo = V[iu]
            nlo = (V + V1 / N)[iu]
            mc, se = C[iu], Cse[iu]
            scale = np.sqrt(np.outer(np.diag(C), np.diag(C)))[iu]   # error relative to sqrt(Var Var)
            err_lo = float(np.max(np.abs(lo - mc) / scale))
            err_nlo = float(np.max(np.abs(nlo - mc) / scale))
            z_lo = float(np.max(np.abs(lo - mc) / se))
            z_nlo = float(np.max(np.abs(nlo - mc) / se))
            mscale = max(float(np.max(np.abs(M))), 1e-300)
            merr_lo = float(np.max(np.abs(M - Mest)) / mscale)
            merr_nlo = float(np.max(np.abs(M + M2 / N - Mest)) / mscale)
            Mse = np.maximum(Mse, 1e-9 * mscale)    # entries with f linear in them: y = delta exactly
            mz_lo = float(np.max(np.abs(M - Mest) / Mse))
            mz_nlo = float(np.max(np.abs(M + M2 / N - Mest) / Mse))
            eps = expansion_ratio(fw.covariance, fw.covariance_correction, fw.mean_shift, fw.mean_shift2, N)
            # second-order remainder: what is left of N Cov after V + V1/N, relative (measured)
            row = dict(point=name, block=net.block, activation=net.phi.name, L=net.depth, alpha=net.alpha,
                       sigma_w2=net.sigma_w2, sigma_b2=net.sigma_b2, P=P, N=N, S=int(x.shape[0]),
                       err_lo=err_lo, err_nlo=err_nlo, z_lo=z_lo, z_nlo=z_nlo, se_rel=float(np.max(se / scale)),
                       merr_lo=merr_lo, merr_nlo=merr_nlo, mz_lo=mz_lo, mz_nlo=mz_nlo,
                       mse_rel=float(np.max(Mse) / mscale), cv_gain=float(np.median(Mse_plain / Mse)),
                       eps=eps, eps2=eps * eps, theory_s=t_th,
                       var00=dict(mc=float(C[0, 0]), se=float(Cse[0, 0]), V=float(V[0, 0]),
                                  V_V1=float(V[0, 0] + V1[0, 0] / N)))
            if N == 32 and not args.quick:
                cpath = os.path.join(CACHE, f"{key}_simcheck_N{N}.json")
                if os.path.exists(cpath):
                    chk = json.load(open(cpath))
                else:
                    Ssim = int(min(1e5, max(1e4, args.budget / 4 / (N * net.depth * P))))
                    v, s = sim_check(net, K0, N, Ssim, seed=3)
                    chk = dict(v=float(v), se=float(s), S=Ssim)
                    save_json_atomic(cpath, chk)
                row["simcheck_z"] = (chk["v"] - float(C[0, 0])) / float(np.hypot(chk["se"], Cse[0, 0]))
            if args.resummed and N <= 32:
                try:
                    t = time.time()
                    rr = rs.finite_width(net, width=N, K0=K0, order="resummed")
                    Rc = np.array([[rr.resummed_covariance[a, b, c, d] for (c, d) in pairs] for (a, b) in pairs])[iu]
                    Rm = N * (np.array([rr.resummed_mean[a, b] for (a, b) in pairs]) - xmf[:co.nk])
                    row.update(err_res=float(np.max(np.abs(Rc - mc) / scale)), z_res=float(np.max(np.abs(Rc - mc) / se)),
                               merr_res=float(np.max(np.abs(Rm - Mest)) / mscale), res_s=time.time() - t)
                    row["var00"]["res"] = float(Rc[0])
                except NotImplementedError as exc:
                    row["res_note"] = str(exc)[:60]
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                              if k != "var00"}), flush=True)
    save_json_atomic(args.json, rows)
    if args.write:
        write_sections(rows)
    return rows


def write_sections(rows):
    """Write the closed-chain residual rows and the feed-forward rows to their docs sections."""
    ff = [r for r in rows if r["block"] == "feedforward"]
    rest = [r for r in rows if r["block"] != "feedforward"]
    if rest:
        write_marked_section(DOC, render(rest), MARK)
    if ff:
        write_marked_section(DOC, render_feedforward(ff), MARK_FF)


def render_feedforward(rows):
    """The feed-forward table: the same columns as :func:`render`, its own header and reading."""
    body = render(rows, header=False).split("\n")
    table = [line for line in body if line.startswith("|")]
    out = ["### Next order in 1/N: the feed-forward block (Eq. 4.103)", "",
           "Generated by `scripts/validate_next_order.py --points G,H,I --write`. The feed-forward net is the "
           "closed chain of Sigma^l = sigma_w2 Ghat(h^l) + sigma_b2 (rows of h^{l+1} i.i.d. N(0, Sigma^l) given "
           "layer l) with a Wishart readout, so its Monte-Carlo sampler is exact; columns as in the table "
           "above (no resummed column: `order=\"resummed\"` is not offered for this block).", ""] + table
    out += ["", threshold_summary(rows), "",
            "Reading (measured): at N = 32 the next order brings the covariance error from 4.8-18% to 0.8-2.2% "
            "(<= 2.9 SE) at all three points; FFNet corrections grow like depth / width (V1 / V ~ 6 for relu at "
            "L = 3), so eps is ~ L / N. The mean follows M + M2/N for erf and relu within 1.5 SE from N = 32 (N = 16: 0.9-2.5% of |M|, <= 4.5 SE); for the gelu point "
            "the large-variance entry converges slowly: N (E Khat - K) - M = -0.02 / 0.07 / 0.17 at N = 8 / 16 / 32 "
            "against M2 = 0.24 (Richardson from N = 16 and 32: 0.27 +- 0.03, so M2 is right and the O(1/N^3) term "
            "is large), which leaves M + M2/N 1.2% of |M| (5.8 SE) off at N = 32 and worse than M alone at N <= 16.", ""]
    return "\n".join(out) + "\n"


def render(rows, header=True):
    out = ["## Next order in 1/N (issue 10)", "",
           "Generated by `scripts/validate_next_order.py` (docs/theory.md Sec. 4.12). Monte-Carlo: the exact "
           "conditional-Gaussian sampler of the closed chain (Eq. 4.40 / 4.70), S networks per width, checked "
           "against `rs.simulate(method=\"gram\")` at N = 32 (column sim z: N Var Khat_00 of the two samplers, "
           "in combined SE). Covariance errors: max over the entries (ab, cd) of |theory - MC| / sqrt(MC_abab MC_cdcd) "
           "(LO: V, NLO: V + V1/N), and the same in units of the MC standard error (z). Mean: N (E Khat - K) "
           "against M (LO) and M + M2/N (NLO), error relative to max |M|, martingale control variate (Eq. 4.93). "
           "eps = `expansion_ratio` (Eq. 4.92); `expansion_parameter` = eps^order. RES: the resummed "
           "cumulant-closure prediction (`order=\"resummed\"`, Sec. 4.12.3; N <= 32; '-': not computed, "
           "'n/a': refused, the P = 3 reduced state has n = 9 > 6 coordinates).", "",
           "| pt | block | phi | L | alpha | sw2 | P | N | S | cov err LO | cov err NLO | cov err RES | z LO | z NLO | "
           "z RES | MC SE | mean err LO | mean err NLO | mean err RES | z LO | z NLO | eps | eps^2 | sim z |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def res(r, key, fmt):
        if key in r:
            return fmt(r[key])
        return "n/a" if "res_note" in r else "-"
    for r in rows:
        out.append(f"| {r['point']} | {r['block']} | {r['activation']} | {r['L']} | {r['alpha']} | {r['sigma_w2']} | "
                   f"{r['P']} | {r['N']} | {r['S']} | {100 * r['err_lo']:.1f}% | {100 * r['err_nlo']:.1f}% | "
                   f"{res(r, 'err_res', lambda v: f'{100 * v:.1f}%')} | "
                   f"{r['z_lo']:.1f} | {r['z_nlo']:.1f} | {res(r, 'z_res', lambda v: f'{v:.1f}')} | "
                   f"{100 * r['se_rel']:.2f}% | {100 * r['merr_lo']:.1f}% | "
                   f"{100 * r['merr_nlo']:.1f}% | {res(r, 'merr_res', lambda v: f'{100 * v:.0f}%')} | "
                   f"{r['mz_lo']:.1f} | {r['mz_nlo']:.1f} | {r['eps']:.3f} | "
                   f"{r['eps2']:.4f} | {r.get('simcheck_z', float('nan')):.1f} |")
    if not header:
        return "\n".join(out) + "\n"
    out += ["", threshold_summary(rows), ""] + render_sens() + ["",
            "Reading (measured, issue 10): the next order removes 80-95% of the leading-order covariance error "
            "wherever eps <~ 0.25 (e.g. N = 32: relu two_layer 8.6% -> 0.4%, relu reduced P = 3 17.5% -> 3.3%, "
            "gelu reduced L = 20 (the issue's case) 17.7% -> 2.6%); the leading-order error itself is ~ eps. "
            "The series is asymptotic-like at small width: at eps ~ 0.25-0.7 (N = 8-16 for relu and the deep gelu "
            "point) V + V1/N is still 4-15% off (4-10 SE), i.e. the neglected O(1/N^2) term is ~ 0.3-1 x eps^2 "
            "of V. The resummed cumulant closure (RES, Sec. 4.12.3) does not beat order 2 on any row (measured "
            "negative: 12-29% at N = 8-16 for relu two_layer, worse than order 1 for erf at N = 8-16, mean off by "
            "O(|M|)); it approaches order 2 only at N = 32 for erf. The mean N (E Khat - K) follows M + M2/N to ~1-2% of |M| down "
            "to N = 16 (at N = 8-12 the erf/relu rows leave 4-7 SE: O(1/N^2) terms of N E Khat). At N >= 64 the "
            "O(1/N) correction is below the MC resolution (~0.6% SE) and LO and NLO agree with MC alike."]
    return "\n".join(out) + "\n"


def threshold_summary(rows, tol=0.05):
    """The measured 5% thresholds of expansion_parameter (eps for order 1, eps^2 for order 2)."""
    lines = []
    for order, err, key in ((1, "err_lo", "eps"), (2, "err_nlo", "eps2")):
        bad = sorted(r[key] for r in rows if r[err] > tol)
        good = sorted(r[key] for r in rows if r[err] <= tol)
        first_bad = bad[0] if bad else float("inf")
        ok_below = [g for g in good if g < first_bad]
        lines.append(f"- order={order}: covariance within {100 * tol:.0f}% of Monte-Carlo at every point with "
                     f"expansion_parameter < {first_bad:.3g} (largest passing below it: "
                     f"{max(ok_below) if ok_below else float('nan'):.3g}; {len(bad)} of {len(rows)} rows above 5%: "
                     f"expansion_parameter {', '.join(f'{b:.3g}' for b in bad) or '-'}).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
