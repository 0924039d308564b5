"""Test-time augmentation: Keras's random image layers sampled by Monte Carlo.

Keras's random augmentation layers (`RandomFlip`, `RandomTranslation`,
`RandomRotation`, `RandomZoom`, `RandomContrast`, `RandomBrightness`,
`RandomCrop`) return their input unchanged at inference. With
`augment=True`, kreg's Monte Carlo predictor makes exactly those layers
sample, as they do in training, while the rest of the model (Dropout aside)
stays in inference mode: averaging the T samples marginalizes the prediction
over the augmentation numerically (test-time augmentation).

`augmenting(layers)` is the switch: while it is active, each listed layer,
when called inside a kreg sampling scope (`kreg.layers._sampling`),
draws its transformation through Keras's own protocol
(`get_random_transformation(..., seed=...)` then `transform_images(...,
training=True)`) with seeds derived from the scope's `SamplingContext`
(`ctx.seed_for(layer, salt)`), never from the layer's `SeedGenerator`: no
variable of the model changes, and a seeded predictor is reproducible.
Outside a sampling scope (`model.predict`, `model.fit`) the layers behave as
Keras defines them. The switch is kreg's one mechanism for layers it did not
write (`kreg.layers._sampling.patched`, used for Keras's noise layers too).

Draws per row or per sample:
- independent mode: every row of the tiled batch (sample t, input n) gets its
  own transformation, like every row's own dropout mask;
- joint mode: sample t applies one transformation to all inputs of the
  sample; it is row `sample_offset + t` of a draw for all `total_samples`,
  so it depends on the seed, the layer and t only (the rule of
  `kreg.layers._sampling.per_sample_draw`).

`RandomCrop` crops one window for the whole batch in Keras's training mode,
and its traced slicing does not compile under `jax.jit`; kreg crops it row by
row (or sample by sample in joint mode) with `take_along_axis` instead, when
the input is larger than the crop in both directions (Keras's condition for a
random crop). Otherwise Keras's training path (a deterministic resize) is used.

Backend-neutral: only `keras.ops` and the layers' own backend ops.
"""

import keras
from keras import ops

from kreg import _compat
from kreg.layers._keras_noise import Sampler
from kreg.layers._sampling import Patch
from kreg.layers._sampling import current_sampling
from kreg.layers._sampling import patched

#: The Keras layers `augment=True` samples.
AUGMENTATION_LAYERS = (
    keras.layers.RandomFlip,
    keras.layers.RandomTranslation,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
    keras.layers.RandomContrast,
    keras.layers.RandomBrightness,
    keras.layers.RandomCrop,
)
SUPPORTED_NAMES = ", ".join(c.__name__ for c in AUGMENTATION_LAYERS)
# Dict entries of a transformation that describe the batch (shape metadata),
# not one draw per image; refreshed for the tiled batch in joint mode.
_SHAPE_KEYS = ("input_shape", "batch_size")


def _is_random_preprocessing(layer):
    """A Keras random preprocessing layer (its protocol and its generator)."""
    return (hasattr(layer, "get_random_transformation")
            and isinstance(getattr(layer, "generator", None),
                           keras.random.SeedGenerator))


def augmentation_layers(model, owner="MCPredictor", layers=None):
    """The random augmentation layers of `model` that `augment=True` samples.

    Args:
        model: a Keras model or layer.
        owner: str, the public class named in the error message.
        layers: None, or the model's flattened layers when at hand.

    Returns:
        A list of layers (instances of `AUGMENTATION_LAYERS`), in the stable
        order of the model's layers.

    Raises:
        ValueError: the model has another Keras random preprocessing layer
            (`RandomShear`, `MixUp`, ...), which kreg does not sample: with
            `augment=True` it would silently stay the identity.
    """
    layers = _compat.flatten_layers(model) if layers is None else layers
    found = [layer for layer in layers if isinstance(layer, AUGMENTATION_LAYERS)]
    others = [layer for layer in layers
              if not isinstance(layer, AUGMENTATION_LAYERS)
              and _is_random_preprocessing(layer)]
    if others:
        names = ", ".join(f"{type(layer).__name__} {layer.name!r}" for layer in others)
        raise ValueError(
            f"Invalid value for argument `model` of {owner}: expected a model "
            f"whose random augmentation layers kreg can sample with "
            f"augment=True ({SUPPORTED_NAMES}). Received: model="
            f"{getattr(model, 'name', model)!r} with {names}")
    return found


# ----------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------
class _LayerSeeds(_compat.FixedSeed):
    """Successive seeds `ctx.seed_for(layer, salt)`, salt = 0, 1, 2, ...

    Keras's augmentation layers pass one `seed` object to each of their
    random draws (RandomZoom draws a height and a width factor from it); a
    generator that returned one fixed seed would make those draws equal.
    Each `next()` gives the next salt, so the draws are independent, and the
    same on every trace (a function of the context's seed and the layer).
    """

    def __init__(self, ctx, layer):
        super().__init__(0)  # never returned: `next` draws from the context
        self._ctx = ctx
        self._layer = layer
        self._salt = 0

    def next(self, ordered=True):
        seed = self._ctx.seed_for(self._layer, salt=self._salt)
        self._salt += 1
        return seed.next(ordered)


# ----------------------------------------------------------------------------
# Sampling one layer
# ----------------------------------------------------------------------------
def _row_samples(ctx, rows):
    """For each row of the tiled batch, the index of its sample among all."""
    per_sample = rows // ctx.tiles
    local = ops.floor_divide(ops.arange(rows, dtype="int32"), per_sample)
    return ops.add(local, ops.cast(ctx.sample_offset, "int32"))


def _per_sample_batch(ctx, images):
    """A stand-in batch of `total_samples` images (only its shape is read)."""
    shape = ops.shape(images)
    return ops.zeros((ctx.total_samples,) + tuple(shape[1:]), dtype=images.dtype)


def _gather_rows(transformation, rows, index, shape):
    """Joint mode: per-image draws of the stand-in batch, one row per input."""
    def pick(key, value):
        if key in _SHAPE_KEYS:
            return shape if key == "input_shape" else rows
        if ops.is_tensor(value) and len(value.shape) >= 1:
            return ops.take(value, index, axis=0)
        return value

    if not isinstance(transformation, dict):
        raise TypeError(f"kreg cannot sample a transformation of type "
                        f"{type(transformation).__name__} jointly")
    return {key: pick(key, value) for key, value in transformation.items()}


def _sample_keras(layer, images, ctx):
    """Keras's own random transformation, drawn with the context's seeds."""
    seeds = _LayerSeeds(ctx, layer)
    if not ctx.joint:
        transformation = layer.get_random_transformation(
            images, training=True, seed=seeds)
    else:
        shape = ops.shape(images)
        full = layer.get_random_transformation(
            _per_sample_batch(ctx, images), training=True, seed=seeds)
        transformation = _gather_rows(full, shape[0], _row_samples(ctx, shape[0]),
                                      shape)
    return layer.transform_images(images, transformation, training=True)


def _crop_axes(layer):
    return (1, 2) if layer.data_format == "channels_last" else (2, 3)


def _sample_crop(layer, images, ctx):
    """RandomCrop: one random window per row (joint: per sample)."""
    h_axis, w_axis = _crop_axes(layer)
    height, width = images.shape[h_axis], images.shape[w_axis]
    if height is None or width is None:
        raise ValueError(
            f"RandomCrop {layer.name!r} needs a fully defined height and width "
            f"to be sampled; received images of shape {tuple(images.shape)}")
    if not (height > layer.height and width > layer.width):
        # Keras's training path: a deterministic resize (nothing to draw).
        return layer.transform_images(
            images, layer.get_random_transformation(images, training=True,
                                                    seed=_LayerSeeds(ctx, layer)),
            training=True)
    rows = ops.shape(images)[0]
    draws = ctx.total_samples if ctx.joint else rows
    seeds = _LayerSeeds(ctx, layer)
    starts = []
    for size, target in ((height, layer.height), (width, layer.width)):
        u = keras.random.uniform((draws,), 0.0, float(size - target + 1), seed=seeds)
        start = ops.minimum(ops.cast(ops.floor(u), "int32"), size - target)
        if ctx.joint:
            start = ops.take(start, _row_samples(ctx, rows), axis=0)
        starts.append(start)
    out = ops.cast(images, layer.compute_dtype)
    for axis, start, target in ((h_axis, starts[0], layer.height),
                                (w_axis, starts[1], layer.width)):
        index = ops.add(start[:, None], ops.arange(target, dtype="int32")[None, :])
        shape = [-1 if d in (0, axis) else 1 for d in range(4)]
        shape[axis] = target
        index = ops.reshape(index, shape)
        out = ops.take_along_axis(
            out, ops.broadcast_to(index, _with(ops.shape(out), axis, target)),
            axis=axis)
    return out


def _with(shape, axis, size):
    shape = list(shape)
    shape[axis] = size
    return tuple(shape)


def sample_layer(layer, images, ctx):
    """`layer`'s training-mode output on `images`, drawn with `ctx`'s seeds.

    Args:
        layer: one of `AUGMENTATION_LAYERS`.
        images: a batch of images (rank 4), tiled sample-major as `ctx` says.
        ctx: the active `kreg.layers._sampling.SamplingContext`.

    Returns:
        The augmented batch. The layer's `SeedGenerator` is not used.
    """
    if isinstance(images, dict) or len(images.shape) != 4:
        raise ValueError(
            f"kreg samples {type(layer).__name__} {layer.name!r} on a batch of "
            f"images (a rank-4 tensor); received "
            f"{'a dict' if isinstance(images, dict) else tuple(images.shape)}")
    if isinstance(layer, keras.layers.RandomCrop):
        return _sample_crop(layer, images, ctx)
    return _sample_keras(layer, images, ctx)


# ----------------------------------------------------------------------------
# The switch: kreg's one mechanism (`kreg.layers._sampling.patched`)
# ----------------------------------------------------------------------------
def sampler(layer):
    """The `Sampler` (`kreg.layers._keras_noise`) of an augmentation layer."""
    if not isinstance(layer, AUGMENTATION_LAYERS):
        raise TypeError(f"kreg cannot sample layer {layer!r}; expected one "
                        f"of {SUPPORTED_NAMES}")

    def call(original, data, *args, **kwargs):
        return sample_layer(layer, data, current_sampling())

    return Sampler(layer, [Patch(layer, "call", call)], {layer: layer})


def augmenting(layers):
    """Make `layers` sample inside kreg's sampling scope while active.

    Enter it where the Monte Carlo function is traced (next to
    `sampling_scope`), so that every retrace sees it. Nested and concurrent
    uses are safe (`kreg.layers._sampling.patched`).

    Args:
        layers: an iterable of `AUGMENTATION_LAYERS` instances.

    Example:

    >>> import numpy as np
    >>> from kreg.layers._sampling import SamplingContext, sampling_scope
    >>> flip = keras.layers.RandomFlip("horizontal")
    >>> x = np.arange(4.0).reshape(1, 1, 4, 1)
    >>> ctx = SamplingContext(np.array([0, 0]), tiles=64)
    >>> with augmenting([flip]), sampling_scope(ctx):
    ...     y = flip(np.tile(x, (64, 1, 1, 1)), training=False)
    >>> rows = keras.ops.convert_to_numpy(y)[:, 0, :, 0].astype(int).tolist()
    >>> sorted({tuple(r) for r in rows})  # each row flipped or not
    [(0, 1, 2, 3), (3, 2, 1, 0)]
    >>> out = flip(x, training=False)  # outside: Keras's inference, the identity
    >>> keras.ops.convert_to_numpy(out)[0, 0, :, 0].astype(int).tolist()
    [0, 1, 2, 3]
    """
    return patched([patch for layer in layers for patch in sampler(layer).patches])
