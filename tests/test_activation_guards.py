"""Guards of issue 12 in the mean-field core: no silent inf/NaN, user callables checked."""
import numpy as np
import pytest

import resscale as rs
from resscale.activations import find_kinks

K0 = np.array([[1.0, 0.5], [0.5, 1.0]])


def test_reduced_relu_deep_kernel_raises_instead_of_inf():
    net = rs.ResNet(depth=10_000, alpha=1.0, activation="relu", block="reduced")
    with pytest.raises(OverflowError, match="float64"):
        rs.mean_field_kernel(net, K0=K0)
    # the normalised kernel stays available
    tr = rs.kernel_recursion(net, K0=K0)
    assert np.all(np.isfinite(tr.kernels)) and np.isfinite(tr.log_scale)


def test_true_kernel_checks_the_entries_not_only_the_log_scale():
    net = rs.ResNet(depth=2000, alpha=1.0, activation="relu", block="reduced")
    tr = rs.kernel_recursion(net, K0=K0, all_layers=True)
    lm = tr.log_scale + np.log(tr.kernels.max(axis=(1, 2)))
    d = int(np.argmax(lm > 709.8))       # first depth whose kernel is beyond float64
    assert d > 0 and tr.log_scale[d] < 700.0
    with pytest.raises(OverflowError):
        rs.mean_field_kernel(net.replace(depth=d), K0=K0)
    assert np.all(np.isfinite(rs.mean_field_kernel(net.replace(depth=d - 2), K0=K0)))


def test_reduced_gelu_large_alpha_raises_naming_layer_and_alpha():
    net = rs.ResNet(depth=100, alpha=100.0, activation="gelu", block="reduced")
    with pytest.raises(OverflowError, match=r"layer \d+ of depth 100.*alpha = 100"):
        rs.mean_field_kernel(net, K0=K0)
    with pytest.raises(OverflowError, match="alpha"):
        rs.sensitivity(net, 0.5)


def test_callable_checked_beyond_three():
    with pytest.raises(ValueError, match="not finite at u = -12"):
        rs.ResNet(activation=lambda u: np.log(u + 3.2))


def test_quadrature_nan_names_the_activation():
    # finite on [-12, 12] but NaN further out: the quadrature at large variance finds it
    f = lambda u: np.where(np.abs(u) < 20, np.tanh(u), np.nan)  # noqa: E731
    phi = rs.from_callable(f, name="holey", check_smooth=False)
    net = rs.ResNet(depth=2, alpha=1.0, activation=phi)
    with pytest.raises(ValueError, match="'holey' returned NaN"):
        rs.mean_field_kernel(net, K0=100.0 * K0)


@pytest.mark.parametrize("fn, where", [(lambda u: np.maximum(u, 0.0), 0.0), (lambda u: np.abs(u - 0.37), 0.37),
                                       (lambda u: np.maximum(u, 0.9 * u), 0.0),
                                       (lambda u: np.where(u > 1.0, 1.0, 0.0), 1.0)])
def test_kinks_are_detected_and_refused(fn, where):
    assert find_kinks(fn) == [pytest.approx(where, abs=0.011)]
    with pytest.raises(ValueError, match="kinks="):
        rs.ResNet(activation=fn)


@pytest.mark.parametrize("fn", [np.tanh, np.sin, lambda u: u ** 3 / 10, lambda u: np.exp(-u * u)])
def test_smooth_callables_pass(fn):
    assert find_kinks(fn) == []
    assert rs.from_callable(fn).smooth


def test_declared_kink_relu_callable_is_flagged_and_roughly_right():
    from resscale.activations import KinkedActivationWarning
    with pytest.warns(KinkedActivationWarning, match="converges only slowly"):
        phi = rs.from_callable(lambda u: np.maximum(u, 0.0), d1=lambda u: (u > 0) * 1.0, kinks=[0.0],
                               name="myrelu")
    assert not phi.smooth and phi.kinks == (0.0,) and not phi.supports_finite_width
    relu = rs.get_activation("relu")
    assert not relu.smooth and relu.supports_finite_width and rs.get_activation("tanh").supports_finite_width
    for block in ("full", "reduced"):
        a = rs.mean_field_kernel(rs.ResNet(depth=5, alpha=0.5, activation=phi, block=block), K0=K0)
        b = rs.mean_field_kernel(rs.ResNet(depth=5, alpha=0.5, activation="relu", block=block), K0=K0)
        np.testing.assert_allclose(a, b, rtol=3e-3)   # measured 3.3e-4 (full)
        Sa = rs.sensitivity(rs.ResNet(depth=5, alpha=0.5, activation=phi, block=block), 0.7)
        Sb = rs.sensitivity(rs.ResNet(depth=5, alpha=0.5, activation="relu", block=block), 0.7)
        assert Sa == pytest.approx(Sb, rel=3e-2)


def test_wrong_declared_derivative_is_refused():
    with pytest.raises(ValueError, match="d1 does not match"):
        rs.from_callable(np.tanh, d1=lambda u: np.ones_like(u))
