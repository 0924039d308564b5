"""Bernoulli keep-masks from random bits: the one mask primitive of kreg.

Every random mask kreg draws (Dropout while training and Monte Carlo
sampling, DropConnect's kernel and bias masks, per batch or per example)
comes from `keep_mask`. A float32 uniform per mask element costs a 32-bit
random word plus a conversion; here each mask element is a 16-bit slice of a
random 32-bit word, compared with an integer threshold, so one word makes two
masks.

Quantization (the fact this module owns):

* When both `keep_prob` and `1 - keep_prob` are at least 2**-7 (0.0078),
  an element is kept when its 16-bit slice `u` (uniform on 0..65535) is below
  `K = round(keep_prob * 2**16)`: the keep probability is exactly
  `K / 2**16`, within 2**-17 (7.6e-6) of `keep_prob`, that is within
  2**-10 (0.1 %) of the smaller of `keep_prob` and the rate.
* Otherwise (rates or keep probabilities under 0.0078) a whole 32-bit word is
  compared with `round(keep_prob * 2**32)`: exact to 2**-33, finer than a
  float32 uniform's resolution.

`quantized_keep_prob` returns the probability actually used. Layers scale kept
values by the nominal `1 / keep_prob` (as Keras does), so an inverted-dropout
output's expectation is off by the same relative amount, at most 2**-10.

Random words come from each backend's counter-based (stateless) generator,
seeded by one draw of a `keras.random.SeedGenerator`: TensorFlow's
`stateless_uniform` full-range integers (Philox), JAX's `jax.random.bits`
(Threefry, Keras's key) and, on PyTorch, a `torch.Generator` seeded from the
hashed seed pair filling full-range int64 words. A mask is a pure function of
(seed, shape, keep_prob) on a given backend; the three backends draw
different streams. Other backends use `keras.random.randint`, with the same
quantization. Everything after the draw is `keras.ops`.
"""

import functools
import math

import keras
from keras import ops

#: Bits compared per mask element, and the cut-off of `min(p, 1 - p)` below
#: which 32 bits are used instead of 16.
MASK_BITS = 16
WIDE_BITS = 32
WIDE_BELOW = 2.0**-7


def mask_bits(keep_prob):
    """The number of random bits (16 or 32) behind each mask element."""
    p = float(keep_prob)
    return MASK_BITS if min(p, 1.0 - p) >= WIDE_BELOW else WIDE_BITS


def keep_threshold(keep_prob):
    """`(bits, K)`: an element is kept when its `bits`-bit slice is below K."""
    bits = mask_bits(keep_prob)
    return bits, int(round(float(keep_prob) * 2.0**bits))


def quantized_keep_prob(keep_prob):
    """The keep probability `keep_mask` actually draws with, `K / 2**bits`."""
    bits, k = keep_threshold(keep_prob)
    return min(k, 2**bits) / 2.0**bits


def _size(shape):
    """The number of elements of `shape` (an int, or a tensor if dynamic)."""
    if all(isinstance(d, int) for d in shape):
        return math.prod(shape)
    size = 1
    for d in shape:
        size = size * d
    return size


def _seed_tensor(seed):
    if not isinstance(seed, keras.random.SeedGenerator):
        raise TypeError(
            "kreg's masks take a keras.random.SeedGenerator (or "
            f"kreg.layers.base.TensorSeed) as seed. Received: seed={seed!r}")
    return seed.next()


def _tensorflow_words(count, seed):
    import tensorflow as tf

    seed = _seed_tensor(seed)
    if seed.dtype != tf.int32:  # as Keras's TF backend: stateless ops want int32
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return tf.random.stateless_uniform(
        tf.reshape(count, [1]), seed=seed, minval=None, maxval=None,
        dtype=tf.int32)


def _jax_words(count, seed):
    import jax

    return jax.random.bits(_seed_tensor(seed), (count,), "uint32")


def _torch_fill(words, seed):
    """Fill int64 `words` with 64 uniform random bits each, from `seed`."""
    import torch

    from kreg.layers._seeds import mix32  # the seed-pair hash, written once

    first, second = (int(s) for s in _seed_tensor(seed).reshape(-1)[:2].tolist())
    generator = torch.Generator(device=words.device)
    generator.manual_seed(mix32(mix32(first) ^ (second * 0x9E3779B1)))
    # from=-2**63, to=None: every int64 value, i.e. 64 uniform random bits.
    return words.random_(-(2**63), None, generator=generator)


@functools.cache
def _torch_filler():
    import torch

    # A torch.Generator cannot be traced by torch.compile (as in Keras).
    return torch._dynamo.disable(_torch_fill)


def _torch_words(count, seed):
    import torch

    # Keras's device; "meta" while Keras infers shapes symbolically, where no
    # generator exists and the seed is not drawn (as in Keras's own ops).
    device = ops.convert_to_tensor(0).device
    words = torch.empty(((count + 1) // 2,), dtype=torch.int64, device=device)
    if device.type != "meta":
        words = _torch_filler()(words, seed)
    return words.view(torch.int32)[:count]


_WORDS = {"tensorflow": _tensorflow_words, "jax": _jax_words,
          "torch": _torch_words}


def random_words(count, seed):
    """`count` uniform random 32-bit words (a flat integer tensor).

    Args:
        count: int (or scalar int tensor inside a traced function).
        seed: a `keras.random.SeedGenerator` (drawn once).

    Returns:
        A 1D tensor of `count` 32-bit integers whose bits are uniform.
    """
    words = _WORDS.get(keras.backend.backend())
    if words is None:  # another backend: Keras's integer draw (its range
        # stops at 2**31 - 2, a bias of 2**-32 per word)
        return keras.random.randint((count,), -(2**31), 2**31 - 1,
                                    seed=_Fixed(_seed_tensor(seed)),
                                    dtype="int32")
    return words(count, seed)


def _as_signed(words, bits):
    """Flat 32-bit `words` read as signed `bits`-bit integers (16 or 32)."""
    dtype = f"int{bits}"
    if keras.backend.backend() == "tensorflow":
        # keras.ops.view needs a static length on TensorFlow.
        import tensorflow as tf

        return tf.reshape(tf.bitcast(words, getattr(tf, dtype)), [-1])
    return ops.reshape(ops.view(words, dtype), (-1,))


class _Fixed(keras.random.SeedGenerator):
    """A seed generator that returns one already drawn seed tensor."""

    def __init__(self, seed_tensor):  # noqa: D107 - no super().__init__ on purpose
        self._seed_tensor = seed_tensor
        self._initial_seed = seed_tensor

    def next(self, ordered=True):
        return self._seed_tensor


def keep_mask(shape, keep_prob, seed):
    """A boolean Bernoulli(`keep_prob`) mask drawn from random bits.

    Two mask elements per 32-bit random word, with `keep_prob` quantized to
    2**-16 (2**-32 when `keep_prob` or `1 - keep_prob` is under 2**-7); see
    the module docstring. One draw of `seed`.

    Args:
        shape: tuple of ints (entries may be scalar tensors inside a traced
            function). The mask's shape.
        keep_prob: Python float in [0, 1]. The probability of True.
        seed: a `keras.random.SeedGenerator` (or `TensorSeed`).

    Returns:
        A bool tensor of `shape`.
    """
    shape = tuple(shape)
    bits, k = keep_threshold(keep_prob)
    if k >= 2**bits:
        return ops.ones(shape, "bool")
    n = _size(shape)
    per_word = WIDE_BITS // bits
    slices = _as_signed(random_words((n + per_word - 1) // per_word, seed), bits)
    if not isinstance(n, int) or n % per_word:
        slices = slices[:n]
    # A slice read as a signed integer is uniform on [-2**(bits-1), 2**(bits-1)),
    # so `slice < K - 2**(bits-1)` holds with probability K / 2**bits.
    threshold = ops.convert_to_tensor(k - 2 ** (bits - 1), slices.dtype)
    return ops.reshape(ops.less(slices, threshold), shape)
