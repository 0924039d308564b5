"""Stochastic depth (Huang et al. 2016): drop a residual branch per example.

Backend-neutral: only `keras.ops` and `keras.random` (the per-example keep
mask is kreg's one mask primitive, `StochasticLayer.keep_mask`).
"""

import keras
from keras import ops

from kreg import _compat
from kreg import _validation as v
from kreg.layers._bernoulli import where_kept
from kreg.layers._sampling import per_sample_draw
from kreg.layers.base import StochasticLayer

_SCALABLE = ("a floating-point tensor (a kept branch is scaled by "
             "1 / (1 - rate))")


def stochastic_depth_rates(num_blocks, final_rate):
    """The paper's linear decay of the drop rate over depth: `p_l = l / L * p_L`.

    Block `l = 1 .. L` (input side first) drops its residual branch with
    probability `l / L * final_rate`: the first block almost never, the last
    with `final_rate` (Huang et al. use 0.5).

    Args:
        num_blocks: int >= 1. The number of residual blocks L.
        final_rate: float in [0, 1). The rate of the last block, p_L.

    Returns:
        A list of `num_blocks` floats, one rate per block, in order.

    Example:

    >>> import kreg
    >>> kreg.layers.stochastic_depth_rates(4, 0.5)
    [0.125, 0.25, 0.375, 0.5]

    References:
        Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016,
        section 3 (linear decay rule).
    """
    owner = "stochastic_depth_rates"
    num_blocks = v.check_int(owner, "num_blocks", num_blocks, low=1)
    final_rate = v.check_float(owner, "final_rate", final_rate, low=0.0, high=1.0,
                               high_open=True)
    return [layer / num_blocks * final_rate for layer in range(1, num_blocks + 1)]


@keras.saving.register_keras_serializable(package="kreg")
class StochasticDepth(StochasticLayer):
    """Stochastic depth (Huang et al. 2016) for a residual branch.

    Use it on the branch of a residual block, `x + StochasticDepth(rate)(f(x))`.
    While training, each example's whole branch is dropped with probability
    `rate` and otherwise scaled by `1 / (1 - rate)`: the inverted form (timm's
    `DropPath`, as in ConvNeXt), so the layer is the identity at inference.
    The paper's original form instead leaves kept branches unscaled and
    multiplies the branch by `1 - rate` at test time; both have the same
    expected output. `stochastic_depth_rates` gives the paper's linear decay
    of the rate over depth.

    Inside kreg's Monte Carlo sampling scope (`kreg.MCPredictor`,
    `kreg.export`'s `serve_mc`) the layer samples as in training: every row
    its own draw, or in joint mode one draw per sample, shared by every input
    of the sample (sample t is one network with some blocks removed). The
    generator's state is saved with the model.

    Args:
        rate: float in [0, 1). The probability of dropping the branch.
        seed: int or None, default None. Seed of the layer's random stream.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a floating-point tensor `(batch, ...)`, the residual branch.
        training: bool, default None (False). Whether to drop branches.

    Returns:
        A tensor of the same shape and dtype as `inputs`.

    Example:

    >>> import keras, numpy as np, kreg
    >>> layer = kreg.layers.StochasticDepth(0.5, seed=1)
    >>> branch = np.ones((40, 2, 3), "float32")
    >>> y = keras.ops.convert_to_numpy(layer(branch, training=True)).reshape(40, -1)
    >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and scaled by 1 / 0.5
    [0.0, 2.0]
    >>> bool(np.all(y.min(axis=1) == y.max(axis=1)))  # whole rows
    True
    >>> x = keras.Input((8,))
    >>> block = keras.layers.Add()([x, kreg.layers.StochasticDepth(0.2)(
    ...     keras.layers.Dense(8)(x))])

    References:
        Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with Stochastic
        Depth", ECCV 2016, section 3.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if rate is None:  # resolve_rate reads None as "not given"
            raise v.invalid_type("StochasticDepth", "rate", "a float in [0, 1)", rate)
        self._init_stochastic(rate, None, seed)
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(min_ndim=1)
        _compat.build_at_init(self)

    def _check_call(self, inputs, training, ctx):
        owner = "StochasticDepth"
        if not (hasattr(inputs, "dtype") and hasattr(inputs, "shape")):
            raise v.invalid_type(owner, "inputs", "a tensor", inputs)
        if self.rate > 0.0:
            v.check_float_tensor(owner, "inputs", inputs, _SCALABLE)

    def _infer(self, inputs):
        return inputs

    def _train(self, inputs):
        return self._drop(inputs, self.training_seed())

    def _drop(self, inputs, seed):
        """One keep/drop decision per row (broadcast over the other axes)."""
        rank = len(inputs.shape)
        keep = self.keep_mask((ops.shape(inputs)[0],) + (1,) * (rank - 1), seed)
        return where_kept(keep, inputs, self.keep_prob)

    def _sample(self, inputs, ctx):
        seed = ctx.seed_for(self)
        if not ctx.joint:  # every row its own draw: as in training
            return self._drop(inputs, seed)
        shape = ops.shape(inputs)
        rank = len(inputs.shape)
        keep = per_sample_draw(ctx, seed, (1,) * rank, self.keep_mask)
        x = ops.reshape(inputs, (ctx.tiles, -1) + tuple(shape[1:]))
        return ops.reshape(where_kept(keep, x, self.keep_prob), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
