"""What kreg's noise layers without a drop rate share (private).

Stochastic pooling, fractional max-pooling and additive Gaussian noise are
kreg stochastic layers (`StochasticLayer`: a saved seed state, sampled by the
Monte Carlo predictor and `kreg.export`), but they have no drop probability.
`NoiseLayer` gives them a seeded generator without a rate, and
`per_sample_draw` the one rule for drawing noise per Monte Carlo sample that
`kreg.layers.Dropout` follows too: in joint mode the draw of sample t is a
function of the seed, the layer and t only. Backend-neutral.
"""

import keras
from keras import ops

from kreg import _validation as v
from kreg.layers.base import StochasticLayer

DATA_FORMATS = ("channels_last", "channels_first")


class NoiseLayer(StochasticLayer):
    """A `StochasticLayer` that always samples and has no drop rate."""

    #: No drop probability. Present (None) because code that walks kreg's
    #: stochastic layers may key on their `rate` (MCPredictor's cache does).
    rate = None

    def _init_seed(self, seed):
        self.seed = v.check_seed(type(self).__name__, seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    @property
    def keep_prob(self):
        """None: the layer has no keep probability."""
        return None

    @property
    def is_stochastic(self):
        """True: the layer always draws noise when training or sampling."""
        return True


def check_data_format(owner, data_format):
    """`None` (Keras's `image_data_format()`) or one of DATA_FORMATS."""
    if data_format is None:
        return keras.config.image_data_format()
    if isinstance(data_format, str):
        data_format = data_format.lower()
    return v.check_option(owner, "data_format", data_format, DATA_FORMATS)


def per_sample_draw(ctx, seed, shape, draw):
    """One draw of `shape` for each Monte Carlo sample of a tiled pass.

    Returns a tensor of shape `(ctx.tiles,) + shape`. In joint mode, sample
    t's draw is row `sample_offset + t` of a draw for all `total_samples`, so it
    depends on the seed, the layer and the sample index only (not on chunking).

    Args:
        ctx: the active `SamplingContext`.
        seed: the layer's seed in this pass (`ctx.seed_for(layer)`).
        shape: tuple, the shape of one sample's draw.
        draw: `draw(shape, seed)` returning a tensor of that shape.
    """
    shape = tuple(shape)
    if not ctx.joint:
        return draw((ctx.tiles,) + shape, seed)
    full = draw((ctx.total_samples,) + shape, seed)
    return ops.slice(full, (ctx.sample_offset,) + (0,) * len(shape),
                     (ctx.tiles,) + shape)
