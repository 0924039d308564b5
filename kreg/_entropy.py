"""The entropy formulas, written once: x log x, Bernoulli and categorical entropy.

A ground-floor module (it imports NumPy only), so that every part of kreg
that needs an entropy (`kreg.calibration`, `kreg.mc`, `kreg.acquisition`,
`kreg.serving`) imports it from here and none imports another for it. Each
function works on float64 NumPy arrays by default, or on tensors with
`xp=keras.ops` (elementwise, traceable).
"""

import numpy as np


def xlogx(p, xp=None):
    """p log p elementwise, with 0 log 0 = 0: kreg's one definition.

    Args:
        p: probabilities (an array, or a tensor with `xp`).
        xp: None (default: float64 NumPy) or the array module of `p`
            (`numpy`, or `keras.ops` for backend tensors in a traced graph).

    Returns:
        An array (or tensor) of the shape of `p`.

    Example:

    >>> from kreg._entropy import xlogx
    >>> xlogx([0.0, 1.0, 0.5]).round(6).tolist()
    [0.0, 0.0, -0.346574]
    """
    if xp is None:
        p = np.asarray(p, "float64")
        return p * np.log(np.where(p > 0, p, 1.0))
    positive = p > 0
    return xp.where(positive, p * xp.log(xp.where(positive, p, xp.ones_like(p))),
                    xp.zeros_like(p))


def categorical_entropy(p, axis=-1, xp=None):
    """Entropy (nats) of categorical distributions along `axis`: -sum p log p.

    Args:
        p: probabilities that sum to 1 along `axis`.
        axis: int, default -1.
        xp: None (default: float64 NumPy) or the array module of `p`.

    Returns:
        The entropies, `p`'s shape without `axis`.

    Example:

    >>> from kreg._entropy import categorical_entropy
    >>> round(float(categorical_entropy([0.5, 0.5])), 6)  # log 2
    0.693147
    """
    if xp is None:
        return -np.sum(xlogx(np.asarray(p, "float64")), axis=axis)
    return -xp.sum(xlogx(p, xp), axis=axis)


def bernoulli_entropy(q, xp=None):
    """Entropy (nats) of Bernoulli(q), elementwise: -(q log q + (1-q) log(1-q)).

    Args:
        q: probabilities of the positive class.
        xp: None (default: float64 NumPy) or the array module of `q`.

    Returns:
        The entropies, of `q`'s shape.

    Example:

    >>> from kreg._entropy import bernoulli_entropy
    >>> bernoulli_entropy([0.5, 0.25]).round(6).tolist()
    [0.693147, 0.562335]
    """
    if xp is None:
        q = np.asarray(q, "float64")
    return -(xlogx(q, xp) + xlogx(1.0 - q, xp))
