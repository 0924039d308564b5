"""Bernoulli keep-masks from random bits: the one mask primitive of kreg.

Every random mask kreg draws comes from this module: `keep_mask` for Dropout
(training and Monte Carlo sampling; `dropped` where the mask has the values'
shape, as for DropConnect's batch kernel masks and bias masks), `keep_words`
(packed bits, below) for DropConnect's per-example kernel masks. A float32
uniform per mask element costs a 32-bit random word plus a conversion; here a
mask element is decided by 1 to 16 random bits compared with an integer
threshold.

Quantization (the fact this module owns):

* When both `keep_prob` and `1 - keep_prob` are at least 2**-7 (0.0078),
  an element is kept when its 16-bit slice `u` (uniform on 0..65535) is below
  `K = round(keep_prob * 2**16)`: the keep probability is exactly
  `K / 2**16`, within 2**-17 (7.6e-6) of `keep_prob`, that is within
  2**-10 (0.1 %) of the smaller of `keep_prob` and the rate.
* Otherwise (rates or keep probabilities under 0.0078) a whole 32-bit word is
  compared with `round(keep_prob * 2**32)`: exact to 2**-33, finer than a
  float32 uniform's resolution.

`quantized_keep_prob` returns the probability actually used, whichever of the
two ways below draws the bits. Layers scale kept values by the nominal
`1 / keep_prob` (as Keras does), so an inverted-dropout output's expectation
is off by the same relative amount, at most 2**-10.

Packed bits (`keep_words`) use the same threshold K, compared bit-sliced: 32
mask elements at a time, one bitwise step per random bit, most significant
bit first. Only the top `m = bits - z` bits of a slice decide `u < K`, where
`z` is the number of trailing zero bits of K (`random_bits_per_mask`), so the
keep probability is the same `K / 2**bits` for m random bits per element.

Cost per mask element, in random bits (a 32-bit word each 32):

* `keep_mask` when `packs(keep_prob)`, i.e. m <= 4 (`PACKED_MAX_BITS`):
  keep probabilities `j / 2**m` with j odd (0.5: 1 bit; 0.25, 0.75: 2;
  the eighths: 3; the sixteenths: 4). The mask is `keep_words`' bits
  unpacked, bit j of word w being element `32 w + j` of the flattened
  (row-major) mask.
* `keep_mask` otherwise: 16 (two 16-bit slices per word, compared as signed
  16-bit integers), or 32 under 2**-7.
* `keep_words` (DropConnect's per-example masks, whose `batch x in x out`
  elements dwarf the rest): m, at every keep probability (16 or 32 at most);
  `scale_by_words` unpacks them along the last axis (bit j of word w is
  element `32 w + j`).

`dropped(values, ...)` is `where_kept(keep_mask(shape(values)), values)`
with the unpacking fused into the product (one XLA loop on TensorFlow graphs).

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
import numpy as np
from keras import ops

from kreg import _compat
from kreg import _validation as v

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
        raise v.invalid_type(
            "kreg's masks", "seed",
            "a keras.random.SeedGenerator (or kreg.layers.base.TensorSeed)", seed)
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
    # A torch.Generator cannot be traced by torch.compile (as in Keras).
    return _compat.torch_compile_disable(_torch_fill)


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
                                    seed=_compat.FixedSeed(_seed_tensor(seed)),
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


def keep_mask(shape, keep_prob, seed):
    """A boolean Bernoulli(`keep_prob`) mask drawn from random bits.

    Two mask elements per 32-bit random word, with `keep_prob` quantized to
    2**-16 (2**-32 when `keep_prob` or `1 - keep_prob` is under 2**-7); at
    keep probabilities that `packs` (0.5, 0.25, 0.75, ...) the mask is
    `keep_words`' packed bits unpacked, 32 / `random_bits_per_mask` mask
    elements per word, with the same keep probability. See the module
    docstring. One draw of `seed`.

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
    if packs(keep_prob):
        words = keep_words(_word_count(n), keep_prob, seed)
        return ops.reshape(_unpacked(words, n), shape)
    per_word = WIDE_BITS // bits
    slices = _as_signed(random_words((n + per_word - 1) // per_word, seed), bits)
    if not isinstance(n, int) or n % per_word:
        slices = slices[:n]
    # A slice read as a signed integer is uniform on [-2**(bits-1), 2**(bits-1)),
    # so `slice < K - 2**(bits-1)` holds with probability K / 2**bits.
    threshold = ops.convert_to_tensor(k - 2 ** (bits - 1), slices.dtype)
    return ops.reshape(ops.less(slices, threshold), shape)


# -- packed masks -----------------------------------------------------------------
def random_bits_per_mask(keep_prob):
    """Random bits `keep_words` spends per mask element (1 to 32).

    The comparison `u < K` of a `bits`-bit slice `u` (see `keep_threshold`)
    only depends on the top `bits - z` bits of `u`, where `z` is the number
    of trailing zero bits of K: at `keep_prob = 0.5` one bit, at 0.25 or
    0.75 two, at most 16 (or 32) otherwise. The keep probability is the same
    `K / 2**bits` as `keep_mask`'s.
    """
    bits, k = keep_threshold(keep_prob)
    if k <= 0 or k >= 2**bits:
        return 0
    return bits - ((k & -k).bit_length() - 1)


def keep_words(count, keep_prob, seed):
    """`count` 32-bit words of packed Bernoulli(`keep_prob`) mask bits.

    Every bit is an independent mask element, 1 with probability
    `quantized_keep_prob(keep_prob)`, the same as `keep_mask`'s. The
    comparison of `keep_mask` is done bit-sliced, 32 mask elements at a time,
    one bitwise step per random bit, most significant first: a random word
    serves 32 mask elements for each bit `random_bits_per_mask` needs (one
    word per 32 elements at `keep_prob = 0.5`, 16 times fewer random words
    than `keep_mask`). One draw of `seed`. Use with `scale_by_words`.

    Args:
        count: int (or scalar int tensor inside a traced function).
        keep_prob: Python float in [0, 1]. The probability of a 1 bit.
        seed: a `keras.random.SeedGenerator` (or `TensorSeed`).

    Returns:
        A flat int32 tensor of `count` words.
    """
    bits, k = keep_threshold(keep_prob)
    if k <= 0 or k >= 2**bits:
        return ops.full((count,), 0 if k <= 0 else -1, "int32")
    m = random_bits_per_mask(keep_prob)
    odd = k >> (bits - m)  # K = odd * 2**(bits - m): compare m-bit slices
    words = ops.reshape(random_words(m * count, seed), (m, count))
    # u < odd from the most significant bit down: `less` holds the elements
    # already found below odd, `equal` those whose bits so far equal odd's
    # (odd's lowest bit is 1, so the last step only updates `less`).
    less = equal = None
    for j in range(m):
        word = words[j]
        if (odd >> (m - 1 - j)) & 1:  # a 0 bit of u where odd has a 1: below
            below = ops.bitwise_invert(word)
            if equal is not None:
                below = ops.bitwise_and(equal, below)
            less = below if less is None else ops.bitwise_or(less, below)
            if j < m - 1:
                equal = word if equal is None else ops.bitwise_and(equal, word)
        else:  # u's bit must be 0 to stay equal
            word = ops.bitwise_invert(word)
            equal = word if equal is None else ops.bitwise_and(equal, word)
    return less


#: The largest `random_bits_per_mask` at which `keep_mask` unpacks packed
#: words: up to 4 random bits per element, at most a quarter of the random
#: words of the 16-bit slices. Measured on a (12800, 512) mask (2-core CPU):
#: at 1 bit the packed mask costs 0.6x the slices' on TensorFlow, 0.05x on
#: JAX; at 4 bits about 1x and 0.25x; at 8 bits JAX's packed `dropped` is
#: 2x slower than the slices (XLA recomputes the bit-sliced comparison in
#: the unpacking loop).
PACKED_MAX_BITS = 4


def packs(keep_prob):
    """Whether `keep_mask` draws its mask as `keep_words`' packed bits.

    True when a mask element needs at most `PACKED_MAX_BITS` random bits
    (`random_bits_per_mask`): keep probabilities `j / 2**m`, `m <= 4`, with
    `j` odd: 0.5, 0.25, 0.75, the eighths and the sixteenths.
    """
    return 0 < random_bits_per_mask(keep_prob) <= PACKED_MAX_BITS


def _word_count(n):
    """Packed words holding `n` mask elements (an int, or a tensor)."""
    return (n + 31) // 32


def _unpacked(words, n):
    """Flat bool mask of `n` elements: bit j of word w is element `32 w + j`."""
    if keras.backend.backend() == "jax":
        # XLA fuses a shift by an iota into the consumer's loop; an and with
        # 32 one-bit constants there was measured 6x slower.
        shifts = ops.arange(32, dtype="int32")
        bits = ops.bitwise_and(ops.right_shift(words[:, None], shifts), 1)
    else:
        # Op by op: two passes over the mask (an and, a comparison), not
        # three (measured 1.4x faster on TensorFlow, 1.5x on PyTorch).
        lanes = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
        bits = ops.bitwise_and(words[:, None],
                               ops.convert_to_tensor(lanes.view(np.int32)))
    bits = ops.reshape(ops.not_equal(bits, 0), (-1,))
    if not isinstance(n, int) or n % 32:
        bits = bits[:n]
    return bits


def where_kept(keep, values, keep_prob, divide=True):
    """`values` (over `keep_prob` when `divide`) where `keep`, else 0.

    Dropout's product, written once: `keep` broadcasts against `values`;
    dropped elements are 0 whatever `values` holds (inf and NaN included).
    """
    if divide:
        values = values / ops.cast(keep_prob, values.dtype)
    return ops.where(keep, values, ops.zeros((), values.dtype))


def dropped(values, keep_prob, seed, divide=True):
    """`where_kept(keep_mask(shape(values), keep_prob, seed), values, ...)`.

    The same mask and the same values as the two calls, from one draw of
    `seed`; on TensorFlow inside a traced function, when `packs(keep_prob)`,
    the unpacking, the division and the product are one XLA loop (about
    4 times faster than separate TensorFlow ops on a (12800, 512) float32
    tensor). Eager TensorFlow runs the separate ops rather than compiling an
    XLA program for every new shape.

    Args:
        values: floating-point tensor; the mask has its shape.
        keep_prob: Python float in [0, 1]. The probability of keeping.
        seed: a `keras.random.SeedGenerator` (or `TensorSeed`).
        divide: bool, default True. Divide kept values by `keep_prob`
            (inverted dropout).

    Returns:
        A tensor of `values`' shape and dtype.
    """
    if not packs(keep_prob):
        keep = keep_mask(ops.shape(values), keep_prob, seed)
        return where_kept(keep, values, keep_prob, divide)
    shape = tuple(ops.shape(values))
    n = _size(shape)
    words = keep_words(_word_count(n), keep_prob, seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if (tf.inside_function()
                and keras.backend.standardize_dtype(values.dtype)
                in _SAME_WIDTH_INT):
            # x / 1 is x exactly: one compiled program for both scalings.
            divisor = tf.cast(keep_prob if divide else 1.0, values.dtype)
            return _tensorflow_dropped()(words, values, divisor)
    keep = ops.reshape(_unpacked(words, n), shape)
    return where_kept(keep, values, keep_prob, divide)


#: The integer dtype of a float dtype's width, for bitwise masking.
_SAME_WIDTH_INT = {"float16": "int16", "bfloat16": "int16",
                   "float32": "int32", "float64": "int64"}


def _same_width_view(x, dtype):
    """`x`'s bits read as `dtype` of the same width (any shape)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # keras.ops.view needs a static shape there

        return tf.bitcast(x, getattr(tf, dtype))
    return ops.view(x, dtype)


def _where_bits(words, values):
    """`values` where a packed mask bit is 1, and 0 where it is 0.

    kreg's one unpacking product: bit j of word w (of the last axis of
    `words`) is element `32 w + j` of the last axis of the result, cut to
    the size of `values`' last axis; `values` broadcasts against the mask.
    Each bit becomes an integer of all ones (kept) or zeros (dropped),
    and-ed with the bits of `values`: exactly `where(bit, values, 0)` for
    every value, inf and NaN included. XLA fuses it into one loop (its CPU
    select over a bool mask was measured 4x slower). Not differentiable:
    callers define the gradient.
    """
    shape = ops.shape(words)
    shifts = ops.arange(32, dtype="int32")
    bits = ops.bitwise_and(ops.right_shift(words[..., None], shifts), 1)
    bits = ops.reshape(bits, tuple(shape[:-1]) + (shape[-1] * 32,))
    size = values.shape[-1]
    bits = bits[..., : ops.shape(values)[-1] if size is None else size]
    dtype = _SAME_WIDTH_INT[keras.backend.standardize_dtype(values.dtype)]
    lanes = ops.cast(ops.negative(bits), dtype)  # 0 or -1 (all bits set)
    kept = ops.bitwise_and(_same_width_view(values, dtype), lanes)
    return _same_width_view(kept, keras.backend.standardize_dtype(values.dtype))


def _dropped_words(words, values, divisor):
    """`dropped`'s product: `values / divisor` where the flat bits are 1."""
    flat = ops.reshape(values / divisor, (-1,))
    return ops.reshape(_where_bits(words, flat), ops.shape(values))


@functools.cache
def _tensorflow_dropped():
    import tensorflow as tf

    # Always compiled: `dropped` comes here only inside a traced function.
    fused = _tensorflow_program(_dropped_words)

    @tf.custom_gradient
    def dropped_words(words, values, divisor):
        def grad(upstream):
            # d/dx where(keep, x / p, 0) = where(keep, 1 / p, 0).
            return None, fused(words, upstream, divisor), None

        return fused(words, values, divisor), grad

    return dropped_words


def _scale_by_words(words, values, scale):
    """`scale_by_words` in keras.ops (fused by the compiler on JAX)."""
    return _where_bits(words, values * ops.cast(scale, values.dtype))


@functools.cache
def _tensorflow_program(fn):
    import tensorflow as tf

    # No reduce_retracing: the programs read static shapes (a kernel's).
    return tf.function(fn, jit_compile=True)


def fused_on_tensorflow(fn):
    """`fn` compiled as one XLA program on TensorFlow; `fn` itself elsewhere.

    TensorFlow alone runs each op as a pass over its whole tensor and each
    loop iteration as separate kernels; XLA fuses the elementwise ops into
    one loop and compiles loops (`keras.ops.map`, `fori_loop`) into the
    program. On JAX the caller's `jit` already does this. Python arguments
    (floats, ints) are constants of the program (one program per value);
    tensor arguments are its inputs. Every new input shape compiles anew.
    Like `dropped`, only inside a traced function (`fit`, `predict`, a
    `tf.function`): eager TensorFlow runs `fn`'s ops one by one rather than
    compiling a program for every new shape (compiling the per-example
    DropConnect passes of a small layer took seconds per shape).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.inside_function():
            return _tensorflow_program(fn)
    return fn


def scale_by_words(words, values, scale):
    """`values` times `scale` where a packed mask bit is 1, and 0 where it is 0.

    Bit j of word w (of the last axis of `words`) is mask element `32 w + j`
    of the last axis of the result; the mask's last axis is cut to `values`'
    last dimension. The unpacking, the scaling and the product are one fused
    loop on TensorFlow (XLA) and JAX (inside a traced function).

    Args:
        words: int32 tensor (..., n), packed mask bits as `keep_words` draws
            them (reshaped).
        values: float tensor broadcastable to (..., d), `d <= 32 n`, with a
            static last dimension.
        scale: Python float. The factor of kept elements (`1 / keep_prob` for
            inverted scaling).

    Returns:
        A tensor (..., d) of `values`' dtype.
    """
    return fused_on_tensorflow(_scale_by_words)(words, values, float(scale))
