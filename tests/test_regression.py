"""kreg.regression: MC regression scores in the target's original units."""

import numpy as np
import pytest

from kreg.mc.metrics import gaussian_log_likelihood
from kreg.mc.metrics import interval_calibration_error
from kreg.mc.metrics import select_tau
from kreg.regression import regression_report
from kreg.regression import to_original_units


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    y = np.column_stack([150 + 75 * rng.standard_normal(500), -3 + 0.5 * rng.standard_normal(500)])
    loc, scale = y.mean(axis=0), y.std(axis=0)
    z = (y - loc) / scale
    samples = z[None] + 0.3 * rng.standard_normal((20, 500, 2))
    return y, loc, scale, samples


def test_to_original_units_inverts_a_standard_scaler(problem):
    sk = pytest.importorskip("sklearn.preprocessing")
    y, _, _, samples = problem
    scaler = sk.StandardScaler().fit(y)
    z = scaler.transform(y)
    back = to_original_units(z[None], loc=scaler.mean_, scale=scaler.scale_)
    np.testing.assert_allclose(back[0], y, rtol=1e-12)
    np.testing.assert_allclose(to_original_units(samples, loc=scaler.mean_,
                                                 scale=scaler.scale_)[3],
                               scaler.inverse_transform(samples[3]), rtol=1e-12)


def test_one_output_equals_scoring_directly_in_original_units(problem):
    y, loc, scale, samples = problem
    y1, s1 = y[:, 0], samples[:, :, 0]
    tau = select_tau(s1, (y1 - loc[0]) / scale[0], on_edge="raise")
    r = regression_report(s1, y1, tau, loc=loc[0], scale=scale[0])
    orig = loc[0] + scale[0] * s1
    tau_y = tau / scale[0] ** 2
    assert r["tau"] == pytest.approx(tau_y)
    # Gal's log-likelihood of the samples in original units with tau in those units.
    assert r["nll"] == pytest.approx(-gaussian_log_likelihood(orig, y1, tau_y).mean(), rel=1e-10)
    assert r["rmse"] == pytest.approx(np.sqrt(np.mean((orig.mean(0) - y1) ** 2)), rel=1e-12)
    np.testing.assert_allclose(r["predictive_std"].ravel(),
                               np.sqrt(orig.var(0) + 1 / tau_y), rtol=1e-10)
    np.testing.assert_allclose(r["std"].ravel(), orig.std(0), rtol=1e-10)
    assert r["interval_error"] == interval_calibration_error(
        orig.mean(0), orig.var(0) + 1 / tau_y, y1)[0]


def test_outputs_with_their_own_scales(problem):
    y, loc, scale, samples = problem
    tau = 5.0
    r = regression_report(samples, y, tau, loc=loc, scale=scale)
    np.testing.assert_allclose(r["tau"], tau / scale ** 2)
    # The Gaussian mixture density in original units, written out.
    orig = loc + scale * samples
    prec = tau / scale ** 2
    log_terms = (-0.5 * ((orig - y[None]) ** 2 * prec).sum(axis=2)
                 + 0.5 * np.log(prec).sum() - np.log(2 * np.pi))
    m = log_terms.max(axis=0)
    ll = m + np.log(np.exp(log_terms - m).mean(axis=0))
    assert r["nll"] == pytest.approx(-ll.mean(), rel=1e-10)
    assert r["mean"].shape == r["std"].shape == r["predictive_std"].shape == (500, 2)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"scale": 0.0}, ValueError,
     r"argument `scale` of regression_report: expected finite values > 0. Received: scale=\[0.0\]"),
    ({"scale": [1.0, 2.0, 3.0]}, ValueError,
     r"argument `scale` of regression_report: expected a number or 2 numbers"),
    ({"loc": float("nan")}, ValueError, r"argument `loc` of regression_report: expected finite"),
    ({"tau": 0.0}, ValueError, r"argument `tau` of regression_report"),
    ({"y": np.zeros(7)}, ValueError,
     r"argument `y` of regression_report: expected 1000 targets \(one per prediction\). "
     r"Received: y.shape=\(7,\)"),
    ({"samples": np.zeros(5)}, ValueError,
     r"argument `samples` of regression_report: expected an array \(T, N, ...\) with T, N >= 1"),
    ({"scale": "2"}, TypeError, r"argument `scale` of regression_report"),
])
def test_errors(problem, kwargs, exc, match):
    y, _, _, samples = problem
    args = {"samples": samples, "y": y, "tau": 1.0, **kwargs}
    with pytest.raises(exc, match=match):
        regression_report(**args)
