"""The base class of kreg's stochastic layers.

`StochasticLayer` holds what Dropout, DropConnect, the noise layers and the
Monte Carlo predictor share: validation of `rate`/`keep_prob`, the per-layer
`keras.random.SeedGenerator` (whose state is saved with the model, unlike
Keras's own layers), kreg's one Bernoulli mask primitive, and a `call` that
dispatches to the three things a stochastic layer does: `_sample` (inside a
sampling scope: Monte Carlo prediction), `_train` (training) and `_infer`
(the analytic marginalization at inference). A new layer writes only those.

The rest of the plumbing has its own modules: the sampling scope
(`kreg.layers._sampling`), the seed layout and seed tensors
(`kreg.layers._seeds`), replica-distinct training seeds under
`tf.distribute` (`kreg.layers._replica`). Backend-neutral: only `keras.ops`
and `keras.random`.
"""

import keras
import numpy as np
from keras import ops

from kreg import _validation as v
from kreg.layers import _bernoulli
from kreg.layers import _replica
from kreg.layers._sampling import SamplingContext  # noqa: F401 - re-exported
from kreg.layers._sampling import current_sampling
from kreg.layers._sampling import sampling_scope  # noqa: F401 - re-exported
from kreg.layers._seeds import MAX_SAMPLING_LAYERS  # noqa: F401 - re-exported
from kreg.layers._seeds import TensorSeed  # noqa: F401 - re-exported

SEED_STATE_KEY = "seed_generator_state"


class _DefaultFloat(float):
    """A float default that can be told apart from the same value passed."""

    def __repr__(self):
        return float.__repr__(self)


DEFAULT_RATE = _DefaultFloat(0.5)


# ----------------------------------------------------------------------------
# Base layer
# ----------------------------------------------------------------------------
def resolve_rate(owner, rate, keep_prob):
    """Validate `rate`/`keep_prob` (at most one given) and return the rate."""
    if keep_prob is not None:
        if rate is not DEFAULT_RATE:
            raise ValueError(
                v.error_message(
                    owner, "keep_prob",
                    "either `rate` or `keep_prob`, not both",
                    keep_prob,
                ) + f" together with rate={float(rate)!r}"
            )
        keep = v.check_float(
            owner, "keep_prob", keep_prob, low=0.0, high=1.0, low_open=True,
            expected="a float in (0, 1] (a keep probability of 0 drops "
            "every unit, so the 1/keep_prob scaling is undefined)",
        )
        return 1.0 - keep
    return v.check_float(
        owner, "rate", rate, low=0.0, high=1.0, high_open=True,
        expected="a float in [0, 1) (rate=1 drops every unit, so the "
        "1/keep_prob scaling is undefined)",
    )


class StochasticLayer(keras.layers.Layer):
    """Base class of kreg's stochastic layers (not used directly).

    Subclasses call `_init_stochastic(rate, keep_prob, seed)` from `__init__`
    and write three methods, which `call` dispatches to:

    * `_sample(inputs, ctx)`: inside a sampling scope (Monte Carlo
      prediction, `kreg.export`), whatever `training` says: one draw per
      tiled sample, seeded by `ctx.seed_for(self)` (see `SamplingContext`);
    * `_train(inputs)`: `training=True`, seeded by `training_seed()`;
    * `_infer(inputs)`: otherwise, and whenever the layer does not draw
      (`is_stochastic` False, e.g. rate 0): the analytic marginalization.

    `_check_call(inputs, training, ctx)` may validate the arguments first.
    """

    def call(self, inputs, training=None):
        ctx = current_sampling()
        self._check_call(inputs, training, ctx)
        if not self.is_stochastic:
            return self._infer(inputs)
        if ctx is not None:
            return self._sample(inputs, ctx)
        if training:
            return self._train(inputs)
        return self._infer(inputs)

    def _check_call(self, inputs, training, ctx):
        """Validate `call`'s arguments (default: nothing to check)."""

    def _sample(self, inputs, ctx):
        raise NotImplementedError(f"{type(self).__name__} must implement _sample")

    def _train(self, inputs):
        raise NotImplementedError(f"{type(self).__name__} must implement _train")

    def _infer(self, inputs):
        raise NotImplementedError(f"{type(self).__name__} must implement _infer")

    def _init_stochastic(self, rate, keep_prob, seed):
        owner = type(self).__name__
        self.rate = resolve_rate(owner, rate, keep_prob)
        self.seed = v.check_seed(owner, seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    @property
    def keep_prob(self):
        """The keep probability p = 1 - rate."""
        return 1.0 - self.rate

    @property
    def is_stochastic(self):
        """True when the layer draws masks (rate > 0)."""
        return self.rate > 0.0

    def keep_mask(self, shape, seed):
        """A bool mask of `shape`, True with probability `keep_prob`.

        kreg's one mask primitive (`kreg.layers._bernoulli.keep_mask`): two
        mask elements per 32-bit random word (32 / m at keep probabilities
        j / 2**m, m <= 4, such as 0.5), `keep_prob` quantized to 2**-16
        (2**-32 for keep probabilities or rates under 2**-7). Every random
        mask of a stochastic layer is drawn through this.

        Args:
            shape: tuple of ints (or scalar tensors when traced).
            seed: a `keras.random.SeedGenerator` or `TensorSeed`, drawn once.
        """
        return _bernoulli.keep_mask(shape, self.keep_prob, seed)

    def training_seed(self):
        """The seed for a training-time draw (advances the generator).

        Under `tf.distribute` with several replicas the replica id is folded
        in, so that replicas draw independent masks.
        """
        return _replica.replica_seed(self.seed_generator)

    # -- RNG state is part of the saved model ---------------------------------
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[SEED_STATE_KEY] = self.seed_generator.state.numpy() \
            if hasattr(self.seed_generator.state, "numpy") \
            else ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        keys = list(store.keys())
        rest = {k: store[k] for k in keys if k != SEED_STATE_KEY}
        if SEED_STATE_KEY in keys:
            state = np.asarray(store[SEED_STATE_KEY])
            self.seed_generator.state.assign(
                state.astype(self.seed_generator.state.dtype)
            )
        super().load_own_variables(rest)
