"""Seeds of kreg's stochastic layers: the bit layout and the seed tensors.

One place says how a user's seed, a forward pass, a layer and a draw become
one random stream (`encode_seed`, `layer_seed`), and how such a computed seed
is handed to `keras.random` (`TensorSeed`). The Monte Carlo predictor, the
sampling scope and `kreg.export` all go through it. Backend-neutral.

The layout of a sampling seed `[seed0, seed1]` (two words of the backend's
seed dtype):

* ``seed0 = user mod 2**24 + (1 + layer) * 2**24`` with layer < 127;
* ``seed1 = (user >> 24) * 2**20 + counter + salt * 2**28`` with counter
  < 2**20 (the forward pass of a call) and salt < 8 (several draws of a
  layer in one pass).

Every field has its own bits, so distinct (user seed, pass, layer, salt)
tuples give distinct seeds.

A request seed of `kreg.export`'s `serve_mc_seeded` is an int in
[0, 2**REQUEST_SEED_BITS): its low SEED_BITS bits are the user's seed and its
high COUNTER_BITS bits the first pass counter (`split_request_seed`), so
request seed s is `MCPredictor`'s seed s mod 2**32 at pass counter s >> 32,
distinct request seeds give distinct streams, and s < 2**32 is
`MCPredictor(..., seed=s)`'s first pass.
"""

import keras
import numpy as np
from keras import ops

from kreg import _compat

#: A user's seed is an int in [0, 2**SEED_BITS).
SEED_BITS = 32
#: Forward passes per predict call: the pass counter is < 2**COUNTER_BITS.
COUNTER_BITS = 20
#: A request seed of `kreg.export` is an int in [0, 2**REQUEST_SEED_BITS).
REQUEST_SEED_BITS = SEED_BITS + COUNTER_BITS
#: Bits of seed0 that hold the low part of the user's seed.
BASE_BITS = 24
#: Bits of seed1 below the salt (the user's high bits and the counter).
HIGH_BITS = 28
#: Layers one sampling pass can tell apart (their index goes above BASE_BITS).
MAX_SAMPLING_LAYERS = 127
#: Draws one layer can make in one pass (their salt goes above HIGH_BITS).
MAX_SALTS = 8


def encode_seed(seed, counter=0):
    """The pass seed `(seed0, seed1)` of a user seed and a pass counter.

    Works on Python ints and on integer tensors (TensorFlow's in-graph seed of
    `kreg.export`), with the same numbers: the one place that says how a
    user's seed becomes a random stream (see the module docstring).

    Args:
        seed: int in [0, 2**32) (or an int64 tensor of such values).
        counter: int in [0, 2**20), default 0: the forward pass.

    Returns:
        A pair `(seed0, seed1)`, each < 2**24 and < 2**28.
    """
    base = 1 << BASE_BITS
    high = (seed // base) % (1 << (SEED_BITS - BASE_BITS))
    return seed % base, high * (1 << COUNTER_BITS) + counter


def split_request_seed(seed):
    """`(user seed, first pass counter)` of a request seed (see the module docstring).

    Works on Python ints and on int64 tensors (the serving graph's seed).

    >>> split_request_seed(7), split_request_seed(3 * 2**32 + 7)
    ((7, 0), (7, 3))
    """
    return seed % (1 << SEED_BITS), (seed // (1 << SEED_BITS)) % (1 << COUNTER_BITS)


def layer_seed(pass_seed, index, salt=0):
    """The seed of layer `index`'s draw `salt` in the pass `pass_seed`.

    Args:
        pass_seed: int tensor of shape (2,) from `encode_seed`.
        index: int in [0, 127), the layer's index in the sampling plan.
        salt: int in [0, 8), default 0.

    Returns:
        A `TensorSeed` (accepted by every `keras.random` function).
    """
    if not 0 <= index < MAX_SAMPLING_LAYERS or not 0 <= salt < MAX_SALTS:
        raise ValueError(
            f"kreg supports at most {MAX_SAMPLING_LAYERS} sampling layers "
            f"and {MAX_SALTS} draws per layer; got layer index {index}, salt {salt}")
    seed = ops.cast(ops.convert_to_tensor(pass_seed), seed_dtype())
    offset = ops.convert_to_tensor(
        np.array([(1 + index) << BASE_BITS, salt << HIGH_BITS]), dtype=seed.dtype)
    return TensorSeed(ops.add(seed, offset))


def seed_dtype():
    """The backend's seed dtype (uint32 on JAX, whose keys reject int32)."""
    return _compat.random_seed_dtype()


class TensorSeed(_compat.FixedSeed):
    """A seed "generator" that always returns one given seed tensor.

    `keras.random.*` accepts only an int or a `SeedGenerator` as `seed` (on
    TensorFlow), so a seed computed at run time (from the Monte Carlo
    predictor's seed, a layer index, a replica id) is wrapped in this. On
    PyTorch the pair is hashed into one seed (`torch_mixed_seed`).
    """

    def next(self, ordered=True):
        if keras.backend.backend() == "torch":
            return torch_mixed_seed(self._seed_tensor)
        return self._seed_tensor


def mix32(x):
    """A 32-bit integer hash (the finalizer of MurmurHash3)."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def torch_mixed_seed(seed):
    """Keras's torch backend seeds a generator with `seed[0] + seed[1]`, so
    seeds (a, b + 1) and (a + 1, b) would give the same stream. Hash the pair
    into seed[0] instead (torch runs eagerly, the values are concrete)."""
    first, second = (int(s) for s in ops.convert_to_numpy(seed).ravel()[:2])
    mixed = mix32(mix32(first) ^ (second * 0x9E3779B1))
    mixed = (mixed ^ 0x80000000) - 0x80000000  # as int32 (torch's seed dtype)
    return ops.convert_to_tensor(np.array([mixed, 0]), dtype=seed.dtype)
