"""kreg.mc.augment: Keras's random augmentation layers sampled under kreg's
sampling scope, driven directly with a SamplingContext: the draws' law, their
independence, joint mode, reproducibility, no state change, errors."""

import math

import keras
import numpy as np
import pytest

from kreg._compile import compile_inference
from kreg.layers._sampling import SamplingContext
from kreg.layers._sampling import sampling_scope
from kreg.mc import augment
from kreg.mc.augment import augmenting


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _seed(base, counter=0):
    return np.array([base, counter], "int32")


def _sample(layer, x, seed, *, tiles, joint=False, offset=0, total=None):
    """Tile x (N rows) `tiles` times and call `layer` in a sampling scope,
    compiled as the predictor compiles its passes; returns (tiles, N, ...)."""
    layer.build(x.shape)

    def run(inputs, s, off):
        ctx = SamplingContext(s, tiles=tiles, joint=joint, sample_offset=off,
                              total_samples=total or tiles)
        tiled = keras.ops.tile(inputs, (tiles, 1, 1, 1))
        with augmenting([layer]), sampling_scope(ctx):
            return layer(tiled, training=False)

    out = _np(compile_inference(run, layer.variables)(x, seed, offset))
    return out.reshape((tiles, x.shape[0]) + out.shape[1:])


def _ramp(n=1, h=4, w=4, c=1):
    """Images with a distinct value per pixel (any flip or crop is visible)."""
    return np.arange(n * h * w * c, dtype="float32").reshape(n, h, w, c)


def _states(layer):
    return [_np(v).copy() for v in layer.variables]


ALL_LAYERS = [
    lambda: keras.layers.RandomFlip("horizontal", seed=1),
    lambda: keras.layers.RandomTranslation(0.25, 0.25, seed=1),
    lambda: keras.layers.RandomRotation(0.1, seed=1),
    lambda: keras.layers.RandomZoom(0.3, seed=1),
    lambda: keras.layers.RandomContrast(0.5, seed=1),
    lambda: keras.layers.RandomBrightness(0.3, value_range=(0, 64), seed=1),
    lambda: keras.layers.RandomCrop(3, 3, seed=1),
]
IDS = ["flip", "translation", "rotation", "zoom", "contrast", "brightness", "crop"]


@pytest.mark.parametrize("make", ALL_LAYERS, ids=IDS)
@pytest.mark.parametrize("joint", [False, True])
def test_samples_reproducible_and_no_variable_changes(make, joint):
    layer = make()
    x = _ramp(3)
    layer.build(x.shape)
    before = _states(layer)
    a = _sample(layer, x, _seed(5), tiles=8, joint=joint)
    b = _sample(layer, x, _seed(5), tiles=8, joint=joint)
    c = _sample(layer, x, _seed(6), tiles=8, joint=joint)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # The samples differ from one another (8 draws of a continuous or 9-valued
    # transformation; for the flip, 2**-7 that all 8 agree, fixed seed).
    assert len({s.tobytes() for s in a[:, 0]}) > 1
    for old, new in zip(before, _states(layer)):
        np.testing.assert_array_equal(old, new)
    # Outside the scope: Keras's inference behaviour, no instance `call` left.
    assert "call" not in layer.__dict__
    if not isinstance(layer, keras.layers.RandomCrop):
        np.testing.assert_array_equal(_np(layer(x, training=False)), x)


@pytest.mark.parametrize("joint", [False, True])
def test_flip_is_a_fair_coin_per_row_or_per_sample(joint):
    x = _ramp(4)
    tiles = 2000
    y = _sample(keras.layers.RandomFlip("horizontal"), x, _seed(11), tiles=tiles,
                joint=joint)
    flipped = (y == x[None, :, :, ::-1]).all(axis=(2, 3, 4))
    kept = (y == x[None]).all(axis=(2, 3, 4))
    assert (flipped ^ kept).all()  # every row is x or its mirror image
    if joint:  # one flip per sample, shared by its inputs
        assert (flipped == flipped[:, :1]).all()
        draws = flipped[:, 0]
    else:
        draws = flipped.ravel()
        # Rows are independent: inputs of one sample do not agree more often
        # than chance (agreement 1/2, SE 0.5 / sqrt(tiles)).
        agree = (flipped[:, 0] == flipped[:, 1]).mean()
        assert abs(agree - 0.5) < 5 * 0.5 / math.sqrt(tiles)
    assert abs(draws.mean() - 0.5) < 5 * 0.5 / math.sqrt(draws.size)


def test_joint_draw_depends_on_the_sample_index_only():
    """Sample t's transformation is the same whether the samples run in one
    pass or in chunks (a function of the seed, the layer and t)."""
    layer = keras.layers.RandomRotation(0.2, seed=1)
    x = _ramp(2, 6, 6)
    whole = _sample(layer, x, _seed(3), tiles=6, joint=True, total=6)
    parts = [_sample(layer, x, _seed(3), tiles=3, joint=True, offset=o, total=6)
             for o in (0, 3)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6, atol=1e-5)
    # Both inputs of a sample are rotated by one angle: a rotation of the
    # ramp x[1] = x[0] + 36 shifts every in-image pixel by 36 exactly.
    inside = (whole[:, 0] != 0) & (whole[:, 1] != 0)
    assert inside.mean() > 0.3
    diff = (whole[:, 1] - whole[:, 0])[inside]
    # Bilinear interpolation mixes neighbours: the shift holds where all four
    # neighbours lie inside the image; the median is exactly 36.
    assert np.median(diff) == pytest.approx(36.0)


def test_draws_of_one_layer_are_independent():
    """RandomZoom draws a height and a width factor from one seed object: the
    two must be independent (a fixed seed would make them equal)."""
    layer = keras.layers.RandomZoom(height_factor=0.3, width_factor=0.3)
    ctx = SamplingContext(_seed(4), tiles=1)
    n = 5000
    t = layer.get_random_transformation(
        np.zeros((n, 4, 4, 1), "float32"), training=True,
        seed=augment._LayerSeeds(ctx, layer))
    h, w = _np(t["height_zoom"]).ravel(), _np(t["width_zoom"]).ravel()
    assert np.abs(np.corrcoef(h, w)[0, 1]) < 5 / math.sqrt(n)
    # Uniform on [0.7, 1.3]: mean 1, variance 0.6**2 / 12.
    assert abs(h.mean() - 1.0) < 5 * math.sqrt(0.36 / 12 / n)


@pytest.mark.parametrize("joint", [False, True])
def test_crop_windows_are_uniform(joint):
    """RandomCrop(3, 3) of a 5x5 image: each of the 9 windows with p = 1/9,
    per row (Keras crops one window per batch; kreg one per row/sample)."""
    x = _ramp(2, 5, 5)
    tiles = 900
    y = _sample(keras.layers.RandomCrop(3, 3), x, _seed(8), tiles=tiles, joint=joint)
    assert y.shape == (tiles, 2, 3, 3, 1)
    # The top-left value of the window gives its position (values are 5r + c).
    corner = y[:, :, 0, 0, 0] - x[None, :, 0, 0, 0]
    rows, cols = corner // 5, corner % 5
    assert set(rows.ravel()) <= {0, 1, 2} and set(cols.ravel()) <= {0, 1, 2}
    for t, n in np.ndindex(tiles, 2):
        r, c = int(rows[t, n]), int(cols[t, n])
        np.testing.assert_array_equal(y[t, n], x[n, r:r + 3, c:c + 3])
    position = rows * 3 + cols
    if joint:
        assert (position == position[:, :1]).all()
        draws = position[:, 0]
    else:
        assert (position[:, 0] != position[:, 1]).any()
        draws = position.ravel()
    freq = np.bincount(draws.astype(int), minlength=9) / draws.size
    se = math.sqrt((1 / 9) * (8 / 9) / draws.size)
    assert np.abs(freq - 1 / 9).max() < 5 * se


def test_crop_of_a_small_input_follows_keras_training_path():
    """No room for a random window: Keras's deterministic resize, no draw."""
    layer = keras.layers.RandomCrop(4, 4)
    x = _ramp(1, 4, 3)
    y = _sample(layer, x, _seed(1), tiles=3)
    expected = _np(layer(x, training=True))
    for t in range(3):
        np.testing.assert_allclose(y[t], expected, rtol=1e-6)


def test_layers_not_listed_are_not_sampled():
    flip, other = keras.layers.RandomFlip(), keras.layers.RandomFlip()
    x = _ramp(1)
    tiles = 64
    for layer in (flip, other):
        layer.build(x.shape)
    ctx = SamplingContext(_seed(2), tiles=tiles)
    tiled = np.tile(x, (tiles, 1, 1, 1))
    with augmenting([flip]), sampling_scope(ctx):
        np.testing.assert_array_equal(_np(other(tiled, training=False)), tiled)
        assert not (_np(flip(tiled, training=False)) == tiled).all()
    # Without a sampling scope the switch does nothing.
    with augmenting([flip]):
        np.testing.assert_array_equal(_np(flip(tiled, training=False)), tiled)


def test_nested_switches_restore_the_layer():
    layer = keras.layers.RandomFlip()
    with augmenting([layer]):
        with augmenting([layer]):
            assert "call" in layer.__dict__
        assert "call" in layer.__dict__
    assert "call" not in layer.__dict__


def test_augmentation_layers_found_and_unsupported_ones_refused():
    inputs = keras.Input((8, 8, 1))
    flip = keras.layers.RandomFlip()
    inner = keras.Sequential([keras.layers.RandomZoom(0.1)])
    model = keras.Model(inputs, keras.layers.Flatten()(inner(flip(inputs))))
    assert [type(layer).__name__ for layer in augment.augmentation_layers(model)] \
        == ["RandomFlip", "RandomZoom"]
    shear = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.RandomShear(0.2)],
                             name="sheared")
    with pytest.raises(ValueError) as err:
        augment.augmentation_layers(shear)
    assert str(err.value).startswith(
        "Invalid value for argument `model` of MCPredictor: expected a model whose "
        "random augmentation layers kreg can sample with augment=True (RandomFlip, "
        "RandomTranslation, RandomRotation, RandomZoom, RandomContrast, "
        "RandomBrightness, RandomCrop). Received: model='sheared' with RandomShear")
    with pytest.raises(TypeError, match="kreg cannot sample layer"):
        with augmenting([keras.layers.Dense(2)]):
            pass
