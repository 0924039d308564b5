"""Conformity scores and the split-conformal quantile, written once.

`label_scores` gives the score of every candidate label of a classifier's
probabilities (N, K); a label is in the prediction set when its score is at
most the calibrated quantile, and a calibration point's score is the score of
its true label. The same function runs on the host (NumPy, float64: `NUMPY`)
and inside a SavedModel signature (TensorFlow: `kreg.conformal._tf`), through
a few array operations passed as `ops`, so the served sets are the sets of
`SplitConformal.predict`.

References:
    Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World", 2005
    (split conformal); Sadinle, Lei & Wasserman, JASA 2019 (LAC); Romano,
    Sesia & Candes, NeurIPS 2020, eq. (5) (APS); Angelopoulos, Bates, Malik &
    Jordan, ICLR 2021, Algorithm 2 (RAPS).
"""

import math
import types

import numpy as np

CLASSIFICATION = ("lac", "aps", "raps")
REGRESSION = ("absolute", "normalized")
METHODS = CLASSIFICATION + REGRESSION

# (n + 1)(1 - alpha) is computed in floating point: 10 * (1 - 0.1) is
# 9.000000000000002, whose ceiling would ask for one point more than the
# decimal alpha means. Products within this of an integer count as it.
_RANK_SLACK = 1e-9
# A label is in the set when its score is <= q + SET_SLACK: the host (NumPy)
# and the graph (TensorFlow) sum probabilities in different orders, and a
# score equal to q (APS's last label has score 1 = q) must fall on the same
# side in both. Larger sets only, so coverage still holds.
SET_SLACK = 1e-9


def conformal_rank(n, alpha):
    """The rank k = ceil((n + 1)(1 - alpha)) of the split-conformal quantile.

    The quantile is the k-th smallest of n calibration scores; the set
    {y : s(x, y) <= q} then covers with probability >= 1 - alpha. k > n
    (n < 1/alpha - 1) means that n is too small for alpha.

    >>> conformal_rank(9, 0.1), conformal_rank(99, 0.1), conformal_rank(100, 0.1)
    (9, 90, 91)
    """
    return math.ceil((n + 1) * (1.0 - alpha) - _RANK_SLACK)


def min_calibration(alpha):
    """The smallest n with conformal_rank(n, alpha) <= n.

    >>> min_calibration(0.1), min_calibration(0.05), min_calibration(0.5)
    (9, 19, 1)
    """
    n = max(1, math.floor(1.0 / alpha - 1.0 - 1e-6))
    while conformal_rank(n, alpha) > n:
        n += 1
    return n


def quantile(scores, alpha):
    """The k-th smallest score, k = conformal_rank(len(scores), alpha)."""
    k = conformal_rank(len(scores), alpha)
    return float(np.partition(np.asarray(scores, "float64"), k - 1)[k - 1])


def _np_take(a, idx):
    return np.take_along_axis(a, idx, axis=-1)


NUMPY = types.SimpleNamespace(
    argsort_desc=lambda p: np.argsort(-p, axis=-1, kind="stable"),
    argsort=lambda a: np.argsort(a, axis=-1, kind="stable"),
    take=_np_take,
    cumsum=lambda a: np.cumsum(a, axis=-1),
    maximum=np.maximum,
    as_float=lambda a, like: a.astype(like.dtype),
)


def label_scores(p, method, *, k_reg=0, lam=0.0, u=None, ops=NUMPY):
    """The score s(x, y) of every label y: an (N, K) array like `p`.

    - `"lac"`: 1 - p_y.
    - `"aps"`: the sum of the probabilities sorted in decreasing order down
      to and including y's (ties in the order of the labels); randomized
      (`u`, one uniform per row): minus u p_y.
    - `"raps"`: APS + lam * max(rank(y) - k_reg, 0), rank 1 for the most
      probable label.

    >>> p = np.array([[0.5, 0.2, 0.3]])
    >>> label_scores(p, "lac").round(2).tolist()
    [[0.5, 0.8, 0.7]]
    >>> label_scores(p, "aps").round(2).tolist()
    [[0.5, 1.0, 0.8]]
    >>> label_scores(p, "raps", k_reg=1, lam=0.1).round(2).tolist()
    [[0.5, 1.2, 0.9]]
    """
    if method == "lac":
        return 1.0 - p
    order = ops.argsort_desc(p)
    rank = ops.argsort(order)  # the inverse permutation: 0 for the top label
    scores = ops.take(ops.cumsum(ops.take(p, order)), rank)
    if u is not None:
        scores = scores - u[:, None] * p
    if method == "raps":
        scores = scores + lam * ops.maximum(ops.as_float(rank, p) + 1.0 - k_reg, 0.0)
    return scores


def in_set(scores, q):
    """The labels whose score is at most the quantile(s) q (with SET_SLACK)."""
    return scores <= q + SET_SLACK


def true_label_scores(p, y, method, **kwargs):
    """label_scores at the true labels y (N,): the calibration scores."""
    scores = label_scores(p, method, **kwargs)
    return scores[np.arange(len(y)), y]


def residual_scores(y, mean, std, method):
    """|y - mean| (absolute) or |y - mean| / std (normalized)."""
    resid = np.abs(y - mean)
    return resid if method == "absolute" else resid / std


def interval(mean, std, q, method):
    """(lower, upper) = mean -+ q, or mean -+ q * std (normalized)."""
    half = q if method == "absolute" else q * std
    return mean - half, mean + half
