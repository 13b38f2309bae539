"""Monte-Carlo engine (resscale.simulation), issue 3.

Statistical checks use fixed seeds and tolerances of 4 standard errors (SE of
the mean over networks; combined SE sqrt(SE1^2 + SE2^2) for two independent
estimates). Where a mean-field value is the reference, an explicit O(1/N)
allowance of 4 |K| / N is added for the finite-width bias M/N (measured
deviations are well below it; see docs/simulation.md).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import resscale as rs
from resscale.inputs import two_input_kernel
from resscale.simulation import SimulationResult, kernel_factor, simulate

K0 = two_input_kernel(0.5, 1.0)


def lin_net(depth=5, alpha=0.5, sw2=1.0, block="full"):
    return rs.ResNet(depth=depth, alpha=alpha, sigma_w2=sw2, sigma_b2=0.0, activation="linear", block=block)


def within(est, ref, se, k=4.0, extra=0.0):
    est, ref, se = map(np.asarray, (est, ref, se))
    assert np.all(se > 0), "vacuous check: zero standard error"
    dev = np.abs(est - ref)
    assert np.all(dev <= k * se + extra), f"deviation {dev} > {k} SE {se} + {extra}"


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("kw, name", [
    (dict(width=0), "width"), (dict(width=2.5), "width"), (dict(n_networks=0), "n_networks"),
    (dict(backend="jax"), "backend"), (dict(chunk_size=0), "chunk_size"), (dict(dtype="float16"), "dtype"),
    (dict(method="exact"), "method"), (dict(seed=-1), "seed"), (dict(device="cuda"), "device"),
])
def test_bad_input_names_parameter(kw, name):
    args = dict(net=lin_net(), width=8, n_networks=4, K0=K0)
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        simulate(**args)


def test_bad_inputs_kernel_and_sensitivity():
    net = lin_net()
    with pytest.raises(ValueError, match="exactly one of X"):
        simulate(net, 8, 4)
    with pytest.raises(ValueError, match="K0"):
        simulate(net, 8, 4, K0=np.array([[1.0, 2.0], [2.0, 1.0]]))  # not PSD
    with pytest.raises(ValueError, match="sensitivity"):
        simulate(net, 8, 4, K0=np.eye(3), sensitivity=True)
    with pytest.raises(ValueError, match="net"):
        simulate("net", 8, 4, K0=K0)


# ------------------------------------------------------------------ structure, reproducibility
def test_shapes_layers_and_layer0():
    net = rs.ResNet(depth=4, alpha=0.3, sigma_b2=0.1, activation="tanh")
    r = simulate(net, 16, 50, K0=K0, all_layers=True, sensitivity=True)
    assert r.kernels.shape == (50, 2, 2) and r.layer_kernels.shape == (50, 5, 2, 2)
    assert np.array_equal(r.layer_kernels[:, -1], r.kernels)
    assert r.sens_c.shape == (50,) and r.sens_K.shape == (50, 2, 2)
    assert np.allclose(r.kernels, np.swapaxes(r.kernels, 1, 2))
    assert r.mean(layer=slice(None)).shape == (5, 2, 2)
    assert r.cov().shape == (2, 2, 2, 2) and np.allclose(r.cov(), 16 * r.cov(scaled=False))
    with pytest.raises(ValueError, match="all_layers"):
        simulate(net, 16, 5, K0=K0).mean(layer=0)


@pytest.mark.parametrize("method", ["gram", "weights"])
def test_chunking_invariance_bit_identical(method):
    net = rs.ResNet(depth=3, alpha=0.4, sigma_b2=0.2, activation="erf", block="reduced")
    ref = simulate(net, 12, 11, K0=K0, seed=3, method=method, all_layers=True, sensitivity=True)
    for cs in (1, 4, 11):
        r = simulate(net, 12, 11, K0=K0, seed=3, method=method, all_layers=True, sensitivity=True,
                     chunk_size=cs)
        for k in ("kernels", "layer_kernels", "sens_c", "sens_K"):
            assert np.array_equal(getattr(r, k), getattr(ref, k)), (cs, k)
    # a prefix of the networks is the same networks
    r5 = simulate(net, 12, 5, K0=K0, seed=3, method=method, all_layers=True, sensitivity=True)
    assert np.array_equal(r5.kernels, ref.kernels[:5])
    other = simulate(net, 12, 5, K0=K0, seed=4, method=method)
    assert not np.allclose(other.kernels, r5.kernels)


def test_kernel_factor_psd_singular():
    x = np.array([[1.0, 0.2, 0.0], [0.3, 1.0, 0.5]])
    K = x @ x.T
    K3 = np.array([[K[0, 0], K[0, 1], K[0, 0]], [K[0, 1], K[1, 1], K[0, 1]], [K[0, 0], K[0, 1], K[0, 0]]])
    F = kernel_factor(K3)  # inputs 0 and 2 coincide: singular
    assert np.allclose(F @ F.T, K3)
    r = simulate(rs.ResNet(depth=3, alpha=0.5, activation="relu"), 8, 3, K0=K3, method="weights")
    assert np.allclose(r.kernels[:, 0, 0], r.kernels[:, 2, 2]) and np.allclose(r.kernels[:, 0, 2], r.kernels[:, 0, 0])
    F2 = kernel_factor(two_input_kernel(1.0, 2.0))
    assert np.allclose(F2 @ F2.T, two_input_kernel(1.0, 2.0))


# ------------------------------------------------------------------ exact identities
@pytest.mark.parametrize("width", [3, 16, 128])
@pytest.mark.parametrize("method", ["gram", "weights"])
def test_linear_full_mean_kernel_exact_every_width(width, method):
    """linear phi, full block, sigma_b2 = 0: E[Khat^L] = (1 + alpha^2 sigma_w2)^L K0 at every N."""
    net = lin_net(depth=6, alpha=0.5, sw2=1.5)
    S = 1500 if method == "gram" or width < 100 else 300
    r = simulate(net, width, S, K0=K0, seed=width, method=method)
    within(r.mean(), (1 + 0.25 * 1.5) ** 6 * K0, r.sem())


def test_linear_full_exact_with_data_input_layer():
    """Same identity through the random input layer (X mode), K0 = sigma_in2 X X^T/d + sigma_bin2."""
    X = np.array([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [0.0, 1.0, 1.0]])
    net = rs.ResNet(depth=4, alpha=0.7, sigma_w2=1.0, sigma_in2=2.0, sigma_bin2=0.3, activation="linear")
    K0x = rs.inputs.input_kernel(net, X=X)
    for method in ("weights", "gram"):
        r = simulate(net, 10, 1500, X=X, seed=5, method=method)
        within(r.mean(), (1 + 0.49) ** 4 * K0x, r.sem())


def test_layer0_covariance_exact():
    """h^0 ~ N(0, K0) i.i.d.: N Cov(Khat^0_ab, Khat^0_cd) = K_ac K_bd + K_ad K_bc exactly."""
    r = simulate(lin_net(depth=1), 20, 3000, K0=K0, all_layers=True, seed=11)
    V = np.einsum("ac,bd->abcd", K0, K0) + np.einsum("ad,bc->abcd", K0, K0)
    within(r.cov(layer=0), V, r.cov_sem(layer=0))


def test_gram_and_weights_sample_the_same_law():
    """The two exact samplers agree in mean and in N-scaled covariance at small N (where they'd differ)."""
    net = rs.ResNet(depth=5, alpha=0.8, sigma_w2=1.2, sigma_b2=0.2, activation="erf", block="reduced")
    a = simulate(net, 6, 3000, K0=K0, seed=1, method="gram", sensitivity=True)
    b = simulate(net, 6, 3000, K0=K0, seed=2, method="weights", sensitivity=True)
    within(a.mean(), b.mean(), np.hypot(a.sem(), b.sem()))
    within(a.cov(), b.cov(), np.hypot(a.cov_sem(), b.cov_sem()) + 1e-12)
    (sa, ea), (sb, eb) = a.sensitivity(), b.sensitivity()
    within(sa, sb, math.hypot(ea, eb))


# ------------------------------------------------------------------ sensitivity estimator
@pytest.mark.parametrize("act, block, sb2", [("erf", "full", 0.0), ("relu", "reduced", 0.3),
                                             ("tanh", "feedforward", 0.1), ("gelu", "full", 0.2)])
def test_sensitivity_jvp_equals_finite_difference_per_network(act, block, sb2):
    """With explicit weights the tangent is the exact derivative of each network's c^L(c0)."""
    net = rs.ResNet(depth=4, alpha=0.6, sigma_w2=1.3, sigma_b2=sb2, activation=act, block=block)
    c0, e = 0.3, 1e-6
    kw = dict(width=10, n_networks=20, seed=7, method="weights")
    r = simulate(net, K0=two_input_kernel(c0, 1.5), sensitivity=True, **kw)
    cp = simulate(net, K0=two_input_kernel(c0 + e, 1.5), **kw).correlations()[:, 0, 1]
    cm = simulate(net, K0=two_input_kernel(c0 - e, 1.5), **kw).correlations()[:, 0, 1]
    assert np.allclose(r.sens_c, (cp - cm) / (2 * e), rtol=1e-5, atol=1e-7)
    assert np.array_equal(r.kernels, simulate(net, K0=two_input_kernel(c0, 1.5), **kw).kernels)


def test_sensitivity_limit_c0_one_is_continuous():
    net = rs.ResNet(depth=5, alpha=0.5, sigma_b2=0.1, activation="erf")
    kw = dict(width=12, n_networks=10, seed=2, method="weights", sensitivity=True)
    a = simulate(net, K0=two_input_kernel(1.0), **kw)
    b = simulate(net, K0=two_input_kernel(1.0 - 1e-10), **kw)  # theta ~ 1.4e-5: O(theta) deviation
    assert a.sens_K is None and np.allclose(a.sens_c, b.sens_c, rtol=1e-3)
    with pytest.raises(ValueError, match="c0"):
        a.response()


@pytest.mark.parametrize("width", [4, 32])
def test_sensitivity_alpha_zero_c0_one_exact(width):
    """alpha = 0: d E[c^L]/d c^0 at c0 = 1 is E[|P_perp z2|^2 / |z1|^2] = (N-1)/(N-2) exactly."""
    net = lin_net(depth=2, alpha=0.0)
    r = simulate(net, width, 4000, K0=two_input_kernel(1.0), sensitivity=True, seed=width)
    s, se = r.sensitivity()
    within(s, (width - 1) / (width - 2), se)


@pytest.mark.parametrize("method", ["gram", "weights"])
def test_response_linear_full_exact(method):
    """linear, full, sigma_b2 = 0: d E[Khat^L_ab]/d c0 = q0 (1 + alpha^2 sigma_w2)^L, d E[Khat^L_bb]/d c0 = 0."""
    net = lin_net(depth=5, alpha=0.6, sw2=1.0)
    q0 = 2.0
    r = simulate(net, 8, 2000, K0=two_input_kernel(0.4, q0), sensitivity=True, seed=9, method=method)
    m, se = r.response()
    within(m[0, 1], q0 * 1.36 ** 5, se[0, 1])
    within(m[1, 1], 0.0, se[1, 1])
    assert np.all(r.sens_K[:, 0, 0] == 0)


# ------------------------------------------------------------------ mean field
def _mf_sensitivity(net, c0, q0=1.0, e=1e-5):
    def c(cc):
        K = rs.mean_field_kernel(net, K0=two_input_kernel(cc, q0))
        return K[0, 1] / math.sqrt(K[0, 0] * K[1, 1])
    return (c(c0 + e) - c(c0 - e)) / (2 * e)


@pytest.mark.parametrize("act, block", [("erf", "full"), ("relu", "reduced")])
def test_mean_field_agreement_large_width(act, block):
    """|E[Khat^L] - K^L| <= 4 SE + 4 |K^L| / N, same for the sensitivity (N = 512)."""
    net = rs.ResNet(depth=8, alpha=0.5, sigma_w2=1.0, sigma_b2=0.1, activation=act, block=block)
    N = 512
    r = simulate(net, N, 300, K0=K0, sensitivity=True, seed=21)
    K = rs.mean_field_kernel(net, K0=K0)
    within(r.mean(), K, r.sem(), extra=4 * np.abs(K) / N)
    s, se = r.sensitivity()
    S = _mf_sensitivity(net, 0.5)
    within(s, S, se, extra=4 * abs(S) / N)


# ------------------------------------------------------------------ torch backend
def test_torch_agrees_with_numpy_and_is_reproducible():
    pytest.importorskip("torch")
    net = rs.ResNet(depth=4, alpha=0.6, sigma_w2=1.0, sigma_b2=0.1, activation="erf", block="full")
    kw = dict(width=16, n_networks=1500, K0=K0, sensitivity=True, seed=4)
    a = simulate(net, backend="torch", device="cpu", **kw)
    b = simulate(net, backend="numpy", **kw)
    within(a.mean(), b.mean(), np.hypot(a.sem(), b.sem()))
    (sa, ea), (sb, eb) = a.sensitivity(), b.sensitivity()
    within(sa, sb, math.hypot(ea, eb))
    a2 = simulate(net, backend="torch", device="cpu", **kw)
    assert np.array_equal(a.kernels, a2.kernels) and np.array_equal(a.sens_c, a2.sens_c)
    w = simulate(net, backend="torch", device="cpu", method="weights", width=16, n_networks=300, K0=K0,
                 dtype="float32", seed=1)
    within(w.mean(), b.mean(), np.hypot(w.sem(), b.sem()))


def test_float32_numpy():
    net = lin_net(depth=4)
    r = simulate(net, 16, 1000, K0=K0, dtype="float32", seed=8)
    within(r.mean(), 1.25 ** 4 * K0, r.sem())
    assert r.dtype == "float32"


# ------------------------------------------------------------------ storage and resume
def test_save_load_roundtrip(tmp_path):
    net = rs.ResNet(depth=2, activation="relu", block="reduced", sigma_b2=0.1)
    r = simulate(net, 8, 6, K0=K0, all_layers=True, sensitivity=True)
    r.save(tmp_path / "r.npz")
    q = SimulationResult.load(tmp_path / "r.npz")
    assert q.net == net and q.width == 8 and np.array_equal(q.layer_kernels, r.layer_kernels)
    assert np.array_equal(q.sens_K, r.sens_K)


class _Stop(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    net = rs.ResNet(depth=3, alpha=0.5, sigma_b2=0.1, activation="erf")
    kw = dict(width=8, n_networks=23, K0=K0, seed=5, chunk_size=4, sensitivity=True, all_layers=True)
    full = simulate(net, **kw)
    calls = []

    def boom(i, res):
        calls.append(i)
        if len(calls) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        simulate(net, out=tmp_path / "run", _on_chunk=boom, **kw)
    assert len(list((tmp_path / "run" / "chunks").glob("*.npz"))) == 3
    resumed = simulate(net, out=tmp_path / "run", _on_chunk=lambda i, r: calls.append(i), **kw)
    assert len(calls) == 3 + 3  # only the 3 missing chunks... of 6 were recomputed
    for k in ("kernels", "layer_kernels", "sens_c", "sens_K"):
        assert np.array_equal(getattr(resumed, k), getattr(full, k))
    again = SimulationResult.load(tmp_path / "run" / "result.npz")
    assert np.array_equal(again.kernels, full.kernels)
    with pytest.raises(ValueError, match="different simulation"):
        simulate(net.replace(alpha=0.6), out=tmp_path / "run", **kw)


def test_resume_with_more_networks_reuses_chunks(tmp_path):
    net = lin_net(depth=2)
    simulate(net, 8, 8, K0=K0, chunk_size=4, out=tmp_path)
    seen = []
    r = simulate(net, 8, 12, K0=K0, out=tmp_path, _on_chunk=lambda i, res: seen.append(i))
    assert seen == [2] and np.array_equal(r.kernels, simulate(net, 8, 12, K0=K0, chunk_size=4).kernels)


# ------------------------------------------------------------------ parallel execution
def test_dask_local_cluster_same_result():
    distributed = pytest.importorskip("dask.distributed")
    net = rs.ResNet(depth=2, alpha=0.5, activation="erf")
    ref = simulate(net, 8, 10, K0=K0, chunk_size=3, seed=2)
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            r = simulate(net, 8, 10, K0=K0, chunk_size=3, seed=2, scheduler=client)
            r2 = simulate(net, 8, 10, K0=K0, chunk_size=3, seed=2, scheduler=cluster.scheduler_address)
    assert np.array_equal(r.kernels, ref.kernels) and np.array_equal(r2.kernels, ref.kernels)
