"""Gaussian dropout (multiplicative noise) and its additive sibling.

Backend-neutral: only `keras.ops` and `keras.random`.
"""

import math

import keras
from keras import ops

from kreg import _compat
from kreg import _validation as v
from kreg.layers._noise import NoiseLayer
from kreg.layers._sampling import per_sample_draw
from kreg.layers.base import DEFAULT_RATE
from kreg.layers.base import StochasticLayer


class _GaussianNoiseMixin:
    """Training, sampling and inference of a layer `x -> x (op) N(mean, std^2)`."""

    _noise_mean = 0.0

    def _stddev(self):
        raise NotImplementedError

    def _combine(self, inputs, noise):
        raise NotImplementedError

    def _draw(self, shape, seed):
        return keras.random.normal(shape, mean=self._noise_mean,
                                   stddev=self._stddev(), seed=seed,
                                   dtype="float32")

    def _perturb(self, inputs, noise):
        return self._combine(inputs, ops.cast(noise, inputs.dtype))

    def _train(self, inputs):
        return self._perturb(inputs, self._draw(ops.shape(inputs), self.training_seed()))

    def _infer(self, inputs):
        return inputs

    def _sample(self, inputs, ctx):
        """Independent noise per row; joint mode: one draw per sample."""
        seed = ctx.seed_for(self)
        shape = ops.shape(inputs)
        if not ctx.joint:
            return self._perturb(inputs, self._draw(shape, seed))
        noise = per_sample_draw(ctx, seed, (1,) + tuple(shape[1:]), self._draw)
        x = ops.reshape(inputs, (ctx.tiles, -1) + tuple(shape[1:]))
        return ops.reshape(self._perturb(x, noise), shape)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="kreg")
class GaussianDropout(_GaussianNoiseMixin, StochasticLayer):
    """Gaussian dropout: multiplicative noise r ~ N(1, rate / (1 - rate)).

    While training, every unit is multiplied by an independent
    `r ~ N(1, sigma^2)` with `sigma^2 = rate / (1 - rate) = (1 - p) / p` for
    the keep probability `p = 1 - rate`: the variance of Bernoulli dropout's
    inverted mask `b / p`, with the same mean 1 (Srivastava et al., section
    10). At inference the layer is the identity (`E[r x] = x`, the analytic
    marginalization). The same distribution as `keras.layers.GaussianDropout`;
    unlike it, the generator's state is saved with the model, and inside
    kreg's Monte Carlo sampling scope (`kreg.MCPredictor`, `kreg.export`) the
    layer samples: every row its own noise, or in joint mode one draw of
    the noise per sample, shared by every input of the sample.

    Args:
        rate: float in [0, 1) or None, default None. The matching Bernoulli
            dropout's drop probability. Give `rate` or `keep_prob`, not both.
        keep_prob: float in (0, 1] or None, default None. The keep
            probability p; `rate = 1 - keep_prob`.
        seed: int or None, default None. Seed of the layer's random stream.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of any rank.
        training: bool, default None (False). Whether to apply the noise.

    Returns:
        A tensor of the same shape and dtype as `inputs`.

    Example:

    >>> import keras, numpy as np, kreg
    >>> layer = kreg.layers.GaussianDropout(0.2, seed=1)  # sigma^2 = 0.25
    >>> x = np.ones((400, 100), "float32")
    >>> r = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> bool(abs(r.mean() - 1.0) < 5 * 0.5 / 200)  # 5 standard errors
    True
    >>> bool(abs(r.std() - 0.5) < 0.01)
    True
    >>> bool(np.all(keras.ops.convert_to_numpy(layer(x)) == x))  # inference
    True

    References:
        Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks
        from Overfitting", JMLR 15, 2014, section 10 (multiplicative Gaussian
        noise).
    """

    _noise_mean = 1.0

    def __init__(self, rate=None, *, keep_prob=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if rate is None and keep_prob is None:
            raise ValueError(v.error_message(
                "GaussianDropout", "rate",
                "a float in [0, 1) (or give `keep_prob` instead)", rate))
        self._init_stochastic(DEFAULT_RATE if rate is None else rate,
                              keep_prob, seed)
        self.supports_masking = True
        _compat.build_at_init(self)

    def _stddev(self):
        return math.sqrt(self.rate / (1.0 - self.rate))

    def _combine(self, inputs, noise):
        return inputs * noise

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, keep_prob=None, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="kreg")
class GaussianNoise(_GaussianNoiseMixin, NoiseLayer):
    """Additive zero-centered Gaussian noise, sampled by kreg's Monte Carlo.

    While training, adds independent `N(0, stddev^2)` noise to every unit, as
    `keras.layers.GaussianNoise` does; the identity at inference. Inside
    kreg's Monte Carlo sampling scope it samples (every row its own noise; in
    joint mode one draw per sample, shared by every input of the sample), and
    the generator's state is saved with the model. `kreg.convert_dropout(model,
    gaussian_noise=True)` puts it in place of Keras's.

    Args:
        stddev: float >= 0. The standard deviation of the noise.
        seed: int or None, default None. Seed of the layer's random stream.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of any rank.
        training: bool, default None (False). Whether to add the noise.

    Returns:
        A tensor of the same shape and dtype as `inputs`.

    Example:

    >>> import keras, numpy as np, kreg
    >>> layer = kreg.layers.GaussianNoise(0.5, seed=1)
    >>> y = keras.ops.convert_to_numpy(layer(np.zeros((400, 100), "float32"),
    ...                                      training=True))
    >>> bool(abs(y.mean()) < 5 * 0.5 / 200), bool(abs(y.std() - 0.5) < 0.01)
    (True, True)

    References:
        Bishop, "Training with Noise is Equivalent to Tikhonov
        Regularization", Neural Computation 7(1), 1995.
    """

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.stddev = v.check_float("GaussianNoise", "stddev", stddev, low=0.0)
        self._init_seed(seed)
        self.supports_masking = True
        _compat.build_at_init(self)

    @property
    def is_stochastic(self):
        """True when the noise is not zero (stddev > 0)."""
        return self.stddev > 0.0

    def _stddev(self):
        return self.stddev

    def _combine(self, inputs, noise):
        return inputs + noise

    def get_config(self):
        config = super().get_config()
        config.update(stddev=self.stddev, seed=self.seed)
        return config
