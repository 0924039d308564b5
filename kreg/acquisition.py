"""Active-learning acquisition: which unlabelled inputs to label next.

Every function takes a Monte Carlo prediction of a classifier over a pool of
N inputs, either a `kreg.MCPrediction` (from `kreg.MCPredictor`) or a NumPy
array of per-sample probabilities:

- shape (T, N, C): softmax probabilities, T samples, N inputs, C classes;
- shape (T, N, 1): sigmoid probabilities of the positive class of a binary
  classifier (read as C = 2 classes).

Arrays must have the sample axis: a deterministic (N, C) prediction is
`p[None]`.

Entries must lie in [0, 1] and softmax rows must sum to 1 (both up to 1e-3;
pass probabilities, not logits). The per-input scores (`max_entropy`, `bald`,
`variation_ratio`) are the same as the `MCPrediction` attributes of those
names and are meaningful for any Monte Carlo prediction; `top_k` turns scores
into a batch. Batch acquisition with `batch_bald` and
`joint_mutual_information` needs *joint* samples: sample t must be one network
applied to every input (`kreg.MCPredictor(..., joint=True)`). Independent
samples (Keras's Dropout in training mode, a tiled batch) give every input its
own networks, which makes inputs look independent of each other, and
BatchBALD then picks near-duplicates just as top-k BALD does.

All scores are in nats, computed in float64 with NumPy.
"""

import numpy as np

from kreg import _validation as v
from kreg._entropy import categorical_entropy
from kreg._entropy import xlogx
from kreg.mc._inputs import check_indices
from kreg.mc.prediction import MCPrediction

__all__ = [
    "bald",
    "batch_bald",
    "joint_mutual_information",
    "max_entropy",
    "top_k",
    "variation_ratio",
]

_PROB_TOL = 1e-3
_CHUNK_ELEMENTS = 1 << 22  # (configurations x candidates x classes) per block
_EXPECTED_PRED = (
    "a kreg.MCPrediction of a classifier, or an array of probabilities of "
    "shape (T, N, C) (softmax) or (T, N, 1) (sigmoid)"
)


def _bad_pred(owner, value, why=""):
    expected = _EXPECTED_PRED + (f" ({why})" if why else "")
    return v.invalid_value(owner, "pred", expected, v.shown(value))


def _probabilities(owner, probs, value):
    """Validate probabilities (T, N, C); return them clipped and normalized."""
    if not np.all(np.isfinite(probs)):
        raise _bad_pred(owner, value, "got NaN or inf")
    if probs.min() < -_PROB_TOL or probs.max() > 1 + _PROB_TOL:
        raise _bad_pred(owner, value, "got values outside [0, 1]: logits?")
    probs = np.clip(probs, 0.0, 1.0)
    if probs.shape[2] == 1:  # sigmoid
        return probs
    total = probs.sum(axis=2, keepdims=True)
    if np.max(np.abs(total - 1.0)) > _PROB_TOL:
        raise _bad_pred(owner, value, "got rows that do not sum to 1")
    return probs / total


def _check_not_a_structure(pred, owner):
    """A multi-output model's predictions: name the outputs to choose from."""
    if isinstance(pred, dict) and any(isinstance(p, MCPrediction) for p in pred.values()):
        names = ", ".join(f"pred[{k!r}]" for k in pred)
    elif isinstance(pred, (list, tuple)) and any(isinstance(p, MCPrediction) for p in pred):
        names = ", ".join(f"pred[{k}]" for k in range(len(pred)))
    else:
        return
    raise v.invalid_type(
        owner, "pred", "the MCPrediction of one output; this is the prediction of "
        f"a model with several outputs: pass one of {names}",
        v.Shown(f"a {type(pred).__name__} of {len(pred)} MCPredictions"))


def _as_prediction(pred, owner):
    """An `MCPrediction` (task "classification") for `pred`."""
    _check_not_a_structure(pred, owner)
    if isinstance(pred, MCPrediction):
        if pred.task != "classification":
            raise v.invalid_value(
                owner, "pred",
                "a classification prediction (acquisition scores are entropies "
                "of class probabilities)", pred)
        return pred
    if isinstance(pred, dict):
        raise v.invalid_type(owner, "pred", _EXPECTED_PRED, pred)
    arr = v.numeric_array(owner, "pred", pred, _EXPECTED_PRED, "fiu")
    arr = arr.astype("float64")
    if arr.ndim != 3 or arr.size == 0:
        raise _bad_pred(owner, arr, "got another shape; a deterministic (N, C) "
                        "prediction is p[None]")
    arr = _probabilities(owner, arr, arr)
    activation = "sigmoid" if arr.shape[2] == 1 else "softmax"
    return MCPrediction(arr, "classification", activation=activation)


def _joint_probs(pred, owner, joint):
    """Joint per-sample probabilities (T, N, C) float64, and the prediction."""
    _check_not_a_structure(pred, owner)
    if joint is not None and not isinstance(joint, bool):
        raise v.invalid_type(owner, "joint", "None or a bool", joint)
    if isinstance(pred, MCPrediction):
        if joint is not None and joint is not pred.joint:
            raise v.invalid_value(
                owner, "joint",
                f"None or {pred.joint} (an MCPrediction says itself whether its "
                "samples are joint)", joint)
        if not pred.joint:
            raise v.invalid_value(
                owner, "pred",
                "joint Monte Carlo samples, from kreg.MCPredictor(..., "
                "joint=True): the joint entropy of a batch needs every sample to "
                "be one network applied to all inputs, while independent samples "
                "give every input different networks", pred)
        mc = _as_prediction(pred, owner)
        if mc.samples is None:
            raise v.invalid_value(
                owner, "pred", "an MCPrediction that kept its samples "
                "(keep_samples=True)", pred)
        s = np.asarray(mc.samples, "float64")
        t, n = s.shape[:2]
        if mc.activation == "sigmoid":
            q = s.reshape(t, n, -1)
            if q.shape[2] != 1:
                raise v.invalid_value(
                    owner, "pred",
                    "one sigmoid output or a softmax output (multi-label sigmoid "
                    "outputs are not supported)", pred)
            probs = np.stack([1.0 - q[..., 0], q[..., 0]], axis=2)
        elif s.ndim != 3:
            raise v.invalid_value(owner, "pred",
                                  "samples of shape (T, N, C)", pred)
        else:
            probs = s
        return _probabilities(owner, probs, pred), mc
    if joint is not True:
        raise v.invalid_value(
            owner, "joint",
            "True for an array, confirming that samples[t] is one network "
            "applied to every input (as from kreg.MCPredictor(..., joint=True)); "
            "an array cannot say so itself, and BatchBALD needs joint samples",
            joint)
    mc = _as_prediction(pred, owner)
    s = np.asarray(mc.samples, "float64")
    if mc.activation == "sigmoid":
        return np.concatenate([1.0 - s, s], axis=2), mc
    return s, mc


# ----------------------------------------------------------------------------
# Per-input scores
# ----------------------------------------------------------------------------
def max_entropy(pred):
    """Predictive entropy H[mean_t p_t(y | x)] of every input (total uncertainty).

    Args:
        pred: a `kreg.MCPrediction` of a classifier, or an array of
            probabilities of shape (T, N, C) (softmax) or (T, N, 1) (sigmoid).

    Returns:
        float64 array (N,), in nats; the same as `MCPrediction.entropy`.

    Example:

    >>> import numpy as np
    >>> from kreg import acquisition
    >>> p = np.array([[[0.5, 0.5], [0.9, 0.1]],
    ...               [[0.5, 0.5], [0.1, 0.9]]])   # T=2 samples, N=2 inputs
    >>> acquisition.max_entropy(p).round(4).tolist()
    [0.6931, 0.6931]

    References:
        Shannon entropy of the predictive distribution; Gal, Islam &
        Ghahramani, "Deep Bayesian Active Learning with Image Data", ICML
        2017, section 3 (Max Entropy).
    """
    return np.array(_as_prediction(pred, "max_entropy").entropy, "float64")


def bald(pred):
    """BALD score: mutual information between the label and the weights.

    `H[mean_t p_t] - mean_t H[p_t]` per input, the epistemic part of the
    predictive entropy: high where the samples disagree, zero where they agree
    (however uncertain each one is).

    Args:
        pred: a `kreg.MCPrediction` of a classifier, or an array of
            probabilities of shape (T, N, C) (softmax) or (T, N, 1) (sigmoid).

    Returns:
        float64 array (N,), >= 0, in nats; the same as
        `MCPrediction.mutual_information`.

    Example:

    >>> import numpy as np
    >>> from kreg import acquisition
    >>> p = np.array([[[0.5, 0.5], [0.9, 0.1]],
    ...               [[0.5, 0.5], [0.1, 0.9]]])
    >>> acquisition.bald(p).round(4).tolist()   # agreeing vs disagreeing samples
    [0.0, 0.3681]

    References:
        Houlsby, Huszar, Ghahramani & Lengyel, "Bayesian Active Learning for
        Classification and Preference Learning", 2011, section 2; Gal, Islam
        & Ghahramani, ICML 2017, section 3 (BALD).
    """
    return np.array(_as_prediction(pred, "bald").mutual_information, "float64")


def variation_ratio(pred):
    """Variation ratio: 1 - (count of the modal predicted class) / T.

    Args:
        pred: a `kreg.MCPrediction` of a classifier, or an array of
            probabilities of shape (T, N, C) (softmax) or (T, N, 1) (sigmoid).

    Returns:
        float64 array (N,) in [0, 1 - 1/C]; the same as
        `MCPrediction.variation_ratio`.

    Example:

    >>> import numpy as np
    >>> from kreg import acquisition
    >>> p = np.array([[[0.8, 0.2]], [[0.7, 0.3]], [[0.4, 0.6]], [[0.9, 0.1]]])
    >>> acquisition.variation_ratio(p).tolist()   # 3 of 4 samples say class 0
    [0.25]

    References:
        Freeman, "Elementary Applied Statistics", 1965; Gal, Islam &
        Ghahramani, ICML 2017, section 3 (Variation Ratios).
    """
    return np.array(_as_prediction(pred, "variation_ratio").variation_ratio,
                    "float64")


def top_k(scores, k):
    """The indices of the `k` highest scores, highest first.

    Ties go to the lower index, so the result is deterministic.

    Args:
        scores: 1-D array-like of N scores (no NaN; +-inf allowed).
        k: int in [1, N]. The batch size.

    Returns:
        int64 array (k,) of indices into `scores`.

    Example:

    >>> from kreg import acquisition
    >>> acquisition.top_k([0.1, 0.7, 0.3, 0.7], 3).tolist()
    [1, 3, 2]

    References:
        Gal, Islam & Ghahramani, ICML 2017, section 3 (the acquisition of
        the top-scoring points of the pool).
    """
    owner = "top_k"
    expected = "a 1-D array of numbers without NaN"
    arr = v.numeric_array(owner, "scores", scores, expected, "fiub")
    if arr.ndim != 1 or arr.size == 0:
        raise v.invalid_value(owner, "scores", expected, v.shown(arr))
    arr = arr.astype("float64")
    if np.isnan(arr).any():
        raise v.invalid_value(owner, "scores", expected + " (got NaN)", v.shown(arr))
    k = v.check_int(owner, "k", k, low=1, high=arr.size)
    return np.argsort(-arr, kind="stable")[:k].astype("int64")


# ----------------------------------------------------------------------------
# Joint entropies (BatchBALD)
# ----------------------------------------------------------------------------
def _configurations(probs, chosen, num_samples, rng):
    """The class configurations of the points `chosen`, given each sample.

    Returns `(P, shift)`. Exact (shift None) while C**b <= num_samples: P is
    (C**b, T) with P[m, t] = prod_i p_t(y_i = m_i). Otherwise P is (M, T) for
    M stratified samples of configurations from p(y_chosen) (M // T drawn
    under each posterior sample t, at least one), stored row-scaled:
    p(config m | t) = exp(shift[m]) * P[m, t] with max_t P[m, t] = 1.
    """
    t_count, _, c = probs.shape
    b = len(chosen)
    if c ** b <= num_samples:
        p = np.ones((1, t_count))
        for i in chosen:
            p = (p[:, None, :] * probs[:, i, :].T[None]).reshape(-1, t_count)
        return p, None
    per_sample = max(1, num_samples // t_count)
    owner = np.repeat(np.arange(t_count), per_sample)  # the sample behind m
    m = owner.size
    logp = np.zeros((m, t_count))
    with np.errstate(divide="ignore"):
        for i in chosen:
            p_i = probs[:, i, :]  # (T, C)
            cdf = np.cumsum(p_i[owner], axis=1)
            u = rng.random(m) * cdf[:, -1]
            y = np.minimum((cdf <= u[:, None]).sum(axis=1), c - 1)
            logp += np.log(p_i[:, y]).T
    shift = logp.max(axis=1)
    return np.exp(logp - shift[:, None]), shift


def _joint_entropies(probs, config, candidates):
    """H(y_chosen, y_n) for every n in `candidates` (see `_configurations`)."""
    p, shift = config
    t_count, _, c = probs.shape
    m = p.shape[0]
    out = np.empty(len(candidates))
    step = max(1, _CHUNK_ELEMENTS // (m * c))
    if shift is None:  # exact: -sum over all configurations of p log p
        weights = np.ones(m)
        constant = 0.0
    else:
        # Sampled: H = E_{y ~ p(y_chosen)} sum_c p(c | y) [-log p(y, c)], with
        # p(y_m, c) = exp(shift[m]) joint[m, c] and p(c | y_m) = joint[m, c] /
        # q[m]. The shift terms add up to mean(shift) since sum_c joint = q.
        weights = 1.0 / (m * p.mean(axis=1))
        constant = float(shift.mean())
    for start in range(0, len(candidates), step):
        idx = candidates[start:start + step]
        block = probs[:, idx, :].reshape(t_count, -1)
        joint = p @ (block / t_count)  # (M, n * C): p(config m, y_n = c)
        nats = weights @ xlogx(joint)
        out[start:start + len(idx)] = -nats.reshape(len(idx), c).sum(axis=1)
    return out - constant


def _check_num_samples(owner, num_samples, seed):
    num_samples = v.check_int(owner, "num_samples", num_samples, low=1)
    seed = v.check_seed(owner, seed)
    return num_samples, np.random.default_rng(seed)


def joint_mutual_information(pred, indices, *, num_samples=10_000, seed=None,
                             joint=None):
    """BatchBALD score of a batch: I(y_1, ..., y_b; w), in nats.

    `H(y_1..y_b) - (1/T) sum_t sum_i H(p_t(y_i))`, where the joint predictive
    distribution `p(y_1..y_b) = (1/T) sum_t prod_i p_t(y_i)` mixes the joint
    samples. `H(y_1..y_b)` is exact (a sum over class configurations) while
    the C**(b-1) configurations of all points but the last number at most
    `num_samples`; beyond, it is the paper's estimate from `num_samples`
    configurations sampled from the joint (stratified over the T samples),
    with the last point summed exactly. For b = 1 it is `bald`.

    Args:
        pred: a joint `kreg.MCPrediction` (`MCPredictor(..., joint=True)`),
            or an array of probabilities (T, N, C) / (T, N, 1) with `joint=True`.
        indices: sequence of b >= 1 distinct input indices: the batch.
        num_samples: int >= 1, default 10000. Configurations of the sampled
            estimator, and the exactness threshold.
        seed: int >= 0 or None, default None. Seed of the sampled estimator
            (unused while exact).
        joint: None or bool, default None. Must be True for an array (an
            array cannot say whether its samples are joint); None or
            `pred.joint` for an `MCPrediction`.

    Returns:
        float, the mutual information between the batch's labels and the
        weights.

    Example:

    >>> import numpy as np
    >>> from kreg import acquisition
    >>> p = np.array([[[1.0, 0.0], [1.0, 0.0]],
    ...               [[0.0, 1.0], [0.0, 1.0]]])  # both inputs copy sample t
    >>> round(acquisition.joint_mutual_information(p, [0, 1], joint=True), 4)
    0.6931
    >>> round(float(acquisition.bald(p).sum()), 4)  # what top-k BALD counts
    1.3863

    References:
        Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse
        Batch Acquisition for Deep Bayesian Active Learning", NeurIPS 2019,
        sections 3.1-3.3.
    """
    owner = "joint_mutual_information"
    probs, _ = _joint_probs(pred, owner, joint)
    num_samples, rng = _check_num_samples(owner, num_samples, seed)
    idx = check_indices(owner, indices, probs.shape[1], distinct=True)
    idx = [int(i) for i in idx]
    cond = categorical_entropy(probs[:, idx, :]).mean(axis=0).sum()
    config = _configurations(probs, idx[:-1], num_samples, rng)
    return float(_joint_entropies(probs, config, [idx[-1]])[0] - cond)


def batch_bald(pred, k, *, num_samples=10_000, seed=None, joint=None,
               return_scores=False):
    """Greedy BatchBALD: a batch of `k` inputs that are informative together.

    Starts from the BALD argmax and adds, one at a time, the input that
    maximizes the joint mutual information of the batch so far plus it (see
    `joint_mutual_information`, which gives the exact/sampled rule and the
    formulas). Unlike the top-k BALD inputs, the batch does not spend labels
    on inputs that tell the same thing about the weights, such as duplicates.
    Cost per step: about N * min(C**(b-1), num_samples) * T * C operations
    for a pool of N inputs, T samples, C classes and b - 1 inputs chosen.
    The joint mutual information of any batch is at most log T (the samples
    are T equally likely networks): once the scores approach log T the batch
    already tells all samples apart and further picks are decided by
    estimation noise, so larger batches need more samples.

    Args:
        pred: a joint `kreg.MCPrediction` (`MCPredictor(..., joint=True)`),
            or an array of probabilities (T, N, C) / (T, N, 1) with `joint=True`.
        k: int in [1, N]. The batch size.
        num_samples: int >= 1, default 10000. Configurations of the sampled
            joint-entropy estimator, and the exactness threshold.
        seed: int >= 0 or None, default None. Seed of the sampled estimator.
        joint: None or bool, default None. Must be True for an array; None or
            `pred.joint` for an `MCPrediction`.
        return_scores: bool, default False. Also return the scores.

    Returns:
        int64 array (k,) of pool indices in the order chosen; with
        `return_scores=True` a tuple `(indices, scores)` where `scores[j]`
        (float64, nats) is the joint mutual information of the first j + 1
        inputs chosen, non-decreasing up to estimation error.

    Example:

    >>> import numpy as np
    >>> from kreg import acquisition
    >>> a = np.array([[1.0, 0.0], [0.0, 1.0]] * 2)    # T=4: label = t % 2
    >>> b = np.array([[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 2)   # label = t // 2
    >>> p = np.stack([a, a, b], axis=1)   # pool: input 0, a copy of it, another
    >>> acquisition.top_k(acquisition.bald(p), 2).tolist()
    [0, 1]
    >>> acquisition.batch_bald(p, 2, joint=True).tolist()
    [0, 2]

    References:
        Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse
        Batch Acquisition for Deep Bayesian Active Learning", NeurIPS 2019,
        Algorithm 1 and section 3.3 (sampled joint entropies).
    """
    owner = "batch_bald"
    probs, mc = _joint_probs(pred, owner, joint)
    t_count, n, _ = probs.shape
    k = v.check_int(owner, "k", k, low=1, high=n)
    num_samples, rng = _check_num_samples(owner, num_samples, seed)
    return_scores = v.check_bool(owner, "return_scores", return_scores)
    cond = categorical_entropy(probs).mean(axis=0)  # (N,) E_w H(y_i | w)
    first = bald(mc)
    chosen = [int(np.argmax(first))]
    scores = [float(first[chosen[0]])]
    available = np.ones(n, dtype=bool)
    available[chosen[0]] = False
    for _ in range(1, k):
        candidates = np.flatnonzero(available)
        config = _configurations(probs, chosen, num_samples, rng)
        gain = _joint_entropies(probs, config, candidates) - cond[candidates]
        best = int(np.argmax(gain))
        chosen.append(int(candidates[best]))
        scores.append(float(gain[best] - cond[chosen[:-1]].sum()))
        available[chosen[-1]] = False
    indices = np.asarray(chosen, "int64")
    if return_scores:
        return indices, np.asarray(scores, "float64")
    return indices
