"""Large-N Monte-Carlo check of the relu finite-width theory (V and M), torch, GPU or CPU.

docs/validation.md shows relu V at P = 2 2-3.7 SE above the 1/N extrapolation of MC from
N = 16..64, and relu M at P = 3 2-3.4 SE below. Hypothesis: the a + b/N extrapolation
from small N is biased for relu. This script simulates the three relu points of
scripts/validate_finite_width.py at widths 32..512 with many networks so that the
extrapolation can be redone from large N (scripts/analyse_relu_check.py).

Simulator: the exact conditional-Gaussian dynamics of the full block (docs/theory.md
Eq. 4.4; same law of (Khat^0..Khat^L) as drawing the weights), batched over networks in
torch (float64). M uses the reference-particle control variate of
scripts/validate_finite_width.py (known mean, unbiased).

Writes $OUT/relu_check.json (or --out): per point and width, N*Var/N*Cov entries (V_N)
and N*(E Khat - K) entries (M_N) with SEs, plus theory V, M.

    PYTHONPATH=. python scripts/gpu_relu_check.py                    # GPU, ~3-4 min on one H200
    PYTHONPATH=. python scripts/gpu_relu_check.py --tiny --device cpu  # smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import resscale as rs  # noqa: E402
from resscale.finite_width import finite_width  # noqa: E402

K3 = [[1.0, 0.4, 0.1], [0.4, 1.2, 0.3], [0.1, 0.3, 0.9]]
POINTS = {  # name: (alpha, L, sigma_w2, sigma_b2, K0) -- relu, full block (as in validate_finite_width.py)
    "relu_a0.5_L10_P2": (0.5, 10, 1.0, 0.0, [[1.0, 0.5], [0.5, 1.0]]),
    "relu_a0.3_L20_P2": (0.3, 20, 2.0, 0.1, [[1.0, 0.2], [0.2, 0.8]]),
    "relu_a0.4_L8_P3": (0.4, 8, 1.5, 0.0, K3),
}


def _chol(C):
    P = C.shape[-1]
    jit = 1e-13 * torch.diagonal(C, dim1=-2, dim2=-1).sum(-1)[..., None, None]
    eye = torch.eye(P, dtype=C.dtype, device=C.device)
    Lc, info = torch.linalg.cholesky_ex(C + jit * eye)
    if bool((info != 0).any()):
        lam, U = torch.linalg.eigh(C)
        Lc = U * lam.clamp_min(0).sqrt()[..., None, :]
    return Lc


def simulate(theory, net, K0, N, S, chunk, device, gen):
    """Per network Khat^L (S,P,P) and the centred control variate Y - E Y (S,P,P), float64 CPU."""
    P = K0.shape[0]
    L, a, sw2, sb2 = net.depth, net.alpha, net.sigma_w2, net.sigma_b2
    dt = torch.float64
    A4 = torch.tensor(theory["A"].reshape(L, P, P, P, P), dtype=dt, device=device)
    G = theory["G"]
    Rmf = [torch.tensor(np.linalg.cholesky(sw2 * G[l] + sb2 + 1e-300), dtype=dt, device=device) for l in range(L)]
    EPhi = theory["Ks"][L] + np.einsum("mabcd,mcd->ab", theory["A"].reshape(L, P, P, P, P), G[:L])
    R0 = torch.tensor(np.linalg.cholesky(K0), dtype=dt, device=device)
    KL, YL = [], []
    for s0 in range(0, S, chunk):
        B = min(chunk, S - s0)
        e = torch.randn((B, N, P), dtype=dt, device=device, generator=gen)
        h = e @ R0.T
        hb = h.clone()
        Y = torch.zeros((B, P, P), dtype=dt, device=device)
        for l in range(L):
            f = torch.relu(h)
            fb = torch.relu(hb)
            Gb = fb.transpose(1, 2) @ fb / N
            Y += torch.einsum("abcd,scd->sab", A4[l], Gb)
            C = sw2 * (f.transpose(1, 2) @ f) / N + sb2
            e = torch.randn((B, N, P), dtype=dt, device=device, generator=gen)
            h = h + a * (e @ _chol(C).transpose(1, 2))
            hb = hb + a * (e @ Rmf[l].T)
        KL.append((h.transpose(1, 2) @ h / N).cpu().numpy())
        Y += hb.transpose(1, 2) @ hb / N
        YL.append(Y.cpu().numpy() - EPhi)
    return np.concatenate(KL), np.concatenate(YL)


def estimates(Kh, Y, K, N):
    S = Kh.shape[0]
    z = N * (Kh - Y - K)
    M, Mse = z.mean(0), z.std(0, ddof=1) / math.sqrt(S)
    zr = N * (Kh - K)                                      # raw (no control variate), for reference
    Mraw, Mraw_se = zr.mean(0), zr.std(0, ddof=1) / math.sqrt(S)
    d = Kh - Kh.mean(0)
    prod = N * np.einsum("sab,scd->sabcd", d, d)
    V, Vse = prod.mean(0) * S / (S - 1), prod.std(0, ddof=1) / math.sqrt(S)
    return dict(M=M.tolist(), M_se=Mse.tolist(), M_raw=Mraw.tolist(), M_raw_se=Mraw_se.tolist(),
                V=V.tolist(), V_se=Vse.tolist())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,64,128,256,512")
    ap.add_argument("--networks", type=int, default=1_000_000, help="networks per (point, width), before the time cap")
    ap.add_argument("--budget-s", type=float, default=200.0, help="total simulation time budget (s)")
    ap.add_argument("--chunk-elems", type=float, default=1e8, help="networks*N*P per batch (memory)")
    ap.add_argument("--points", default=",".join(POINTS))
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 2 widths, few networks")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--out", default=None, help="JSON path (default $OUT/relu_check.json or ./relu_check.json)")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    widths = [int(w) for w in args.widths.split(",")]
    names = args.points.split(",")
    S_req = args.networks
    if args.tiny:
        widths, S_req, args.budget_s = widths[:2], 2000, 1e9
    out = args.out or os.path.join(os.environ.get("OUT", "."), "relu_check.json")
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    # time budget: share among (point, width) in proportion to the work S * N * L * P
    work = {(n, N): N * POINTS[n][1] * len(POINTS[n][4]) for n in names for N in widths}
    result = dict(device=str(device), torch=torch.__version__, widths=widths, points={},
                  note="V_N = N Cov(Khat^L) entries, M_N = N (E Khat^L - K^L) with control variate; "
                       "SE = std / sqrt(S); theory from resscale.finite_width")
    t_all = time.time()
    rate = None   # seconds per unit of (S * N * L * P), measured on the first run
    done = set()
    for name in names:
        alpha, L, sw2, sb2, K0 = POINTS[name]
        K0 = np.array(K0)
        P = K0.shape[0]
        net = rs.ResNet(depth=L, alpha=alpha, sigma_w2=sw2, sigma_b2=sb2, activation="relu", block="full")
        fw = finite_width(net, K0=K0)
        th = dict(Ks=fw.extras["Ks"], A=fw.extras["A"], G=fw.extras["G"])
        rec = dict(alpha=alpha, L=L, sigma_w2=sw2, sigma_b2=sb2, K0=K0.tolist(), K=fw.kernel.tolist(),
                   V_theory=fw.covariance.tolist(), M_theory=fw.mean_shift.tolist(), widths={})
        for N in widths:
            S = S_req
            if rate is not None:
                left = args.budget_s - (time.time() - t_all)
                rem = sum(v for k, v in work.items() if (k[0], k[1]) not in done)
                share = max(left, 0.0) * work[(name, N)] / max(rem, 1)
                S = int(min(S_req, max(5000, share / (rate * work[(name, N)]))))
            chunk = int(max(256, min(S, args.chunk_elems / (N * P))))
            t = time.time()
            Kh, Y = simulate(th, net, K0, N, S, chunk, device, gen)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.time() - t
            rate = dt / (S * work[(name, N)]) if rate is None else 0.5 * rate + 0.5 * dt / (S * work[(name, N)])
            est = estimates(Kh, Y, fw.kernel, N)
            est.update(S=S, seconds=dt)
            rec["widths"][str(N)] = est
            done.add((name, N))
            V, Vse, M, Mse = (np.array(est[k]) for k in ("V", "V_se", "M", "M_se"))
            print(f"{name:18s} N={N:4d} S={S:7d} {dt:6.1f}s  V0000={V[0, 0, 0, 0]:9.3f}+-{Vse[0, 0, 0, 0]:.3f} "
                  f"V0101={V[0, 1, 0, 1]:8.3f}+-{Vse[0, 1, 0, 1]:.3f}  M00={M[0, 0]:7.4f}+-{Mse[0, 0]:.4f} "
                  f"M01={M[0, 1]:7.4f}+-{Mse[0, 1]:.4f}", flush=True)
        result["points"][name] = rec
        print(f"{name:18s} theory    V0000={fw.covariance[0, 0, 0, 0]:9.3f} V0101={fw.covariance[0, 1, 0, 1]:8.3f}"
              f"  M00={fw.mean_shift[0, 0]:7.4f} M01={fw.mean_shift[0, 1]:7.4f}", flush=True)
    result["total_seconds"] = time.time() - t_all
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(result, fh)
    print(f"wrote {out} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
