"""He (Kaiming) initialization with leaky-ReLU gain and the dropout correction."""

import keras

from kreg import _validation as v

_DISTRIBUTIONS = {
    "normal": "untruncated_normal",
    "truncated_normal": "truncated_normal",
    "uniform": "uniform",
}
_MODES = ("fan_in", "fan_out", "fan_avg")


def _check_shape(shape):
    expected = "a tuple or list of integers >= 0"
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise v.invalid_type("HeNormal", "shape", expected, shape)
    dims = tuple(shape)
    for dim in dims:
        if isinstance(dim, bool) or not hasattr(dim, "__index__"):
            raise v.invalid_type("HeNormal", "shape", expected, shape,
                                 element=dim)
        if int(dim) < 0:
            raise v.invalid_value("HeNormal", "shape", expected, shape)
    return tuple(int(d) for d in dims)


@keras.saving.register_keras_serializable(package="kreg")
class HeNormal(keras.initializers.VarianceScaling):
    """He initialization: `Var[w] = 2 * keep_prob / ((1 + a^2) * n)`.

    With the defaults this is the textbook's `randn(shape) * sqrt(2 / fan_in)`
    (an *untruncated* normal; Keras's `HeNormal` is a truncated normal
    rescaled to the same std, available here as
    `distribution="truncated_normal"`). `negative_slope` a > 0 gives the gain
    for leaky ReLU / PReLU; `keep_prob` < 1 corrects for inverted dropout of
    that keep probability in front of the layer, which multiplies `E[x^2]` by
    `1 / keep_prob`. Works for Dense and ConvND kernels (fans as Keras
    computes them: receptive field times channels).

    Args:
        seed: int or None, default None. Seed of the draws.
        mode: `"fan_in"` (default, forward case), `"fan_out"` (backward
            case) or `"fan_avg"`; which n to use.
        negative_slope: float >= 0, default 0.0. The leaky-ReLU slope a.
        distribution: `"normal"` (default, untruncated),
            `"truncated_normal"` or `"uniform"`; all with the same variance.
        keep_prob: float in (0, 1], default 1.0. Keep probability of the
            inverted dropout in front of the layer.

    Call arguments:
        shape: the shape of the weight tensor, a tuple/list of integers >= 0
            (a zero size gives an empty tensor, as in Keras).
        dtype: its dtype, a floating dtype or None (floatx), default None.

    Returns:
        A tensor of the given shape.

    Example:

    >>> import numpy as np, kreg
    >>> init = kreg.initializers.HeNormal(seed=0)
    >>> w = np.asarray(init((2000, 500)))
    >>> round(float(w.std() / np.sqrt(2 / 2000)), 2)
    1.0
    >>> round(init.variance(2000) * 2000, 6)
    2.0

    References:
        He, Zhang, Ren & Sun, "Delving Deep into Rectifiers", ICCV 2015,
        section 2.2 (equations 10 and 14). Hendrycks & Gimpel, "Adjusting for
        Dropout Variance in Batch Normalization and Weight Initialization",
        2016 (the keep_prob correction).
    """

    def __init__(self, seed=None, *, mode="fan_in", negative_slope=0.0,
                 distribution="normal", keep_prob=1.0):
        owner = "HeNormal"
        seed = v.check_seed(owner, seed)
        mode = v.check_option(owner, "mode", mode, _MODES)
        distribution = v.check_option(owner, "distribution", distribution,
                                      tuple(_DISTRIBUTIONS))
        negative_slope = v.check_float(owner, "negative_slope", negative_slope,
                                       low=0.0, expected="a finite float >= 0")
        keep_prob = v.check_float(owner, "keep_prob", keep_prob, low=0.0,
                                  high=1.0, low_open=True)
        super().__init__(
            scale=2.0 * keep_prob / (1.0 + negative_slope ** 2),
            mode=mode,
            distribution=_DISTRIBUTIONS[distribution],
            seed=seed,
        )
        self.negative_slope = negative_slope
        self.keep_prob = keep_prob
        self.he_distribution = distribution

    def __call__(self, shape, dtype=None):
        shape = _check_shape(shape)
        if dtype is not None:
            try:
                name = keras.backend.standardize_dtype(dtype)
            except (TypeError, ValueError):
                name = None
            if name is None or not keras.backend.is_float_dtype(name):
                raise v.invalid_value("HeNormal", "dtype",
                                      "None or a floating dtype", dtype)
        return super().__call__(shape, dtype=dtype)

    def variance(self, n):
        """The target variance `2 keep_prob / ((1 + a^2) n)` for fan size n.

        `n` is a fan size, a finite number >= 0; below 1 it counts as 1, as
        Keras's fans do for empty kernels.
        """
        n = v.check_float("HeNormal.variance", "n", n, low=0.0,
                          expected="a fan size, a finite number >= 0")
        return self.scale / max(1.0, n)

    def get_config(self):
        return {
            # Keras's config keeps the seed as given (None stays None).
            "seed": super().get_config()["seed"],
            "mode": self.mode,
            "negative_slope": self.negative_slope,
            "distribution": self.he_distribution,
            "keep_prob": self.keep_prob,
        }
