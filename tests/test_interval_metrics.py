"""kreg.mc.metrics.interval_calibration_error and select_tau against closed forms."""

import math
from statistics import NormalDist

import numpy as np
import pytest

from kreg.mc.metrics import TAU_GRID
from kreg.mc.metrics import gaussian_log_likelihood
from kreg.mc.metrics import interval_calibration_error
from kreg.mc.metrics import select_tau

PHI = NormalDist()
LEVELS = np.round(np.arange(0.05, 1.0, 0.05), 2)


def _normal_quantiles(n):
    """y_i = Phi^-1((i + 1/2) / n): a sample whose coverage is exact to 1/n."""
    return np.array([PHI.inv_cdf((i + 0.5) / n) for i in range(n)])


def test_calibrated_intervals_have_no_error():
    y = _normal_quantiles(10_000)
    err, levels, observed = interval_calibration_error(np.zeros_like(y), np.ones_like(y), y)
    np.testing.assert_array_equal(levels, LEVELS)
    np.testing.assert_allclose(observed, LEVELS, atol=2e-4)  # 1/n plus a tie
    assert err < 2e-4


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_miscalibrated_intervals_match_the_closed_form(scale):
    # Predicted std `scale` times the true one: the interval of level q covers
    # 2 Phi(scale z_q) - 1 of the targets.
    y = _normal_quantiles(20_000)
    var = np.full_like(y, scale ** 2)
    err, levels, observed = interval_calibration_error(np.zeros_like(y), var, y)
    z = np.array([PHI.inv_cdf(0.5 + q / 2) for q in levels])
    expected = np.array([2 * PHI.cdf(scale * zq) - 1 for zq in z])
    np.testing.assert_allclose(observed, expected, atol=1e-4)
    assert err == pytest.approx(np.mean(np.abs(expected - levels)), abs=1e-4)
    assert err > 0.05  # far from calibrated either way


def test_mean_and_shape_handling():
    y = _normal_quantiles(2000) + 3.0
    err, _, _ = interval_calibration_error(np.full((2000, 1), 3.0), np.ones((2000, 1)), y)
    assert err < 1e-3
    assert interval_calibration_error([0.0], [1.0], [0.5], levels=[0.5])[0] == 0.5


@pytest.mark.parametrize("kwargs, match", [
    ({"levels": [0.0, 0.5]}, r"argument `levels` of interval_calibration_error: "
                             r"expected nominal levels in \(0, 1\)"),
    ({"levels": []}, r"argument `levels`"),
    ({"variance": [1.0, 0.0]}, r"argument `variance` of interval_calibration_error: "
                               r"expected finite values > 0"),
    ({"variance": [1.0, math.nan]}, r"argument `variance`"),
    ({"y": [1.0]}, r"argument `y` of interval_calibration_error: expected mean, "
                   r"variance and y of one size \(2\)"),
    ({"mean": [], "variance": [], "y": []}, r"argument `mean`.*at least one"),
])
def test_interval_errors(kwargs, match):
    args = {"mean": [0.0, 0.0], "variance": [1.0, 1.0], "y": [0.1, -0.1]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        interval_calibration_error(**args)


def test_select_tau_is_the_grid_maximum_near_the_closed_form():
    # Deterministic predictions (T = 1) of 0: the mean log-likelihood
    # -tau/2 mean(y^2) + 1/2 log tau peaks at tau = 1 / mean(y^2).
    y = 0.5 * _normal_quantiles(4000)
    tau = select_tau(np.zeros((1, 4000)), y)
    best = 1.0 / np.mean(y ** 2)
    step = math.log(TAU_GRID[1] / TAU_GRID[0])
    assert abs(math.log(tau) - math.log(best)) <= step / 2 + 1e-12
    ll = [gaussian_log_likelihood(np.zeros((1, 4000)), y, t).mean() for t in TAU_GRID]
    assert tau == TAU_GRID[int(np.argmax(ll))]


def test_select_tau_on_mc_samples_and_a_custom_grid():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    samples = y[None] + rng.normal(scale=0.3, size=(20, 300))
    with pytest.warns(UserWarning, match=r"the best tau, 10, is the largest value"):
        assert select_tau(samples, y, taus=[0.1, 1.0, 10.0]) == 10.0  # residual std ~0.3
    assert select_tau(samples, y) > select_tau(samples + 1.0, y)  # worse fit, lower tau


@pytest.mark.parametrize("kwargs, match", [
    ({"taus": [1.0, 0.0]}, r"argument `taus` of select_tau: expected a non-empty "
                           r"sequence of values > 0"),
    ({"taus": []}, r"argument `taus`"),
    ({"samples": np.zeros(5)}, r"argument `samples` of select_tau: expected an array "
                               r"\(T, N, \.\.\.\)"),
    ({"samples": np.zeros((0, 5))}, r"argument `samples`"),
    ({"y": np.zeros(4)}, r"argument `y` of select_tau: expected 5 targets"),
])
def test_select_tau_errors(kwargs, match):
    args = {"samples": np.zeros((2, 5)), "y": np.zeros(5)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        select_tau(**args)


def test_select_tau_at_the_edge_of_its_grid_warns_or_refuses():
    # Unscaled targets (std 30): the best tau, 1 / 900, is below the default grid.
    y = np.random.default_rng(3).normal(scale=30.0, size=3000)
    zero = np.zeros((1, y.size))
    with pytest.warns(UserWarning, match=r"the best tau, 0.01, is the smallest value of the "
                      r"grid \[0.01, 1000\]: .*standardize the targets or pass a wider grid"):
        edge = select_tau(zero, y)
    with pytest.raises(ValueError, match=r"argument `taus` of select_tau: expected a grid whose "
                       r"maximum is inside it .*Received: taus=241 values from 0.01 to 1000"):
        select_tau(zero, y, on_edge="raise")
    # A wider grid finds the inside maximum, with a far better log-likelihood.
    wide = np.geomspace(1e-5, 1e3, 321)
    tau = select_tau(zero, y, taus=wide, on_edge="raise")
    assert tau == pytest.approx(1 / y.var(), rel=0.05)
    ll = lambda t: gaussian_log_likelihood(zero, y, t).mean()  # noqa: E731
    assert ll(tau) > ll(edge) + 2.5  # -4.8 against -7.8
    # Scaled targets: inside the default grid, no warning.
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_tau(zero, y / y.std(), on_edge="raise") == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match=r"argument `on_edge` of select_tau: expected one of "
                       r"'warn', 'raise'. Received: on_edge='ignore'"):
        select_tau(zero, y, on_edge="ignore")
