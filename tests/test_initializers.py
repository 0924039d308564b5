"""HeNormal: variance per mode/distribution, gains (He et al.'s depth claim: test_claims.py)."""

import math

import keras
import numpy as np
import pytest

from kreg.initializers import HeNormal


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("shape", [(300, 400), (3, 3, 40, 80)])
def test_std_matches_formula(distribution, mode, shape):
    w = _np(HeNormal(seed=3, mode=mode, distribution=distribution)(shape)).ravel()
    if len(shape) == 2:
        fan_in, fan_out = shape
    else:
        rf = shape[0] * shape[1]
        fan_in, fan_out = rf * shape[2], rf * shape[3]
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    target = math.sqrt(2.0 / n)
    # Std estimate of m draws: relative SE about sqrt((kurtosis - 1) / (4 m)),
    # at most 1/sqrt(2m) for these light-tailed laws; 5 SE.
    tol = 5 / math.sqrt(2 * w.size)
    assert abs(w.std() / target - 1) < tol
    assert abs(w.mean()) < 5 * target / math.sqrt(w.size)
    if distribution == "normal":  # untruncated: tails beyond 2 std exist
        assert (np.abs(w) > 2.5 * target).mean() > 0.005
    if distribution == "truncated_normal":
        assert np.abs(w).max() <= 2 * target / 0.87962566103423978 + 1e-6
    if distribution == "uniform":
        assert np.abs(w).max() <= math.sqrt(3) * target + 1e-6


@pytest.mark.parametrize("slope, keep", [(0.2, 1.0), (0.0, 0.5), (0.1, 0.8)])
def test_leaky_relu_gain_and_dropout_correction(slope, keep):
    w = _np(HeNormal(seed=1, negative_slope=slope, keep_prob=keep)((500, 300)))
    target = math.sqrt(2 * keep / ((1 + slope ** 2) * 500))
    assert abs(w.std() / target - 1) < 5 / math.sqrt(2 * w.size)


def test_textbook_form_is_randn_times_sqrt_2_over_n():
    # Untruncated normal: about 4.55% of draws lie beyond 2 std (vs 0 truncated).
    w = _np(HeNormal(seed=0)((1000, 200))).ravel() / math.sqrt(2 / 1000)
    beyond = (np.abs(w) > 2).mean()
    assert abs(beyond - 0.0455) < 5 * math.sqrt(0.0455 * 0.9545 / w.size)


def test_works_as_kernel_initializer_for_dense_and_conv():
    dense = keras.layers.Dense(64, kernel_initializer=HeNormal(seed=1))
    dense.build((None, 128))
    conv = keras.layers.Conv2D(32, 3, kernel_initializer=HeNormal(seed=1))
    conv.build((None, 8, 8, 16))
    assert abs(_np(dense.kernel).std() / math.sqrt(2 / 128) - 1) < 0.05
    assert abs(_np(conv.kernel).std() / math.sqrt(2 / 144) - 1) < 0.05


def test_same_seed_same_values():
    a = _np(HeNormal(seed=5)((4, 4)))
    b = _np(HeNormal(seed=5)((4, 4)))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"mode": "fan"}, ValueError,
         r"`mode` of HeNormal: expected one of 'fan_in', 'fan_out', 'fan_avg'. "
         r"Received: mode='fan'"),
        ({"distribution": "gaussian"}, ValueError, r"`distribution` of HeNormal"),
        ({"negative_slope": -0.1}, ValueError, r"`negative_slope` of HeNormal"),
        ({"negative_slope": float("nan")}, ValueError, r"`negative_slope` of HeNormal"),
        ({"keep_prob": 0.0}, ValueError, r"`keep_prob` of HeNormal: expected a float "
         r"in \(0, 1\]"),
        ({"keep_prob": "1"}, TypeError, r"`keep_prob` of HeNormal"),
        ({"seed": "1"}, TypeError, r"`seed` of HeNormal"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        HeNormal(**kwargs)
