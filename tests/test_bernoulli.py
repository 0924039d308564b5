"""kreg's mask primitive (kreg/layers/_bernoulli.py): quantization, keep
fractions against the closed form, independence across elements, rows,
draws and layers, and joint-mode masks as a function of (seed, layer, sample).
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from kreg.layers import Dropout
from kreg.layers import _bernoulli as b
from kreg.layers.base import SamplingContext
from kreg.layers.base import TensorSeed
from kreg.layers.base import sampling_scope


def _np(x):
    return ops.convert_to_numpy(x)


def _mask(shape, p, seed=0):
    return _np(b.keep_mask(shape, p, keras.random.SeedGenerator(seed)))


def _corr_z(a, c):
    """|correlation| of two equal-size 0/1 samples over its standard error.

    Under independence the sample correlation of n pairs has standard error
    1/sqrt(n) (asymptotically normal).
    """
    a = a.ravel().astype("float64")
    c = c.ravel().astype("float64")
    return abs(np.corrcoef(a, c)[0, 1]) * math.sqrt(a.size)


# -- quantization ---------------------------------------------------------------
@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.8, 0.95])
def test_sixteen_bit_threshold_and_its_error(p):
    bits, k = b.keep_threshold(p)
    assert bits == 16 and k == round(p * 2**16)
    assert b.quantized_keep_prob(p) == k / 2**16
    assert abs(b.quantized_keep_prob(p) - p) <= 2.0**-17
    # Within 2**-10 of the smaller of p and 1 - p (the documented bound).
    assert abs(b.quantized_keep_prob(p) - p) <= 2.0**-10 * min(p, 1 - p)


@pytest.mark.parametrize("p", [1e-3, 2.0**-7 - 1e-6, 1 - 1e-3, 1 - 1e-6])
def test_small_rates_and_keep_probabilities_use_whole_words(p):
    bits, k = b.keep_threshold(p)
    assert bits == 32 and k == round(p * 2**32)
    assert abs(b.quantized_keep_prob(p) - p) <= 2.0**-33
    assert b.mask_bits(2.0**-7) == 16 and b.mask_bits(1 - 2.0**-7) == 16


def test_keep_all_and_keep_none():
    assert _mask((3, 5), 1.0).all()
    assert not _mask((3, 5), 0.0).any()


# -- keep fractions (closed form: Bernoulli(p), 5 standard errors) -------------
@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.8, 0.95, 1e-3, 1 - 1e-3,
                               0.25, 0.75, 0.375, 1 / 16])
def test_keep_fraction_within_five_standard_errors(p):
    # 0.5, 0.25, 0.75, 0.375 and 1/16 are drawn packed (`b.packs`).
    n = 400_000
    mask = _mask((n // 100, 100), p, seed=5)
    assert mask.dtype == bool and mask.shape == (n // 100, 100)
    assert abs(mask.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (1, 1), (0, 4), (4, 0, 2)])
def test_odd_and_empty_shapes(shape):
    mask = _mask(shape, 0.5)
    assert mask.shape == shape
    if mask.size > 4:
        assert 0 < mask.sum() < mask.size


# -- independence -----------------------------------------------------------------
@pytest.mark.parametrize("p", [0.3, 0.5, 0.25])
def test_elements_sharing_a_word_and_neighbouring_rows_are_uncorrelated(p):
    # At 0.3 elements 2i and 2i+1 come from the two halves of one 32-bit
    # word; at 0.5 and 0.25 (packed) elements 32w..32w+31 share word w.
    mask = _mask((400, 1000), p, seed=1)
    assert _corr_z(mask[:, 0::2], mask[:, 1::2]) < 5
    assert _corr_z(mask[:-1], mask[1:]) < 5  # row r against row r + 1
    assert _corr_z(mask[:, :-1], mask[:, 1:]) < 5  # neighbours along a row
    flat = mask.ravel()
    assert _corr_z(flat[:-32], flat[32:]) < 5  # one lane of neighbouring words
    assert _corr_z(flat[:-16], flat[16:]) < 5  # two lanes of one word


def test_successive_draws_are_uncorrelated_and_advance_the_generator_once():
    gen = keras.random.SeedGenerator(4)
    first = _np(b.keep_mask((200, 500), 0.5, gen))
    second = _np(b.keep_mask((200, 500), 0.5, gen))
    assert _corr_z(first, second) < 5
    assert int(_np(gen.state)[1]) == 2  # one draw of the seed per mask
    again = _np(b.keep_mask((200, 500), 0.5, keras.random.SeedGenerator(4)))
    np.testing.assert_array_equal(first, again)  # a function of the seed


def test_layers_and_samples_in_a_sampling_scope_are_independent():
    d, t, n = 400, 50, 2
    first, second = Dropout(0.5, seed=1), Dropout(0.5, seed=1)
    x = np.ones((t * n, d), "float32")
    ctx = SamplingContext(seed=np.array([3, 0]), tiles=t, joint=True)
    with sampling_scope(ctx):
        a = _np(first(x)).reshape(t, n, d) != 0
        c = _np(second(x)).reshape(t, n, d) != 0
    assert np.array_equal(a[:, 0], a[:, 1])  # joint: shared by the inputs
    assert _corr_z(a[:, 0], c[:, 0]) < 5  # layer against layer
    assert _corr_z(a[:-1, 0], a[1:, 0]) < 5  # sample t against t + 1
    for masks in (a, c):
        frac = masks[:, 0].mean()
        assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / (t * d))


def test_joint_masks_depend_on_seed_layer_and_sample_only():
    layer = Dropout(0.5, seed=2)
    d, total = 64, 6

    def joint(n, tiles, offset, seed=(3, 0)):
        ctx = SamplingContext(seed=np.array(seed), tiles=tiles, joint=True,
                              sample_offset=offset, total_samples=total)
        with sampling_scope(ctx):
            out = _np(layer(np.ones((tiles * n, d), "float32")))
        return out.reshape(tiles, n, d)[:, 0]

    whole = joint(n=3, tiles=total, offset=0)
    # Same masks whatever the number of inputs and however samples are split.
    np.testing.assert_array_equal(joint(n=1, tiles=total, offset=0), whole)
    np.testing.assert_array_equal(joint(n=5, tiles=2, offset=4), whole[4:])
    np.testing.assert_array_equal(joint(n=2, tiles=1, offset=1), whole[1:2])
    assert not np.array_equal(joint(n=3, tiles=total, offset=0, seed=(4, 0)),
                              whole)


# -- seeds ------------------------------------------------------------------------
def test_run_time_seeds_and_bad_seeds():
    dtype = Dropout(0.5).seed_generator.state.dtype
    seed = TensorSeed(ops.convert_to_tensor(np.array([7, 3]), dtype=dtype))
    a = _np(b.keep_mask((100, 40), 0.5, seed))
    np.testing.assert_array_equal(a, _np(b.keep_mask((100, 40), 0.5, seed)))
    other = TensorSeed(ops.convert_to_tensor(np.array([8, 2]), dtype=dtype))
    assert _corr_z(a, _np(b.keep_mask((100, 40), 0.5, other))) < 5
    with pytest.raises(TypeError, match=r"keras.random.SeedGenerator"):
        b.keep_mask((3,), 0.5, 7)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="dynamic shapes are a TensorFlow graph matter")
def test_dynamic_shapes_in_a_traced_function():
    import tensorflow as tf

    gen = keras.random.SeedGenerator(1)

    for p in (0.3, 0.5):  # 16-bit slices, packed bits

        @tf.function(input_signature=[tf.TensorSpec([None, 7], tf.float32)])
        def masked(x, p=p):
            return b.keep_mask(tf.unstack(tf.shape(x)), p, gen)

        for rows in (0, 1, 3, 1000):
            mask = masked(tf.zeros((rows, 7))).numpy()
            assert mask.shape == (rows, 7)
        assert abs(mask.mean() - p) < 5 * math.sqrt(p * (1 - p) / mask.size)


# -- packed masks (keep_words, scale_by_words) ----------------------------------
def _bits(words):
    """Packed int32 words (..., n) -> 0/1 array (..., 32 n), bit j of word w at 32 w + j."""
    words = np.asarray(_np(words)).astype(np.int64) & 0xFFFFFFFF
    return ((words[..., None] >> np.arange(32)) & 1).reshape(
        words.shape[:-1] + (-1,))


def _packed(count, p, seed=0):
    return _bits(b.keep_words(count, p, keras.random.SeedGenerator(seed)))


@pytest.mark.parametrize("p,bits", [(0.5, 1), (0.25, 2), (0.75, 2), (0.3, 16),
                                    (0.8, 16), (1e-3, 32), (1 - 1e-3, 32),
                                    (1.0, 0), (0.0, 0)])
def test_random_bits_per_mask(p, bits):
    assert b.random_bits_per_mask(p) == bits


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.8, 0.95, 0.25, 1e-3,
                               1 - 1e-3])
def test_packed_keep_fraction_within_five_standard_errors(p):
    n_words = 12_500  # 400,000 mask elements
    bits = _packed(n_words, p, seed=5)
    assert bits.shape == (32 * n_words,)
    n = bits.size
    q = b.quantized_keep_prob(p)
    assert abs(bits.mean() - q) < 5 * math.sqrt(q * (1 - q) / n)


def test_packed_keep_all_and_keep_none():
    assert _packed(7, 1.0).all()
    assert not _packed(7, 0.0).any()
    assert _packed(0, 0.5).shape == (0,)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_packed_bits_are_uncorrelated(p):
    # 0.5 uses one random bit per element, 0.3 sixteen (bit-sliced).
    bits = _packed(12_500, p, seed=1).reshape(-1, 32)
    assert _corr_z(bits[:, :-1], bits[:, 1:]) < 5  # neighbours in a word
    assert _corr_z(bits[:-1], bits[1:]) < 5  # same bit of neighbouring words
    assert _corr_z(bits[:, :16], bits[:, 16:]) < 5  # the two halves


def test_packed_masks_are_a_function_of_the_seed():
    gen = keras.random.SeedGenerator(4)
    first = _bits(b.keep_words(1000, 0.5, gen))
    second = _bits(b.keep_words(1000, 0.5, gen))
    assert int(_np(gen.state)[1]) == 2  # one draw of the seed per call
    assert _corr_z(first, second) < 5
    again = _bits(b.keep_words(1000, 0.5, keras.random.SeedGenerator(4)))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("width", [64, 40, 1])
def test_scale_by_words_unpacks_bit_j_of_word_w_to_element_32w_plus_j(width):
    rng = np.random.RandomState(0)
    n = -(-width // 32)
    words = rng.randint(-(2**31), 2**31, size=(3, 5, n)).astype("int32")
    values = rng.randn(5, width).astype("float32")
    out = _np(b.scale_by_words(ops.convert_to_tensor(words),
                               ops.convert_to_tensor(values), 1.25))
    expected = values * 1.25 * _bits(words)[..., :width]
    assert out.shape == (3, 5, width)
    np.testing.assert_array_equal(out, expected.astype("float32"))


def _enumerating_words(p, n_words):
    """Random words that feed every m-bit value u to the bit-sliced comparison.

    Lane L (bit L % 32 of word L // 32) gets u = L mod 2**m, its most
    significant bit in the first word drawn. Returns (words, lanes, odd):
    exactly the lanes with u below odd = K / 2**(bits - m) are kept.
    """
    m = b.random_bits_per_mask(p)
    bits, k = b.keep_threshold(p)
    odd = k >> (bits - m)
    lanes = np.arange(32 * n_words, dtype=np.int64) % (2**m if m < 32 else 2**32)
    if m == 32:  # 2**32 values do not fit: sample lanes around K instead
        lanes = (k - 32 * n_words // 2 + np.arange(32 * n_words)) % 2**32
    planes = [((lanes >> (m - 1 - j)) & 1).reshape(n_words, 32) for j in range(m)]
    words = np.stack([(plane << np.arange(32)).sum(1) for plane in planes])
    return words.astype(np.uint32).view(np.int32).ravel(), lanes, odd


@pytest.mark.parametrize("p", [0.3, 0.5, 0.75, 0.8, 0.05, 1e-3])
def test_bit_sliced_comparison_is_exact(p, monkeypatch):
    n_words = 2048
    words, lanes, odd = _enumerating_words(p, n_words)
    monkeypatch.setattr(b, "random_words",
                        lambda count, seed: ops.convert_to_tensor(words))
    kept = _bits(b.keep_words(n_words, p, keras.random.SeedGenerator(0)))
    np.testing.assert_array_equal(kept, (lanes < odd).astype(kept.dtype))


# -- keep_mask from packed bits (b.packs) -------------------------------------------
@pytest.mark.parametrize("p,packs", [(0.5, True), (0.25, True), (0.75, True),
                                     (0.375, True), (1 / 16, True),
                                     (15 / 16, True), (2.0**-5, False),
                                     (0.3, False), (0.8, False), (0.1, False),
                                     (1e-3, False), (1.0, False), (0.0, False)])
def test_which_keep_probabilities_are_drawn_packed(p, packs):
    assert b.packs(p) == packs
    if packs:
        assert 1 <= b.random_bits_per_mask(p) <= b.PACKED_MAX_BITS


@pytest.mark.parametrize("p", [0.5, 0.25, 0.75, 0.375, 1 / 16])
@pytest.mark.parametrize("shape", [(256, 256), (255, 257)])
def test_packed_keep_mask_unpacks_lane_j_of_word_w_to_element_32w_plus_j(
        p, shape, monkeypatch):
    # Known words in: element i of the (row-major) mask is lane i of the
    # enumeration, kept exactly when u < odd. (255, 257) stops 1 element short
    # of the 2048 words.
    n_words = 2048
    words, lanes, odd = _enumerating_words(p, n_words)
    monkeypatch.setattr(b, "random_words",
                        lambda count, seed: ops.convert_to_tensor(words))
    gen = keras.random.SeedGenerator(0)
    mask = _np(b.keep_mask(shape, p, gen))
    assert mask.shape == shape and mask.dtype == bool
    n = math.prod(shape)
    np.testing.assert_array_equal(mask.ravel(), lanes[:n] < odd)
    # dropped(): the same lanes, whatever the backend's fused path.
    values = np.arange(1, n + 1, dtype="float32").reshape(shape)
    out = _np(_compiled(lambda v: b.dropped(v, p, gen))(ops.convert_to_tensor(values))).ravel()
    kept = lanes[:n] < odd
    assert (out[~kept] == 0).all()
    # Within 1 ulp of values / p (a compiler may divide by multiplying).
    np.testing.assert_array_max_ulp(out[kept], values.ravel()[kept] / np.float32(p),
                                    maxulp=1)


def _compiled(fn):
    """`fn` compiled as kreg compiles (tf.function: dropped's XLA path)."""
    from kreg._compile import compile_inference

    return compile_inference(fn, [])


def _special(shape, dtype):
    """Values of `shape` with inf, -inf, NaN and -0.0 among normal numbers."""
    values = np.random.RandomState(3).randn(*shape)
    special = np.array([np.inf, -np.inf, np.nan, -0.0])
    flat = values.reshape(-1)
    flat[: min(flat.size, 64)] = np.resize(special, min(flat.size, 64))
    return values.astype(dtype)


def _same_bits(a, c):
    a, c = np.asarray(a), np.asarray(c)
    assert a.shape == c.shape and a.dtype == c.dtype
    ints = f"int{8 * a.dtype.itemsize}"
    np.testing.assert_array_equal(a.view(ints), c.view(ints))


@pytest.mark.parametrize("p", [0.5, 0.25, 0.75, 0.3])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (0, 4), (128, 96), (4, 33, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("divide", [True, False])
def test_dropped_is_where_kept_of_keep_mask(p, shape, dtype, divide):
    # Same seed state, same mask. Eager: the same bits as the two calls, inf,
    # NaN and -0.0 included. Compiled (dropped's fused path on TensorFlow):
    # the same dropped elements (+0.0) and non-finite values, kept values
    # within 1 ulp (TensorFlow's graph optimizer may turn `x / p` into
    # `x * (1 / p)`, also in where_kept).
    values = ops.convert_to_tensor(_special(shape, dtype))
    seed_dtype = keras.random.SeedGenerator(0).state.dtype

    def seed():
        return TensorSeed(ops.convert_to_tensor(np.array([5, 2]), seed_dtype))

    expected = _np(b.where_kept(b.keep_mask(shape, p, seed()), values, p,
                                divide=divide))
    _same_bits(_np(b.dropped(values, p, seed(), divide=divide)), expected)
    out = _np(_compiled(lambda v: b.dropped(v, p, seed(), divide=divide))(values))
    x = _np(values)
    kept = _np(b.keep_mask(shape, p, seed()))
    assert kept.size < 30 or 0 < kept.mean() < 1
    finite = kept & np.isfinite(x)
    _same_bits(out[~finite], expected[~finite])  # zeros, inf, NaN
    np.testing.assert_array_max_ulp(out[finite], expected[finite], maxulp=1)
    assert (expected[~kept] == 0).all()
    if divide and p in (0.5, 0.25):  # 1 / p exact: the closed form
        _same_bits(expected[finite], x[finite] / x.dtype.type(p))


def test_dropped_draws_the_seed_once():
    gen = keras.random.SeedGenerator(4)
    b.dropped(ops.ones((40, 40)), 0.5, gen)
    assert int(_np(gen.state)[1]) == 1


def _gradient(fn, x):
    """d sum(fn(x) * w) / dx on the active backend, w = 1, 2, 3, ..."""
    weights = np.arange(1, x.size + 1, dtype="float32").reshape(x.shape)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function  # traced: dropped's fused path and its custom gradient
        def grad(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(fn(x) * weights)
            return tape.gradient(loss, x)

        return _np(grad(tf.constant(x)))
    if backend == "jax":
        import jax

        return _np(jax.jit(jax.grad(lambda v: (fn(v) * weights).sum()))(x))
    import torch

    v = torch.tensor(x, requires_grad=True)
    (fn(v) * torch.tensor(weights)).sum().backward()
    return v.grad.numpy()


@pytest.mark.parametrize("p", [0.5, 0.75, 0.3])
def test_dropped_gradient_is_the_mask_over_keep_prob(p):
    x = np.random.RandomState(0).randn(64, 48).astype("float32")
    dtype = keras.random.SeedGenerator(0).state.dtype

    def fn(v):
        seed = TensorSeed(ops.convert_to_tensor(np.array([9, 1]), dtype=dtype))
        return b.dropped(v, p, seed)

    keep = _np(fn(ops.convert_to_tensor(x))) != 0
    weights = np.arange(1, x.size + 1, dtype="float32").reshape(x.shape)
    grad = _gradient(fn, x)
    assert (grad[~keep] == 0).all()
    # Within 1 ulp of w / p (a compiler may divide by multiplying).
    np.testing.assert_array_max_ulp(grad[keep], weights[keep] / np.float32(p),
                                    maxulp=1)
