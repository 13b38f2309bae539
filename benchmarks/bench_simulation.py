"""Throughput of the simulation engine (issue 3). A script, not a test.

    PYTHONPATH=. python benchmarks/bench_simulation.py                       # NumPy, CPU
    PYTHONPATH=. python benchmarks/bench_simulation.py --backend torch --device cuda \
        --width 1024 --networks 256 --depth 50                              # GPU

Workload: S networks of width N, depth L, P inputs, erf, full block. Rows:

* plain loop   : the obvious batched implementation (one bulk RNG call for
                 the (S, N, N) weights of a layer, one batched matmul);
* matmul limit : the batched matmul (S, N, N) @ (S, N, P) alone, on
                 pre-drawn weights: the physical limit of any dense-weight
                 simulation (no random numbers, no activation);
* engine weights / engine gram : ``resscale.simulate`` (method="weights",
                 the literal network; method="gram", the exact conditional
                 Gaussian sampler that never forms W).

Throughput is in network-layers per second; "GFLOP/s" counts the dense
forward pass 2 N^2 P per network-layer (equivalent flops for "gram").
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np


def best(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    ap.add_argument("--device", default=None, help="torch device (cpu, cuda)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--networks", type=int, default=64)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--inputs", type=int, default=2)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args(argv)

    import resscale as rs
    from resscale.simulation import simulate

    N, S, L, P = a.width, a.networks, a.depth, a.inputs
    net = rs.ResNet(depth=L, alpha=0.5, sigma_w2=1.0, activation="erf", block="full")
    X = np.random.default_rng(0).standard_normal((P, 8))
    K0 = rs.inputs.input_kernel(net, X=X)
    F = np.linalg.cholesky(K0 + 1e-12 * np.eye(P))
    scale = math.sqrt(net.sigma_w2 / N)
    rows = []

    if a.backend == "numpy":
        from scipy.special import erf
        dt = np.dtype(a.dtype)

        def plain():
            rng = np.random.default_rng(1)
            h = rng.standard_normal((S, N, P), dtype=dt) @ F.T.astype(dt)
            for _ in range(L):
                W = rng.standard_normal((S, N, N), dtype=dt)
                h = h + net.alpha * scale * (W @ erf(h))
            return np.swapaxes(h, 1, 2) @ h / N

        Wpre = np.random.default_rng(2).standard_normal((S, N, N), dtype=dt)
        A = np.random.default_rng(3).standard_normal((S, N, P), dtype=dt)

        def limit():
            for _ in range(L):
                np.matmul(Wpre, A)
        sync = lambda: None  # noqa: E731
        try:
            from threadpoolctl import threadpool_info
            blas = "; ".join(f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}"
                             for i in threadpool_info())
        except Exception:
            blas = "?"
        dev = f"CPU, BLAS: {blas}"
    else:
        import torch
        device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tdt = getattr(torch, a.dtype)
        Ft = torch.as_tensor(F.T, dtype=tdt, device=device)
        sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)

        def plain():
            g = torch.Generator(device=device).manual_seed(1)
            h = torch.randn((S, N, P), generator=g, dtype=tdt, device=device) @ Ft
            for _ in range(L):
                W = torch.randn((S, N, N), generator=g, dtype=tdt, device=device)
                h = h + net.alpha * scale * torch.bmm(W, torch.special.erf(h))
            out = h.transpose(1, 2) @ h / N
            sync()
            return out

        Wpre = torch.randn((S, N, N), dtype=tdt, device=device)
        A = torch.randn((S, N, P), dtype=tdt, device=device)

        def limit():
            for _ in range(L):
                torch.bmm(Wpre, A)
            sync()
        dev = f"torch {torch.__version__} on {device}" + (
            f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")

    def engine(method):
        def run():
            simulate(net, N, S, K0=K0, backend=a.backend, method=method, dtype=a.dtype,
                     chunk_size=S, **({"device": a.device} if a.backend == "torch" else {}))
            sync()
        return run

    # warm-up (imports, CUDA context, BLAS threads)
    simulate(net.replace(depth=1), N, 2, K0=K0, backend=a.backend, method="weights",
             **({"device": a.device} if a.backend == "torch" else {}))
    plain()
    limit()

    work = S * L
    flops = 2.0 * N * N * P * work
    for name, fn in [("plain loop", plain), ("matmul limit", limit),
                     ("engine weights", engine("weights")), ("engine gram", engine("gram"))]:
        t = best(fn, a.repeat)
        rows.append((name, t, work / t, flops / t / 1e9))

    t_plain, t_lim = rows[0][1], rows[1][1]
    print(f"# bench_simulation: {dev}")
    print(f"# workload: S={S} networks, N={N}, L={L}, P={P}, {a.dtype}, erf, full block")
    print(f"{'method':<16}{'time [s]':>10}{'net-layers/s':>15}{'GFLOP/s':>10}{'vs plain':>10}{'vs matmul':>11}")
    for name, t, thr, gf in rows:
        print(f"{name:<16}{t:>10.4f}{thr:>15.1f}{gf:>10.2f}{t_plain / t:>9.2f}x{100 * t_lim / t:>10.1f}%")
    print("# 'vs matmul' = (time of the bare batched matmul on pre-drawn weights) / (time): >100% means faster "
          "than any simulation that multiplies dense N x N weights.")


if __name__ == "__main__":
    main()
