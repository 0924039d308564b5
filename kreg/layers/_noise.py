"""What kreg's noise layers without a drop rate share (private).

Stochastic pooling, fractional max-pooling and additive Gaussian noise are
kreg stochastic layers (`StochasticLayer`: a saved seed state, sampled by the
Monte Carlo predictor and `kreg.export`), but they have no drop probability.
`NoiseLayer` gives them a seeded generator without a rate; they draw their
noise per Monte Carlo sample with `kreg.layers._sampling.per_sample_draw`.
Backend-neutral.
"""

import keras

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
