"""Stochastic pooling (Zeiler & Fergus 2013).

Backend-neutral: only `keras.ops` and `keras.random`.
"""

import numbers

import keras
import numpy as np
from keras import ops

from kreg import _compat
from kreg import _validation as v
from kreg.layers._noise import NoiseLayer
from kreg.layers._noise import check_data_format
from kreg.layers._sampling import per_sample_draw

PADDINGS = ("valid", "same")
# Uniforms are drawn in [_TINY, 1), so -log(u) is finite and positive.
_TINY = float(np.finfo("float32").tiny)


def check_pair(owner, name, value, allow_none=False):
    """An int >= 1 or a tuple/list of 2 ints >= 1, returned as a 2-tuple."""
    expected = "a positive integer or a tuple of 2 positive integers"
    if allow_none:
        if value is None:
            return None
        expected += ", or None"
    pair = value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (value, value)
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
            isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in pair):
        raise v.invalid_type(owner, name, expected, value)
    if any(d < 1 for d in pair):
        raise v.invalid_value(owner, name, expected, value)
    return tuple(int(d) for d in pair)


def _positive_part(value):
    """max(value, 0) for a Python int or a (dynamic-shape) tensor."""
    return max(value, 0) if isinstance(value, int) else ops.maximum(value, 0)


def pooling_windows(x, pool_size, strides, padding):
    """The pooling regions of a channels-last batch, as MaxPooling2D's.

    Args:
        x: tensor `(batch, rows, cols, channels)`.
        pool_size, strides: 2-tuples of ints.
        padding: `"valid"` or `"same"` (zeros added as Keras's "same" pads:
            the odd one at the bottom/right).

    Returns:
        A tensor `(batch, out_rows, out_cols, channels, kh * kw)`: entry `k`
        of the last axis is window position `(k // kw, k % kw)`.
    """
    (kh, kw), (sh, sw) = pool_size, strides
    shape = ops.shape(x)
    rows, cols = shape[1], shape[2]
    if padding == "same":
        out_r, out_c = (rows + sh - 1) // sh, (cols + sw - 1) // sw
        pad_r = _positive_part((out_r - 1) * sh + kh - rows)
        pad_c = _positive_part((out_c - 1) * sw + kw - cols)
        x = ops.pad(x, [[0, 0], [pad_r // 2, pad_r - pad_r // 2],
                        [pad_c // 2, pad_c - pad_c // 2], [0, 0]])
    else:
        out_r, out_c = (rows - kh) // sh + 1, (cols - kw) // sw + 1
    parts = [x[:, i:i + sh * (out_r - 1) + 1:sh, j:j + sw * (out_c - 1) + 1:sw, :]
             for i in range(kh) for j in range(kw)]
    return ops.stack(parts, axis=-1)


def _pooled_size(size, pool, stride, padding):
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return (size - pool) // stride + 1


@keras.saving.register_keras_serializable(package="kreg")
class StochasticPooling2D(NoiseLayer):
    """Stochastic pooling (Zeiler & Fergus 2013) over 2D regions.

    The pooling regions are those of `keras.layers.MaxPooling2D` with the same
    `pool_size`, `strides`, `padding` and `data_format`. In a region with
    activations `a_1..a_n`, let `p_i = a_i / sum_k a_k`.

    * Training: one activation per region and channel is picked at random
      with probability `p_i` and output (a fresh draw on every call). The
      gradient flows to the picked activation only.
    * Inference: the paper's probabilistic weighting, `sum_i p_i a_i`, the
      expectation of the training output (deterministic).
    * Inside kreg's Monte Carlo sampling scope (`kreg.MCPredictor`,
      `kreg.export`): it picks, as in training, independently for every row;
      in joint mode sample t draws one set of random numbers that every input
      of the sample shares (a function of the seed, the layer and t only), so
      sample t is one fixed stochastic network: the same input always gets the
      same locations in it.

    A region whose activations are all 0 outputs 0. **Negative inputs** are
    treated as 0 (the layer pools `max(x, 0)`): `p_i` is defined for
    non-negative activations (the paper pools after a ReLU), and a check of
    the values inside a compiled graph would stop the computation on an
    accelerator for a data-dependent assertion. Put a ReLU (or another
    non-negative activation) before the layer; with it, the rule changes
    nothing. Zero padding (`padding="same"`) therefore never picks a padded
    position, as max pooling never does for non-negative inputs.

    Args:
        pool_size: int or tuple of 2 ints, default 2. The region size.
        strides: int, tuple of 2 ints or None, default None (`pool_size`).
        padding: `"valid"` (default) or `"same"`, as `MaxPooling2D`.
        data_format: `"channels_last"`, `"channels_first"` or None, default
            None (`keras.config.image_data_format()`).
        seed: int or None, default None. Seed of the layer's random stream.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a 4D tensor, `(batch, rows, cols, channels)` for
            channels_last.
        training: bool, default None (False). Whether to sample.

    Returns:
        A 4D tensor of `MaxPooling2D`'s output shape.

    Example:

    >>> import keras, numpy as np, kreg
    >>> to_np = keras.ops.convert_to_numpy
    >>> layer = kreg.layers.StochasticPooling2D(2, seed=1)
    >>> x = np.array([1.0, 2.0, 3.0, 4.0], "float32").reshape(1, 2, 2, 1)
    >>> float(to_np(layer(x))[0, 0, 0, 0])  # (1 + 4 + 9 + 16) / 10
    3.0
    >>> x = np.tile(x, (2000, 1, 1, 1))
    >>> picks = to_np(layer(x, training=True)).ravel()
    >>> sorted(set(picks.tolist()))
    [1.0, 2.0, 3.0, 4.0]
    >>> bool(abs((picks == 4.0).mean() - 0.4) < 5 * (0.4 * 0.6 / 2000) ** 0.5)
    True

    References:
        Zeiler & Fergus, "Stochastic Pooling for Regularization of Deep
        Convolutional Neural Networks", ICLR 2013, sections 2-3.
    """

    def __init__(self, pool_size=2, strides=None, padding="valid",
                 data_format=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        owner = "StochasticPooling2D"
        self.pool_size = check_pair(owner, "pool_size", pool_size)
        strides = check_pair(owner, "strides", strides, allow_none=True)
        self.strides = self.pool_size if strides is None else strides
        if isinstance(padding, str):
            padding = padding.lower()
        self.padding = v.check_option(owner, "padding", padding, PADDINGS)
        self.data_format = check_data_format(owner, data_format)
        self._init_seed(seed)
        self.input_spec = keras.layers.InputSpec(ndim=4)
        _compat.build_at_init(self)

    # ------------------------------------------------------------------
    def _sample(self, inputs, ctx):
        return self._pool(inputs, lambda windows: self._sample_windows(windows, ctx))

    def _train(self, inputs):
        return self._pool(inputs, lambda windows: self._pick(
            windows, self._draw(ops.shape(windows), self.training_seed())))

    def _infer(self, inputs):
        return self._pool(inputs, self._weighted)

    def _pool(self, inputs, reduce):
        """`reduce` applied to the (non-negative) pooling windows of `inputs`."""
        x = inputs
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        windows = ops.relu(pooling_windows(x, self.pool_size, self.strides,
                                           self.padding))
        out = reduce(windows)
        if self.data_format == "channels_first":
            out = ops.transpose(out, (0, 3, 1, 2))
        return out

    @staticmethod
    def _draw(shape, seed):
        """Exponential(1) variables, one per window position."""
        u = keras.random.uniform(shape, minval=_TINY, maxval=1.0, seed=seed,
                                 dtype="float32")
        return -ops.log(u)

    @staticmethod
    def _pick(windows, exponentials):
        """One entry per window with probability a_i / sum a_k.

        The exponential race: `argmax_i a_i / E_i` with `E_i ~ Exp(1)` is i
        with probability `a_i / sum_k a_k`; zeros never win unless all are 0
        (then entry 0, whose value 0 is the output).
        """
        score = ops.cast(windows, "float32") / exponentials
        chosen = ops.one_hot(ops.argmax(score, axis=-1), windows.shape[-1],
                             dtype=windows.dtype)
        return ops.sum(chosen * windows, axis=-1)

    @staticmethod
    def _weighted(windows):
        """Probabilistic weighting: sum_i p_i a_i = sum a_i^2 / sum a_i."""
        total = ops.sum(windows, axis=-1)
        safe = ops.where(total > 0, total, ops.ones_like(total))
        return ops.sum(windows * windows, axis=-1) / safe

    def _sample_windows(self, windows, ctx):
        seed = ctx.seed_for(self)
        shape = ops.shape(windows)
        if not ctx.joint:
            return self._pick(windows, self._draw(shape, seed))
        e = per_sample_draw(ctx, seed, (1,) + tuple(shape[1:]), self._draw)
        w = ops.reshape(windows, (ctx.tiles, -1) + tuple(shape[1:]))
        out = self._pick(w, e)
        return ops.reshape(out, (-1,) + tuple(ops.shape(out)[2:]))

    def compute_output_shape(self, input_shape):
        if self.data_format == "channels_first":
            batch, channels, rows, cols = input_shape
        else:
            batch, rows, cols, channels = input_shape
        rows = _pooled_size(rows, self.pool_size[0], self.strides[0], self.padding)
        cols = _pooled_size(cols, self.pool_size[1], self.strides[1], self.padding)
        if self.data_format == "channels_first":
            return (batch, channels, rows, cols)
        return (batch, rows, cols, channels)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides,
                      padding=self.padding, data_format=self.data_format,
                      seed=self.seed)
        return config
