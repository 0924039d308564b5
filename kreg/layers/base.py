"""Shared machinery of kreg's stochastic layers.

`StochasticLayer` holds what Dropout, DropConnect and the Monte Carlo predictor
share: validation of `rate`/`keep_prob`, the per-layer
`keras.random.SeedGenerator` (whose state is saved with the model, unlike
Keras's own layers), and the *sampling scope* through which the Monte Carlo
predictor asks kreg's layers, and only them, to draw masks at inference time
while every other layer (BatchNormalization included) stays in inference mode.

The scope is read when a function is traced, so it only affects functions
traced inside it: `model.predict`'s cached function is never changed by it.
Backend-neutral: only `keras.ops` and `keras.random`.
"""

import contextlib
import threading

import keras
import numpy as np
from keras import ops
from keras.src.backend import random_seed_dtype

from kreg import _validation as v
from kreg.layers import _bernoulli

SEED_STATE_KEY = "seed_generator_state"
MAX_SAMPLING_LAYERS = 127


class _DefaultFloat(float):
    """A float default that can be told apart from the same value passed."""

    def __repr__(self):
        return float.__repr__(self)


DEFAULT_RATE = _DefaultFloat(0.5)


class TensorSeed(keras.random.SeedGenerator):
    """A seed "generator" that always returns one given seed tensor.

    `keras.random.*` accepts only an int or a `SeedGenerator` as `seed` (on
    TensorFlow), so a seed computed at run time (from the Monte Carlo
    predictor's seed, a layer index, a replica id) is wrapped in this.
    """

    def __init__(self, seed_tensor):  # noqa: D107 - no super().__init__ on purpose
        self._seed_tensor = seed_tensor
        # Keras's torch dropout takes its (slow, unseeded) fast path when a
        # generator's `_initial_seed` is None; this one is always seeded.
        self._initial_seed = seed_tensor

    def next(self, ordered=True):
        if keras.backend.backend() == "torch":
            return _torch_mixed_seed(self._seed_tensor)
        return self._seed_tensor


def _mix32(x):
    """A 32-bit integer hash (the finalizer of MurmurHash3)."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _torch_mixed_seed(seed):
    """Keras's torch backend seeds a generator with `seed[0] + seed[1]`, so
    seeds (a, b + 1) and (a + 1, b) would give the same stream. Hash the pair
    into seed[0] instead (torch runs eagerly, the values are concrete)."""
    first, second = (int(s) for s in ops.convert_to_numpy(seed).ravel()[:2])
    mixed = _mix32(_mix32(first) ^ (second * 0x9E3779B1))
    mixed = (mixed ^ 0x80000000) - 0x80000000  # as int32 (torch's seed dtype)
    return ops.convert_to_tensor(np.array([mixed, 0]), dtype=seed.dtype)


# ----------------------------------------------------------------------------
# Sampling scope
# ----------------------------------------------------------------------------
class SamplingContext:
    """What kreg's stochastic layers need to know while Monte Carlo sampling.

    Attributes:
        seed: int tensor of shape (2,), `[base, counter]` with base < 2**24
            and counter < 2**28: the base seed of this forward pass. Each
            layer mixes in its own index (see `layer_index`).
        tiles: int, the number of Monte Carlo samples stacked along the batch
            axis, sample-major: rows `[t * N, (t + 1) * N)` belong to sample t.
        joint: bool. If True, every sample is one network applied to all
            inputs: its masks are shared by the inputs of the sample and are a
            function of `seed`, the layer and the sample index only.
        sample_offset: int (or scalar int tensor), the index of the first
            sample of this pass among `total_samples` (joint mode).
        total_samples: int, the total number of samples (joint mode).
        layer_index: dict mapping `id(layer)` to a small int used to give each
            layer its own random stream.
    """

    def __init__(self, seed, tiles=1, joint=False, sample_offset=0,
                 total_samples=None, layer_index=None):
        self.seed = seed
        self.tiles = int(tiles)
        self.joint = bool(joint)
        self.sample_offset = sample_offset
        self.total_samples = int(total_samples or tiles)
        self.layer_index = dict(layer_index or {})

    def seed_for(self, layer, salt=0):
        """The seed of `layer` in this pass (salt separates several draws)."""
        index = self.layer_index.get(id(layer))
        if index is None:
            index = len(self.layer_index)
            self.layer_index[id(layer)] = index
        if index >= MAX_SAMPLING_LAYERS or not 0 <= salt < 8:
            raise ValueError(
                f"kreg supports at most {MAX_SAMPLING_LAYERS} sampling layers "
                f"and 8 draws per layer; got layer index {index}, salt {salt}")
        # The backend's seed dtype (uint32 on JAX, whose keys reject int32).
        seed = ops.cast(ops.convert_to_tensor(self.seed), random_seed_dtype())
        # seed = [base, counter] with base < 2**24 and counter < 2**28: the
        # layer goes into the high bits of seed[0] and the salt into those of
        # seed[1], so no (layer, counter, salt) triples share a seed.
        offset = ops.convert_to_tensor(
            np.array([(1 + index) << 24, salt << 28]), dtype=seed.dtype
        )
        return TensorSeed(ops.add(seed, offset))


_STATE = threading.local()


def current_sampling():
    """The active `SamplingContext`, or None outside a sampling scope."""
    return getattr(_STATE, "context", None)


@contextlib.contextmanager
def sampling_scope(context):
    """Make kreg's stochastic layers sample (for Monte Carlo prediction).

    Layers called (or traced) inside draw masks as `context` says, whatever
    their `training` argument; all other layers are unaffected.
    """
    previous = current_sampling()
    _STATE.context = context
    try:
        yield context
    finally:
        _STATE.context = previous


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
    and implement their behaviour in `call` using `training_seed()` during
    training and `current_sampling()` for Monte Carlo sampling.
    """

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
        mask elements per 32-bit random word, `keep_prob` quantized to 2**-16
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
        from kreg import _replica  # local: tiny module, TF-only parts guarded

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
