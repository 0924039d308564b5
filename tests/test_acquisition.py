"""kreg.acquisition: per-input scores, top-k, and greedy BatchBALD.

Joint mutual information against brute force over all class configurations,
the sampled estimator against the exact value within its standard error, and
the BatchBALD paper's motivating example (copies of the most informative
input), on synthetic joint samples and on a Keras model.
"""

import itertools
import math

import keras
import numpy as np
import pytest

import kreg
from kreg import acquisition as acq


def _softmax_samples(t, n, c, seed, sharpness=2.0):
    logits = np.random.default_rng(seed).normal(size=(t, n, c)) * sharpness
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _brute_force_mi(p, idx):
    """I(y_idx; w) by enumerating every class configuration of the batch."""
    h = 0.0
    for ys in itertools.product(range(p.shape[2]), repeat=len(idx)):
        q = np.mean(np.prod([p[:, i, y] for i, y in zip(idx, ys)], axis=0))
        if q > 0:
            h -= q * math.log(q)
    sub = p[:, idx]
    cond = -np.sum(np.where(sub > 0, sub * np.log(np.where(sub > 0, sub, 1)), 0), -1)
    return h - cond.mean(0).sum()


# -- per-input scores ------------------------------------------------------------
def test_scores_match_formulas_and_mcprediction():
    p = _softmax_samples(30, 20, 4, seed=0)
    mean = p.mean(0)
    total = -(mean * np.log(mean)).sum(-1)
    aleatoric = -(p * np.log(p)).sum(-1).mean(0)
    np.testing.assert_allclose(acq.max_entropy(p), total, rtol=1e-12)
    np.testing.assert_allclose(acq.bald(p), total - aleatoric, rtol=1e-9, atol=1e-14)
    modal = np.array([np.bincount(p[:, i].argmax(-1), minlength=4).max()
                      for i in range(20)])
    np.testing.assert_allclose(acq.variation_ratio(p), 1 - modal / 30)
    pred = kreg.MCPrediction(p, task="classification")
    for fn, attr in ((acq.max_entropy, "entropy"), (acq.bald, "mutual_information"),
                     (acq.variation_ratio, "variation_ratio")):
        np.testing.assert_array_equal(fn(pred), getattr(pred, attr))
        np.testing.assert_allclose(fn(p.astype("float32")), getattr(pred, attr),
                                   rtol=1e-5, atol=1e-6)
    assert np.all(acq.bald(p) >= 0)


def test_sigmoid_probabilities_read_as_two_classes():
    q = np.random.default_rng(1).uniform(0.02, 0.98, size=(25, 7, 1))
    two = np.concatenate([1 - q, q], axis=-1)
    for fn in (acq.max_entropy, acq.bald, acq.variation_ratio):
        np.testing.assert_allclose(fn(q), fn(two), rtol=1e-10, atol=1e-12)
    sigmoid = kreg.MCPrediction(q, "classification", activation="sigmoid", joint=True)
    np.testing.assert_allclose(acq.bald(sigmoid), acq.bald(two), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(acq.batch_bald(sigmoid, 3),
                                  acq.batch_bald(two, 3, joint=True))
    idx = [3, 0, 5]
    np.testing.assert_allclose(acq.joint_mutual_information(q, idx, joint=True),
                               _brute_force_mi(two, idx), rtol=1e-10)


def test_top_k_orders_scores_and_breaks_ties_by_index():
    assert acq.top_k([0.1, 0.7, 0.3, 0.7], 3).tolist() == [1, 3, 2]
    scores = np.random.default_rng(2).normal(size=50)
    got = acq.top_k(scores, 10)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.argsort(scores)[::-1][:10])
    assert acq.top_k([-np.inf, 1.0, np.inf], 3).tolist() == [2, 1, 0]


# -- joint mutual information ----------------------------------------------------
@pytest.mark.parametrize("idx", [[3], [0, 5], [1, 2, 7], [4, 0, 6, 2]])
def test_joint_mutual_information_equals_brute_force(idx):
    p = _softmax_samples(12, 8, 3, seed=3)
    got = acq.joint_mutual_information(p, idx, joint=True)
    assert got == pytest.approx(_brute_force_mi(p, idx), rel=1e-10, abs=1e-12)
    if len(idx) == 1:
        assert got == pytest.approx(acq.bald(p)[idx[0]], rel=1e-10)


def test_sampled_estimator_is_unbiased_and_seedable():
    p = _softmax_samples(20, 6, 3, seed=4)
    idx = [0, 1, 2, 3, 4]  # 3**4 = 81 > 40 configurations: the sampled estimator
    exact = _brute_force_mi(p, idx)
    est = np.array([acq.joint_mutual_information(p, idx, joint=True, num_samples=40,
                                                 seed=s) for s in range(60)])
    assert est.std() > 0
    assert abs(est.mean() - exact) < 4 * est.std() / math.sqrt(len(est))
    again = acq.joint_mutual_information(p, idx, joint=True, num_samples=40, seed=7)
    assert again == est[7]
    # Enough samples for the exact sum: exact, and the seed does not matter.
    assert acq.joint_mutual_information(p, idx, joint=True, num_samples=81,
                                        seed=1) == pytest.approx(exact, rel=1e-10)


# -- BatchBALD -------------------------------------------------------------------
def _brute_force_greedy(p, k):
    chosen = []
    for _ in range(k):
        rest = [i for i in range(p.shape[1]) if i not in chosen]
        chosen.append(max(rest, key=lambda i: _brute_force_mi(p, chosen + [i])))
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_bald_is_the_greedy_joint_mi_maximizer(seed):
    p = _softmax_samples(10, 9, 3, seed=10 + seed)
    idx, scores = acq.batch_bald(p, 4, joint=True, return_scores=True)
    assert idx.tolist() == _brute_force_greedy(p, 4)
    expected = [_brute_force_mi(p, idx[:j + 1].tolist()) for j in range(4)]
    np.testing.assert_allclose(scores, expected, rtol=1e-9)
    assert np.all(np.diff(scores) > 0)


def test_batch_bald_with_k_1_is_the_bald_argmax():
    for seed in range(5):
        p = _softmax_samples(15, 40, 5, seed=20 + seed)
        assert acq.batch_bald(p, 1, joint=True).tolist() == acq.top_k(acq.bald(p), 1).tolist()


def _motivating_pool():
    """Four copies of the most informative input, three others, three useless.

    Sample t's label for input A is bit 0 of t (nearly one-hot), for B_j bit j:
    the B_j are less informative than A but independent of it and each other.
    """
    t = np.arange(32)

    def probs(bit, conf):
        q = np.where((t >> bit) & 1, conf, 1 - conf)
        return np.stack([1 - q, q], -1)

    a = probs(0, 0.98)
    pool = [a] * 4 + [probs(j, 0.9) for j in (1, 2, 3)] + [np.full((32, 2), 0.5)] * 3
    return np.stack(pool, axis=1)  # (T=32, N=10, C=2)


@pytest.mark.parametrize("num_samples", [10_000, 64])
def test_top_k_bald_picks_copies_batch_bald_picks_distinct_points(num_samples):
    p = _motivating_pool()
    top = acq.top_k(acq.bald(p), 4)
    assert top.tolist() == [0, 1, 2, 3]  # the four copies
    chosen, scores = acq.batch_bald(p, 4, joint=True, num_samples=num_samples, seed=0,
                                    return_scores=True)
    assert chosen[0] in (0, 1, 2, 3) and sorted(chosen[1:].tolist()) == [4, 5, 6]
    # BatchBALD's batch is worth more than twice the copies' (about 1.70 nats
    # against 0.69: a copy adds almost nothing once A is labelled).
    mi_top = acq.joint_mutual_information(p, top, joint=True)
    mi_bb = acq.joint_mutual_information(p, chosen, joint=True)
    assert mi_bb > 2 * mi_top
    assert mi_top < acq.bald(p)[0] + 0.1
    np.testing.assert_allclose(scores[-1], mi_bb, rtol=0.05 if num_samples == 64 else 1e-9)


@pytest.fixture(scope="module")
def keras_pool():
    """A classifier with sharp per-sample outputs; the pool holds three extra
    copies of its most informative input."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, activation="relu"),
                              kreg.layers.Dropout(0.5, seed=1), keras.layers.Dense(3),
                              keras.layers.Activation("softmax")])
    dense = model.layers[2]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 8, bias])
    x = np.random.default_rng(0).normal(size=(30, 4)).astype("float32")
    joint = kreg.MCPredictor(model, samples=100, seed=0, joint=True)
    top = int(np.argmax(acq.bald(joint.predict(x, verbose=0))))
    pool = np.concatenate([x, np.repeat(x[top:top + 1], 3, axis=0)])
    return model, joint, pool, {top, 30, 31, 32}


def test_batch_bald_on_a_keras_model_needs_joint_samples(keras_pool):
    model, joint, pool, copies = keras_pool
    pred = joint.predict(pool, verbose=0)
    assert set(acq.top_k(acq.bald(pred), 4).tolist()) == copies
    chosen = acq.batch_bald(pred, 4)
    assert len(copies & set(chosen.tolist())) == 1
    assert chosen[0] == acq.top_k(acq.bald(pred), 1)[0]
    # Independent samples make copies look like unrelated inputs: passed off
    # as joint, BatchBALD picks copies again. This is why joint mode exists.
    indep = kreg.MCPredictor(model, samples=100, seed=0).predict(pool, verbose=0,
                                                                return_samples=True)
    wrong = acq.batch_bald(indep.samples, 4, joint=True)
    assert len(copies & set(wrong.tolist())) >= 2
    with pytest.raises(ValueError, match=r"`pred` of batch_bald: expected joint Monte "
                       r"Carlo samples, from kreg.MCPredictor\(\.\.\., joint=True\)"):
        acq.batch_bald(indep, 4)


# -- errors ---------------------------------------------------------------------
P = _softmax_samples(5, 6, 3, seed=9)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: acq.batch_bald(P, 2), ValueError,
     r"`joint` of batch_bald: expected True for an array.*Received: joint=None"),
    (lambda: acq.batch_bald(P, 2, joint=False), ValueError, r"Received: joint=False"),
    (lambda: acq.batch_bald(P, 2, joint=1), TypeError, r"`joint` of batch_bald"),
    (lambda: acq.batch_bald(P, 7, joint=True), ValueError,
     r"`k` of batch_bald: expected an integer in \[1, 6\]. Received: k=7"),
    (lambda: acq.batch_bald(P, 0, joint=True), ValueError, r"`k` of batch_bald"),
    (lambda: acq.batch_bald(P, 2.0, joint=True), TypeError, r"`k` of batch_bald"),
    (lambda: acq.batch_bald(P, 2, joint=True, num_samples=0), ValueError,
     r"`num_samples` of batch_bald"),
    (lambda: acq.batch_bald(P, 2, joint=True, seed=-1), ValueError, r"`seed` of batch_bald"),
    (lambda: acq.batch_bald(P, 2, joint=True, return_scores=1), TypeError,
     r"`return_scores` of batch_bald"),
    (lambda: acq.batch_bald(kreg.MCPrediction(P, "classification", joint=True), 2,
                            joint=False), ValueError, r"`joint` of batch_bald: expected None"),
    (lambda: acq.batch_bald(kreg.MCPrediction(P, "classification", joint=True,
                                              keep_samples=False), 2), ValueError,
     r"keep_samples=True"),
    (lambda: acq.batch_bald(kreg.MCPrediction(np.ones((5, 6, 2, 3)) / 3, "classification",
                                              joint=True), 2), ValueError,
     r"samples of shape \(T, N, C\)"),
    (lambda: acq.bald(kreg.MCPrediction(P, "regression")), ValueError,
     r"`pred` of bald: expected a classification prediction"),
    (lambda: acq.bald(np.log(P)), ValueError, r"outside \[0, 1\]: logits\?"),
    (lambda: acq.bald(P * 0.5), ValueError, r"do not sum to 1"),
    (lambda: acq.max_entropy(P[0]), ValueError,
     r"`pred` of max_entropy.*a deterministic \(N, C\) prediction is p\[None\]"),
    (lambda: acq.variation_ratio(np.ones((2, 3, 4, 5)) / 5), ValueError,
     r"got another shape.*Received: pred=<array of shape \(2, 3, 4, 5\)"),
    (lambda: acq.bald(np.full((3, 2, 2), np.nan)), ValueError, r"NaN or inf"),
    (lambda: acq.bald("probs"), TypeError, r"`pred` of bald"),
    (lambda: acq.joint_mutual_information(P, [1, 1], joint=True), ValueError,
     r"`indices` of joint_mutual_information: expected a non-empty sequence of distinct"),
    (lambda: acq.joint_mutual_information(P, [6], joint=True), ValueError, r"\[0, 5\]"),
    (lambda: acq.joint_mutual_information(P, [], joint=True), ValueError, r"`indices`"),
    (lambda: acq.joint_mutual_information(P, [0.5], joint=True), TypeError, r"`indices`"),
    (lambda: acq.top_k([1.0, np.nan], 1), ValueError, r"`scores` of top_k.*NaN"),
    (lambda: acq.top_k([[1.0, 2.0]], 1), ValueError, r"`scores` of top_k"),
    (lambda: acq.top_k(["a"], 1), TypeError, r"`scores` of top_k"),
    (lambda: acq.top_k([1.0, 2.0], 3), ValueError,
     r"`k` of top_k: expected an integer in \[1, 2\]. Received: k=3"),
])
def test_errors_use_kreg_wording(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
