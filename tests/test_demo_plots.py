"""kreg.demo.plots: the reliability plot's equal-count bins."""

import numpy as np

from kreg.demo.plots import equal_count_reliability


def test_equal_count_bins_cover_every_input_once():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, size=360)
    correct = rng.uniform(size=360) < conf  # calibrated by construction
    mean_conf, acc, count = equal_count_reliability(conf, correct, 10)
    assert count.tolist() == [36] * 10
    assert np.all(np.diff(mean_conf) > 0)
    # Weighted by counts, the bins give back the overall means.
    assert np.isclose((mean_conf * count).sum() / 360, conf.mean())
    assert np.isclose((acc * count).sum() / 360, correct.mean())
    # Calibrated: each bin's accuracy is within 3 standard errors of its confidence.
    se = np.sqrt(mean_conf * (1 - mean_conf) / count)
    assert np.all(np.abs(acc - mean_conf) < 3 * se + 0.02)


def test_unequal_split_differs_by_at_most_one():
    _, _, count = equal_count_reliability(np.linspace(0, 1, 23), np.ones(23, bool), 5)
    assert sorted(count.tolist()) == [4, 4, 5, 5, 5] and count.sum() == 23
