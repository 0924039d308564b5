"""FractionalMaxPooling2D: Graham's sequences, a NumPy reference, TensorFlow's
op as the shape (and, given its sequences, value) reference, argument errors."""

import math

import keras
import numpy as np
import pytest

import kreg
from kreg.layers import FractionalMaxPooling2D
from kreg.layers.fractional_pooling import output_size
from kreg.layers.fractional_pooling import pooling_sequence
from kreg.layers.fractional_pooling import pseudo_random_cells


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture
def sequence_fn(monkeypatch):
    """`pooling_sequence`, compiled once per (N_in, N_out) on JAX.

    The exhaustive checks below call it for ~170 sizes. Eager JAX compiles
    every primitive again for each new shape (about 80 s for these tests);
    one jitted function per size is what a model's compiled step runs anyway.
    The layer's `draw_sequences` looks the function up in its module, so it
    is patched there too. Other backends run it eagerly, as before.
    """
    if keras.backend.backend() != "jax":
        return pooling_sequence
    import jax

    import kreg.layers.fractional_pooling as module
    fn = jax.jit(pooling_sequence, static_argnums=(0, 1, 3))
    monkeypatch.setattr(module, "pooling_sequence", fn)
    return fn


def _check_sequence(seq, n_in, n_out):
    seq = np.asarray(seq)
    k = n_in // n_out
    steps = np.diff(seq, axis=-1)
    assert seq.shape[-1] == n_out + 1
    assert np.all(seq[..., 0] == 0) and np.all(seq[..., -1] == n_in)
    assert np.all((steps == k) | (steps == k + 1)), (n_in, n_out, seq)
    # Exactly n_in - k n_out increments of k + 1: they sum to n_in.
    assert np.all((steps == k + 1).sum(-1) == n_in - k * n_out)
    if 2 * n_out >= n_in:  # Graham's case (alpha_eff in (1, 2]): increments 1 or 2
        assert set(np.unique(steps).tolist()) <= {1, 2}


SIZES = [(n, r) for n in (2, 3, 4, 5, 7, 8, 11, 16, 25, 32)
         for r in (1.05, 1.26, 1.414, 1.5, 1.9)]


@pytest.mark.parametrize("pseudo_random", [True, False])
def test_every_drawn_sequence_satisfies_the_constraints(pseudo_random, sequence_fn):
    layer = FractionalMaxPooling2D(pseudo_random=pseudo_random, seed=0)
    for n, ratio in SIZES:
        out = output_size(n, ratio)
        assert out == math.floor(n / ratio) >= 1
        _check_sequence(_np(layer.draw_sequences(200, n, out)), n, out)


def test_every_pseudo_random_sequence_is_valid_exhaustively(sequence_fn):
    """All M cells of u (the sequence depends on u only through its cell)."""
    for n in range(2, 41):
        for ratio in (1.01, 1.414, 1.99):
            out = output_size(n, ratio)
            cells = pseudo_random_cells(n, out)
            assert cells >= 1
            u = np.concatenate([(np.arange(cells) + 0.5) / cells, [0.0, 1 - 1e-7]])
            seq = _np(sequence_fn(n, out, u[:, None].astype("float32"), True))
            _check_sequence(seq, n, out)
            # Graham: a_i = ceil(alpha (i + u)) - 1 for 0 < i < out, alpha = n / out.
            for cell, row in zip(range(cells), seq):
                uu = (cell + 0.5) / n
                want = [math.ceil(n / out * (i + uu)) - 1 for i in range(1, out)]
                assert row[1:-1].tolist() == want


def test_random_sequences_place_the_long_steps_uniformly():
    # n = 11, out = 7: four increments of 2 among seven, in a random order.
    n, out, draws = 11, 7, 20_000
    u = keras.random.uniform((draws, out), seed=3)
    steps = np.diff(_np(pooling_sequence(n, out, u, pseudo_random=False)), axis=-1)
    p = 4 / 7
    freq = (steps == 2).mean(axis=0)
    assert np.all(np.abs(freq - p) < 5 * math.sqrt(p * (1 - p) / draws)), freq


def _reference(x, rows, cols, overlapping):
    """NumPy fractional max-pooling of channels-last x over given boundaries."""
    n_r, n_c = x.shape[1:3]
    out = np.empty((x.shape[0], len(rows) - 1, len(cols) - 1, x.shape[3]), x.dtype)
    for i in range(len(rows) - 1):
        r1 = min(rows[i + 1] + (0 if overlapping else -1), n_r - 1)
        for j in range(len(cols) - 1):
            c1 = min(cols[j + 1] + (0 if overlapping else -1), n_c - 1)
            out[:, i, j] = x[:, rows[i]:r1 + 1, cols[j]:c1 + 1].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("overlapping", [True, False])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_output_equals_numpy_reference_for_a_given_sequence(overlapping, data_format):
    x = np.random.default_rng(0).normal(size=(3, 9, 7, 2)).astype("float32")
    rows, cols = [0, 2, 3, 5, 7, 9], [0, 1, 3, 5, 7]
    layer = FractionalMaxPooling2D(1.5, overlapping=overlapping,
                                   data_format=data_format)
    want = _reference(x, rows, cols, overlapping)
    xin = x if data_format == "channels_last" else np.transpose(x, (0, 3, 1, 2))
    got = _np(layer.pool_with_sequences(xin, np.array(rows), np.array(cols)))
    if data_format == "channels_first":
        got = np.transpose(got, (0, 2, 3, 1))
    np.testing.assert_array_equal(got, want)
    # The layer's own output is this reference for its inference sequences.
    r, c = (_np(s)[0] for s in layer.inference_sequences(xin.shape))
    np.testing.assert_array_equal(_np(layer(xin)), _np(layer.pool_with_sequences(
        xin, r, c)))
    want = _reference(x, r.tolist(), c.tolist(), overlapping)
    if data_format == "channels_first":
        want = np.transpose(want, (0, 3, 1, 2))
    np.testing.assert_array_equal(_np(layer(xin)), want)


def test_groups_of_a_batch_pooled_with_their_own_sequences():
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 1)).astype("float32")
    layer = FractionalMaxPooling2D(1.5, overlapping=False)
    rows = np.array([[0, 1, 3, 4, 6], [0, 2, 3, 5, 6]])
    cols = np.array([[0, 2, 3, 5, 6], [0, 1, 2, 4, 6]])
    got = _np(layer.pool_with_sequences(x, rows, cols))
    for d in range(2):
        np.testing.assert_array_equal(
            got[2 * d:2 * d + 2], _reference(x[2 * d:2 * d + 2], rows[d], cols[d], False))


def test_training_draws_new_regions_inference_is_fixed():
    x = np.arange(2 * 16 * 16, dtype="float32").reshape(1, 16, 16, 2)
    layer = FractionalMaxPooling2D(1.414, seed=5)
    outs = [_np(layer(x, training=True)) for _ in range(8)]
    assert len({o.tobytes() for o in outs}) > 1
    infer = _np(layer(x))
    np.testing.assert_array_equal(infer, _np(layer(x)))
    np.testing.assert_array_equal(infer, _np(FractionalMaxPooling2D(1.414, seed=5)(x)))
    assert infer.shape == (1, 11, 11, 2)


@pytest.mark.tf_only(reason="tf.nn.fractional_max_pool is the reference")
@pytest.mark.parametrize("pseudo_random", [True, False])
@pytest.mark.parametrize("overlapping", [True, False])
def test_matches_tensorflow_fractional_max_pool(pseudo_random, overlapping):
    import tensorflow as tf

    x = np.random.default_rng(2).normal(size=(2, 13, 9, 3)).astype("float32")
    for ratio in (1.2, 1.414, 1.9):
        layer = FractionalMaxPooling2D((ratio, 1.5), pseudo_random, overlapping, seed=1)
        ref, rows, cols = tf.nn.fractional_max_pool(
            x, [1.0, ratio, 1.5, 1.0], pseudo_random=pseudo_random,
            overlapping=overlapping, seed=4)
        assert tuple(layer(x).shape) == tuple(ref.shape)
        assert layer.compute_output_shape((None, 13, 9, 3)) == (None,) + tuple(ref.shape[1:])
        _check_sequence(rows.numpy(), 13, ref.shape[1])
        got = layer.pool_with_sequences(x, rows.numpy().astype("int32"),
                                        cols.numpy().astype("int32"))
        np.testing.assert_array_equal(_np(got), ref.numpy())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"pooling_ratio": 2.0}, ValueError, r"`pooling_ratio` of FractionalMaxPooling2D: "
         r"expected a float in \(1, 2\) or a tuple of 2 such floats. Received: "
         r"pooling_ratio=2.0"),
        ({"pooling_ratio": 1}, ValueError, r"Received: pooling_ratio=1"),
        ({"pooling_ratio": (1.5, 0.5)}, ValueError, r"Received: pooling_ratio=\(1.5, 0.5\)"),
        ({"pooling_ratio": (1.5,)}, TypeError, r"`pooling_ratio` of FractionalMaxPooling2D"),
        ({"pooling_ratio": "1.5"}, TypeError, r"`pooling_ratio` of FractionalMaxPooling2D"),
        ({"pooling_ratio": float("nan")}, ValueError, r"Received: pooling_ratio=nan"),
        ({"pseudo_random": 1}, TypeError, r"`pseudo_random` of FractionalMaxPooling2D: "
         r"expected a bool"),
        ({"overlapping": "yes"}, TypeError, r"`overlapping` of FractionalMaxPooling2D"),
        ({"data_format": "last"}, ValueError, r"`data_format` of FractionalMaxPooling2D"),
        ({"seed": 2.5}, TypeError, r"`seed` of FractionalMaxPooling2D"),
    ],
)
def test_bad_arguments_have_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        FractionalMaxPooling2D(**kwargs)


def test_inputs_below_two_or_dynamic_are_clear_errors():
    layer = FractionalMaxPooling2D()
    with pytest.raises(ValueError, match=r"`inputs` of FractionalMaxPooling2D: expected "
                       r"a 4D input with static spatial dimensions, each >= 2"):
        layer(np.zeros((1, 1, 5, 1), "float32"))
    with pytest.raises(ValueError, match=r"`inputs` of FractionalMaxPooling2D"):
        keras.Sequential([keras.Input((None, 8, 1)), FractionalMaxPooling2D()])
    assert tuple(layer(np.zeros((1, 2, 5, 1), "float32")).shape) == (1, 1, 3, 1)


def test_defaults():
    layer = FractionalMaxPooling2D()
    assert (layer.pooling_ratio, layer.pseudo_random, layer.overlapping) == (1.414, True, True)
    assert FractionalMaxPooling2D([1.2, 1.7]).pooling_ratio == (1.2, 1.7)
    assert layer.is_stochastic and layer.rate is None
    assert kreg.layers.FractionalMaxPooling2D is FractionalMaxPooling2D
