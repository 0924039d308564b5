"""Fractional max-pooling (Graham 2014).

Backend-neutral: only `keras.ops` and `keras.random` (no `tf.nn`).
"""

import math
import numbers

import keras
from keras import ops

from kreg import _validation as v
from kreg.layers._noise import NoiseLayer
from kreg.layers._noise import check_data_format
from kreg.layers._sampling import per_sample_draw
from kreg.layers._seeds import TensorSeed

_INFERENCE_SALT = 1_999_999_973  # second seed word of the fixed inference draw


def output_size(input_size, pooling_ratio):
    """`floor(input_size / pooling_ratio)`, as `tf.nn.fractional_max_pool`."""
    return int(math.floor(input_size / pooling_ratio))


def pseudo_random_cells(input_size, out):
    """M = u_max * input_size, an integer: the number of distinct u cells.

    With alpha = input_size / out and k = floor(alpha), TensorFlow draws
    u uniformly in (0, u_max), u_max = min((k + 2) / alpha - 1,
    (input_size + 1 - k) / alpha - (out - 1)), which keeps every increment
    in {k, k + 1}. The sequence depends on u only through
    r = floor(u * input_size), uniform on {0, ..., M - 1} with
    M = min((k + 2) out - input_size, (input_size + 1 - k) out
    - (out - 1) input_size) (exact integers, no rounding).
    """
    k = input_size // out
    return min((k + 2) * out - input_size,
               (input_size + 1 - k) * out - (out - 1) * input_size)


def pooling_sequence(input_size, out, uniforms, pseudo_random=True):
    """Graham's pooling boundaries `0 = a_0 < a_1 < ... < a_out = input_size`.

    With `alpha = input_size / out` and `k = floor(alpha)` (k = 1 for a
    ratio in (1, 2)), every increment `a_i - a_{i-1}` is k or k + 1, exactly
    as in TensorFlow's `fractional_max_pool`:

    * pseudo-random: `a_i = ceil(alpha (i + u)) - 1` for `0 < i < out`, with
      `u = U * u_max` (TensorFlow's bound u_max keeps the first and last
      increments in {k, k + 1}). Computed exactly in integers: with
      `r = floor(u * input_size)`, `a_i = floor((input_size * i + r) / out)`
      (see `pseudo_random_cells`).
    * random: `input_size mod out` increments of k + 1 and the rest k, in a
      uniformly random order (the ranks of the uniforms).

    Args:
        input_size: int >= 2, N_in.
        out: int in [1, input_size], N_out.
        uniforms: float tensor `(draws, 1)` (pseudo-random) or
            `(draws, out)` (random) of values in [0, 1).
        pseudo_random: bool, default True.

    Returns:
        An int32 tensor `(draws, out + 1)`.
    """
    uniforms = ops.convert_to_tensor(uniforms, "float32")
    draws = ops.shape(uniforms)[0]
    zero = ops.zeros((draws, 1), "int32")
    if pseudo_random:
        cells = pseudo_random_cells(input_size, out)
        r = ops.floor(uniforms[:, :1] * cells)
        r = ops.minimum(ops.cast(r, "int32"), cells - 1)
        i = ops.arange(1, out, dtype="int32")[None, :]
        inner = (input_size * i + r) // out
        end = ops.full((draws, 1), input_size, "int32")
        return ops.concatenate([zero, inner, end], axis=1)
    k, extra = divmod(input_size, out)
    ranks = ops.argsort(ops.argsort(uniforms, axis=-1), axis=-1)
    steps = k + ops.cast(ranks < extra, "int32")
    return ops.concatenate([zero, ops.cumsum(steps, axis=-1)], axis=1)


def region_indices(sequence, input_size, overlapping):
    """The indices of each pooling region, padded by repeating the last one.

    Region i spans `a_i .. a_{i+1} - 1` (disjoint) or `a_i .. a_{i+1}`
    (overlapping by one), clipped at `input_size - 1` as TensorFlow does.

    Args:
        sequence: int tensor `(draws, out + 1)` from `pooling_sequence`.
        input_size: int, N_in.
        overlapping: bool.

    Returns:
        An int32 tensor `(draws, out, width)`, width = the largest region.
    """
    sequence = ops.cast(ops.convert_to_tensor(sequence), "int32")
    out = sequence.shape[-1] - 1
    width = input_size // out + 1 + int(overlapping)
    start = sequence[:, :-1, None]
    last = ops.minimum(sequence[:, 1:, None] - 1 + int(overlapping),
                       input_size - 1)
    return ops.minimum(start + ops.arange(width, dtype="int32"), last)


def _gather_max(x, indices, axis):
    """Max of `x` over the regions `indices` (draws, out, width) along `axis`.

    `x` has one leading axis per draw (draw d uses `indices[d]`).
    """
    x = ops.moveaxis(x, axis, 1)
    shape = ops.shape(x)
    draws, length, rest = shape[0], shape[1], tuple(shape[2:])
    out, width = indices.shape[1], indices.shape[2]
    flat = ops.reshape(x, (-1,) + rest)
    offsets = ops.arange(draws, dtype="int32")[:, None, None] * length
    picked = ops.take(flat, ops.reshape(indices + offsets, (-1,)), axis=0)
    picked = ops.reshape(picked, (draws, out, width) + rest)
    return ops.moveaxis(ops.max(picked, axis=2), 1, axis)


def _check_ratio(owner, pooling_ratio):
    expected = "a float in (1, 2) or a tuple of 2 such floats"
    pair = pooling_ratio
    if isinstance(pooling_ratio, numbers.Real) and not isinstance(pooling_ratio, bool):
        pair = (pooling_ratio, pooling_ratio)
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
            isinstance(r, bool) or not isinstance(r, numbers.Real) for r in pair):
        raise v.invalid_type(owner, "pooling_ratio", expected, pooling_ratio)
    if any(not 1.0 < float(r) < 2.0 for r in pair):
        raise v.invalid_value(owner, "pooling_ratio", expected, pooling_ratio)
    if isinstance(pooling_ratio, (tuple, list)):
        return tuple(float(r) for r in pooling_ratio)
    return float(pooling_ratio)


@keras.saving.register_keras_serializable(package="kreg")
class FractionalMaxPooling2D(NoiseLayer):
    """Fractional max-pooling (Graham 2014): max over random-sized regions.

    An input of `N_in` rows gives `N_out = floor(N_in / pooling_ratio)`
    rows (as `tf.nn.fractional_max_pool`), and likewise for columns. The rows
    are cut at boundaries `0 = a_0 < a_1 < ... < a_out = N_in` whose
    increments are 1 or 2 for a ratio in (1, 2) (in general k or k + 1 with
    `k = floor(N_in / N_out)`: a small input, e.g. 3 rows at ratio 1.9, has
    `N_out = 1` and one region of 3 rows; when `N_in = 2 N_out`, e.g. 4 rows
    at ratio 1.414, every step is 2 and the regions are not random at all);
    see `pooling_sequence` for the
    pseudo-random and random sequences. Each output is the max over rows
    `a_i .. a_{i+1} - 1` (`overlapping=False`) or `a_i .. a_{i+1}`
    (`overlapping=True`, clipped at the last row) and the same for columns.

    * Training: new row and column boundaries on every call (every batch),
      shared by the examples of the batch (as TensorFlow's op).
    * Inference: a fixed set of boundaries drawn from the layer's seed, so the
      layer is deterministic (and keeps its regions through a `.keras` save).
    * Inside kreg's Monte Carlo sampling scope (`kreg.MCPredictor`,
      `kreg.export`): every sample draws its own boundaries, shared by the
      inputs of the sample; in joint mode they are a function of the seed,
      the layer and the sample index only. Averaging over samples is the
      paper's test-time averaging over repeated draws.

    Args:
        pooling_ratio: float in (1, 2), or a tuple (rows, cols) of two,
            default 1.414. The reduction factor alpha.
        pseudo_random: bool, default True. Pseudo-random (True) or random
            (False) boundary sequences.
        overlapping: bool, default True. Regions overlap by one row/column.
        data_format: `"channels_last"`, `"channels_first"` or None, default
            None (`keras.config.image_data_format()`).
        seed: int or None, default None. Seed of the layer's random stream
            (and of its inference regions).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a 4D tensor with static rows and columns, each >= 2.
        training: bool, default None (False). Whether to draw new regions.

    Returns:
        A 4D tensor with `N_out` rows and columns.

    Example:

    >>> import keras, numpy as np, kreg
    >>> layer = kreg.layers.FractionalMaxPooling2D(1.5, seed=1)
    >>> x = np.arange(36, dtype="float32").reshape(1, 6, 6, 1)
    >>> y = keras.ops.convert_to_numpy(layer(x))
    >>> y.shape  # floor(6 / 1.5) = 4
    (1, 4, 4, 1)
    >>> bool(np.all(y == keras.ops.convert_to_numpy(layer(x))))  # fixed regions
    True
    >>> seq = layer.draw_sequences(1, 6, 4)  # a training-time draw
    >>> s = keras.ops.convert_to_numpy(seq)[0]
    >>> int(s[0]), int(s[-1]), set(np.diff(s).tolist()) <= {1, 2}
    (0, 6, True)

    References:
        Graham, "Fractional Max-Pooling", arXiv:1412.6071, 2014, section 3
        (sequences) and section 4 (test-time averaging).
    """

    def __init__(self, pooling_ratio=1.414, pseudo_random=True, overlapping=True,
                 data_format=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        owner = "FractionalMaxPooling2D"
        self.pooling_ratio = _check_ratio(owner, pooling_ratio)
        self.pseudo_random = v.check_bool(owner, "pseudo_random", pseudo_random)
        self.overlapping = v.check_bool(owner, "overlapping", overlapping)
        self.data_format = check_data_format(owner, data_format)
        self._init_seed(seed)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def _ratios(self):
        r = self.pooling_ratio
        return tuple(r) if isinstance(r, tuple) else (r, r)

    def _spatial(self, shape):
        """(rows, cols) of an input shape; static and >= 2, or kreg's error."""
        sizes = (shape[2], shape[3]) if self.data_format == "channels_first" \
            else (shape[1], shape[2])
        if any(s is None or not isinstance(s, int) or s < 2 for s in sizes):
            raise v.invalid_value(
                "FractionalMaxPooling2D", "inputs",
                "a 4D input with static spatial dimensions, each >= 2",
                f"shape {tuple(shape)}")
        return sizes

    def build(self, input_shape):
        self._spatial(input_shape)

    def compute_output_shape(self, input_shape):
        rows, cols = self._spatial(input_shape)
        out = tuple(output_size(n, r) for n, r in zip((rows, cols), self._ratios))
        if self.data_format == "channels_first":
            return (input_shape[0], input_shape[1]) + out
        return (input_shape[0],) + out + (input_shape[3],)

    # -- regions ------------------------------------------------------------
    def _uniform_width(self, out_rows, out_cols):
        return 2 if self.pseudo_random else out_rows + out_cols

    def draw_sequences(self, draws, input_size, out, seed=None):
        """Draw `draws` row (or column) boundary sequences.

        Args:
            draws: int >= 1.
            input_size, out: ints, N_in and N_out.
            seed: a `SeedGenerator` or None (the layer's generator, advanced).

        Returns:
            An int32 tensor `(draws, out + 1)` (see `pooling_sequence`).
        """
        width = 1 if self.pseudo_random else out
        u = keras.random.uniform((draws, width), seed=seed or self.seed_generator,
                                 dtype="float32")
        return pooling_sequence(input_size, out, u, self.pseudo_random)

    def _sequences(self, uniforms, sizes, outs):
        """Row and column sequences from one draw of uniforms (draws, m)."""
        (rows, cols), (out_r, out_c) = sizes, outs
        if self.pseudo_random:
            u_rows, u_cols = uniforms[:, :1], uniforms[:, 1:2]
        else:
            u_rows, u_cols = uniforms[:, :out_r], uniforms[:, out_r:]
        return (pooling_sequence(rows, out_r, u_rows, self.pseudo_random),
                pooling_sequence(cols, out_c, u_cols, self.pseudo_random))

    def inference_sequences(self, input_shape):
        """The fixed (row, column) boundaries used at inference, `(1, out + 1)` each."""
        sizes = self._spatial(input_shape)
        outs = tuple(output_size(n, r) for n, r in zip(sizes, self._ratios))
        return self._sequences(self._draw(1, outs, self._inference_seed()),
                               sizes, outs)

    def _inference_seed(self):
        state = ops.convert_to_tensor(self.seed_generator.state)
        salt = ops.convert_to_tensor(_INFERENCE_SALT, dtype=state.dtype)
        return TensorSeed(ops.stack([state[0], salt]))

    def _draw(self, draws, outs, seed):
        shape = (draws, self._uniform_width(*outs))
        return keras.random.uniform(shape, seed=seed, dtype="float32")

    def pool_with_sequences(self, inputs, row_sequence, col_sequence):
        """Max-pool `inputs` over the regions of given boundary sequences.

        Args:
            inputs: a 4D tensor (the layer's `data_format`).
            row_sequence, col_sequence: int tensors `(out + 1,)`, or
                `(draws, out + 1)` with the batch split into `draws` equal
                consecutive groups, group d pooled with sequence d.

        Returns:
            A 4D tensor with `out` rows and columns.
        """
        rows = ops.convert_to_tensor(row_sequence)
        cols = ops.convert_to_tensor(col_sequence)
        if len(rows.shape) == 1:
            rows, cols = rows[None], cols[None]
        x = inputs
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        n_rows, n_cols = x.shape[1], x.shape[2]
        draws = rows.shape[0]
        shape = ops.shape(x)
        x = ops.reshape(x, (draws, -1) + tuple(shape[1:]))
        x = _gather_max(x, region_indices(rows, n_rows, self.overlapping), 2)
        x = _gather_max(x, region_indices(cols, n_cols, self.overlapping), 3)
        x = ops.reshape(x, (-1,) + tuple(ops.shape(x)[2:]))
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 3, 1, 2))
        return x

    # ------------------------------------------------------------------
    def _sample(self, inputs, ctx):
        return self._pool(inputs, lambda outs: per_sample_draw(
            ctx, ctx.seed_for(self), (self._uniform_width(*outs),),
            lambda shape, seed: keras.random.uniform(shape, seed=seed, dtype="float32")))

    def _train(self, inputs):
        return self._pool(inputs, lambda outs: self._draw(1, outs, self.training_seed()))

    def _infer(self, inputs):
        return self._pool(inputs, lambda outs: self._draw(1, outs, self._inference_seed()))

    def _pool(self, inputs, uniforms):
        """Pool `inputs` over the regions of `uniforms(output sizes)`."""
        sizes = self._spatial(inputs.shape)
        outs = tuple(output_size(n, r) for n, r in zip(sizes, self._ratios))
        rows, cols = self._sequences(uniforms(outs), sizes, outs)
        return self.pool_with_sequences(inputs, rows, cols)

    def get_config(self):
        config = super().get_config()
        config.update(pooling_ratio=self.pooling_ratio,
                      pseudo_random=self.pseudo_random,
                      overlapping=self.overlapping,
                      data_format=self.data_format, seed=self.seed)
        return config
