"""DropBlock (Ghiasi, Lin & Le 2018): dropout of contiguous regions.

Backend-neutral: only `keras.ops` and `keras.random` (block corners are drawn
by kreg's one mask primitive, `kreg.layers._bernoulli.keep_mask`).
"""

import keras
from keras import ops

from kreg import _compat
from kreg import _validation as v
from kreg.layers import _bernoulli
from kreg.layers._noise import check_data_format
from kreg.layers._sampling import per_sample_draw
from kreg.layers.base import StochasticLayer

_SCALABLE = ("a floating-point tensor (DropBlock scales the kept activations "
             "by count(M) / count_ones(M))")


def _covering_corners(size, block_size):
    """For each position along an axis of `size`: how many block corners
    (top-left positions `0 .. size - block_size`) give a block covering it."""
    last = size - block_size
    return [min(i, last) - max(0, i - block_size + 1) + 1 for i in range(size)]


@keras.saving.register_keras_serializable(package="kreg")
class DropBlock2D(StochasticLayer):
    """DropBlock (Ghiasi et al. 2018): drops `block_size x block_size` regions.

    While training, each feature map (one channel of one example) gets block
    corners from a Bernoulli(`gamma`) draw at the positions where a whole
    block fits, `(rows - block_size + 1) x (cols - block_size + 1)` of them,
    with the paper's rate

        gamma = rate / block_size**2 * rows * cols
                / ((rows - block_size + 1) * (cols - block_size + 1)),

    so that about `rate` of the units are dropped (a little less, because
    blocks overlap: `expected_drop_fraction` gives the exact value). The mask
    `M` is the union of the blocks (a max-pooling of the corners), and the
    output is `x * M * count(M) / count_ones(M)`, which keeps the mean
    activation unchanged. The counts are taken over each example's own mask
    (all its feature maps), so an example's output never depends on the other
    rows of the batch (the TPU reference code takes them over the whole
    batch); an example with every unit dropped outputs zeros. At inference the
    layer is the identity.

    The paper ramps the rate linearly from 0 during training:
    `kreg.callbacks.LinearRateRamp` does that for this layer (and kreg's
    other layers with a fixed `rate`).

    Inside kreg's Monte Carlo sampling scope (`kreg.MCPredictor`,
    `kreg.export`'s `serve_mc`) the layer samples as in training: every row
    its own blocks, or in joint mode one set of blocks per sample, shared by
    every input of the sample. The generator's state is saved with the model.

    The spatial size of the inputs must be known when the layer is called
    (traced), and `block_size` must not exceed it.

    Args:
        rate: float in [0, 1). The target fraction of dropped units (the
            paper's `1 - keep_prob`).
        block_size: int >= 1, default 7 (the paper's choice on ResNet-50).
            The side of the square blocks; 1 is dropout of single units.
        data_format: `"channels_last"`, `"channels_first"` or None, default
            None (`keras.config.image_data_format()`).
        seed: int or None, default None. Seed of the layer's random stream.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a 4D floating-point tensor, `(batch, rows, cols, channels)`
            for channels_last, with known `rows` and `cols`, both at least
            `block_size`.
        training: bool, default None (False). Whether to drop blocks.

    Returns:
        A tensor of the same shape and dtype as `inputs`.

    Example:

    >>> import keras, numpy as np, kreg
    >>> layer = kreg.layers.DropBlock2D(0.2, block_size=3, seed=1)
    >>> x = np.ones((64, 16, 16, 4), "float32")
    >>> y = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> dropped = (y == 0).mean()
    >>> bool(abs(dropped - layer.expected_drop_fraction(16, 16)) < 0.01)
    True
    >>> round(float(y.mean()), 4)  # the mean activation is kept
    1.0
    >>> bool(np.all(keras.ops.convert_to_numpy(layer(x)) == x))  # inference
    True

    References:
        Ghiasi, Lin & Le, "DropBlock: A regularization method for
        convolutional networks", NeurIPS 2018, section 3 and Algorithm 1.
    """

    def __init__(self, rate, block_size=7, data_format=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        owner = "DropBlock2D"
        if rate is None:  # resolve_rate reads None as "not given"
            raise v.invalid_type(owner, "rate", "a float in [0, 1)", rate)
        self._init_stochastic(rate, None, seed)
        self.block_size = v.check_int(owner, "block_size", block_size, low=1)
        self.data_format = check_data_format(owner, data_format)
        self.input_spec = keras.layers.InputSpec(ndim=4)
        _compat.build_at_init(self)

    # -- the paper's quantities ----------------------------------------------
    def gamma(self, rows, cols):
        """The Bernoulli rate of block corners on a `rows x cols` map.

        Args:
            rows, cols: ints, the feature map's size (at least `block_size`).

        Returns:
            A float, `rate / b**2 * rows * cols / ((rows - b + 1) *
            (cols - b + 1))` with `b = block_size`.
        """
        rows, cols = self._check_size(rows, cols)
        b = self.block_size
        return self.rate / b**2 * rows * cols / ((rows - b + 1) * (cols - b + 1))

    def expected_drop_fraction(self, rows, cols):
        """The exact expected fraction of dropped units on a `rows x cols` map.

        A unit covered by `n` possible blocks is dropped with probability
        `1 - (1 - gamma)**n`; this is the mean of that over the map. It is a
        little below `rate` (blocks overlap), most where `block_size` is
        large compared with the map.

        Args:
            rows, cols: ints, the feature map's size (at least `block_size`).

        Returns:
            A float in [0, rate].
        """
        gamma = self.gamma(rows, cols)
        b = self.block_size
        total = sum(1.0 - (1.0 - gamma) ** (n * m)
                    for n in _covering_corners(rows, b)
                    for m in _covering_corners(cols, b))
        return total / (rows * cols)

    def _check_size(self, rows, cols):
        owner = "DropBlock2D"
        for name, size in (("rows", rows), ("cols", cols)):
            v.check_int(owner, name, size, low=self.block_size)
        return int(rows), int(cols)

    # -- StochasticLayer -----------------------------------------------------
    def _check_call(self, inputs, training, ctx):
        owner = "DropBlock2D"
        if not (hasattr(inputs, "dtype") and hasattr(inputs, "shape")):
            raise v.invalid_type(owner, "inputs", "a tensor", inputs)
        v.check_float_tensor(owner, "inputs", inputs, _SCALABLE)
        self._check_shape(tuple(inputs.shape))

    def _check_shape(self, shape):
        """Refuse a feature map smaller than a block (or of unknown size)."""
        if len(shape) != 4:
            return  # the input spec reports the rank
        owner = "DropBlock2D"
        rows, cols = self._spatial(shape)
        b = self.block_size
        if rows is None or cols is None or rows < b or cols < b:
            raise ValueError(v.error_message(
                owner, "block_size",
                "a block no larger than the feature map, whose rows and cols "
                "must be known when the layer is called",
                b, received=f"block_size={b} for inputs of shape {shape} "
                f"({self.data_format})"))

    def _spatial(self, shape):
        if self.data_format == "channels_first":
            return shape[2], shape[3]
        return shape[1], shape[2]

    def _infer(self, inputs):
        return inputs

    def _train(self, inputs):
        keep = self._keep_mask(ops.shape(inputs)[0], inputs, self.training_seed())
        return self._apply(inputs, keep)

    def _sample(self, inputs, ctx):
        seed = ctx.seed_for(self)
        if not ctx.joint:  # every row its own blocks: as in training
            return self._apply(inputs, self._keep_mask(ops.shape(inputs)[0], inputs, seed))
        shape = ops.shape(inputs)
        corners = per_sample_draw(ctx, seed, self._corner_shape(inputs)[1:],
                                  self._corners)
        keep = self._blocks(corners, inputs.dtype)
        x = ops.reshape(inputs, (ctx.tiles, -1) + tuple(shape[1:]))
        out = self._apply(x, ops.expand_dims(keep, 1), axes=(2, 3, 4))
        return ops.reshape(out, shape)

    # -- the mask ------------------------------------------------------------
    def _corner_shape(self, inputs):
        """`(batch, rows - b + 1, cols - b + 1, channels)` (channels last)."""
        shape = tuple(inputs.shape)
        rows, cols = self._spatial(shape)
        channels = shape[1] if self.data_format == "channels_first" else shape[3]
        b = self.block_size
        return (None, rows - b + 1, cols - b + 1, channels)

    def _corners(self, shape, seed):
        """Block corners: True with probability gamma (a bool tensor)."""
        rows = shape[-3] + self.block_size - 1
        cols = shape[-2] + self.block_size - 1
        return ops.logical_not(
            _bernoulli.keep_mask(shape, 1.0 - self.gamma(rows, cols), seed))

    def _keep_mask(self, batch, inputs, seed):
        corners = self._corners((batch,) + self._corner_shape(inputs)[1:], seed)
        return self._blocks(corners, inputs.dtype)

    def _blocks(self, corners, dtype):
        """The keep mask `M` (0 inside a block) from `(n, r', c', C)` corners,
        in the layer's data format."""
        b = self.block_size
        corners = ops.cast(corners, dtype)
        padded = ops.pad(corners, [[0, 0], [b - 1, b - 1], [b - 1, b - 1], [0, 0]])
        # Output (i, j) is the max over corners (i - b + 1 .. i, j - b + 1 .. j):
        # exactly the corners whose block covers (i, j).
        dropped = ops.max_pool(padded, b, strides=1, padding="valid",
                               data_format="channels_last")
        keep = 1 - dropped
        if self.data_format == "channels_first":
            keep = ops.transpose(keep, (0, 3, 1, 2))
        return keep

    @staticmethod
    def _apply(inputs, keep, axes=(1, 2, 3)):
        """`inputs * M * count(M) / count_ones(M)`, counted per example."""
        count = 1
        for axis in axes:
            count = count * ops.shape(keep)[axis]
        ones = ops.sum(keep, axis=axes, keepdims=True)
        scale = ops.cast(count, keep.dtype) / ops.maximum(ones, ops.ones_like(ones))
        return inputs * (keep * scale)

    def compute_output_shape(self, input_shape):
        # Keras builds a model from this (not `call`): check the size here too.
        self._check_shape(tuple(input_shape))
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, block_size=self.block_size,
                      data_format=self.data_format, seed=self.seed)
        return config
