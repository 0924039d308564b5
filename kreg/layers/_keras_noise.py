"""How Monte Carlo samples the noise of layers kreg did not write.

`sampler(layer)` returns the `Patch`es (`kreg.layers._sampling`) that make a
Keras layer draw its noise inside a sampling scope, with the scope's seeds
(never the layer's own `SeedGenerator`, which is not advanced) and, as
kreg's layers, per row in independent mode or per sample in joint mode:

- `Dropout`, `SpatialDropout1D/2D/3D`, `GaussianDropout`, `GaussianNoise`:
  drawn by the equivalent kreg layer (a "twin" with the same rate, noise
  shape or standard deviation, which shares the layer's random stream), so
  the masks are kreg's own. This covers these layers wherever they sit: in
  nested models, inside custom layers, and as `MultiHeadAttention`'s
  attention dropout (a `Dropout` sublayer) or a keras-hub block's.
- `AlphaDropout`: Keras's formula (dropped units set to SELU's saturation
  value, then the affine correction) with a kreg mask.
- Recurrent layers (`LSTM`, `GRU`, `SimpleRNN`, `ConvLSTM1D/2D/3D`, inside
  `Bidirectional` too) with `dropout` or `recurrent_dropout`: the layer runs
  its training-mode path (which, for these layers, differs only by the
  dropout), and its cells' masks come from the scope. Keras draws them once
  per call, before the time loop, so each mask is the same at every time
  step: Gal & Ghahramani's variational RNN dropout. They are fresh for every
  Monte Carlo sample and, in independent mode, for every sequence.

`is_sampled(layer)` tells which layers these are (with a rate above 0).
Backend-neutral: `keras.ops` and kreg's mask primitive.
"""

import keras
from keras import ops

from kreg.layers import _bernoulli
from kreg.layers._sampling import Patch
from kreg.layers._sampling import current_sampling
from kreg.layers._sampling import per_sample_draw
from kreg.layers.dropout import Dropout
from kreg.layers.gaussian_dropout import GaussianDropout
from kreg.layers.gaussian_dropout import GaussianNoise

#: SELU's saturation value, -scale * alpha (Keras's AlphaDropout).
_ALPHA_P = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717


def spatial_noise_shape(layer):
    """The noise shape of a Keras `SpatialDropout1D/2D/3D` (one mask per channel)."""
    rank = next(r for cls, r in zip(_SPATIAL, (3, 4, 5)) if isinstance(layer, cls))
    if rank == 3:
        return (None, 1, None)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return (None, None) + (1,) * (rank - 2)
    return (None,) + (1,) * (rank - 2) + (None,)


_SPATIAL = (keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
            keras.layers.SpatialDropout3D)


#: Keras's noise layers (and their subclasses) that `sampler` draws.
NOISE_LAYERS = (keras.layers.Dropout, keras.layers.GaussianDropout,
                keras.layers.GaussianNoise, keras.layers.AlphaDropout)


def kreg_twin(layer, *, gaussian_noise=True, subclasses=True):
    """The kreg layer equal to a Keras noise layer, or None (no such twin).

    Used by Monte Carlo sampling (the twin draws in the layer's place) and
    by `kreg.convert_dropout` (the twin replaces it). With `subclasses`,
    subclasses count as their Keras class: `class MCDropout(Dropout)` whose
    `call` forces `training=True` (a common MC dropout recipe) is sampled as
    the Dropout it is; without, only the Keras classes themselves have twins.
    `gaussian_noise=False`: `GaussianNoise` has none.
    """
    if not subclasses and type(layer).__module__.split(".")[0] != "keras":
        return None

    def kw():
        return {"seed": layer.seed, "name": layer.name, "dtype": layer.dtype_policy}

    if isinstance(layer, keras.layers.GaussianDropout):
        return GaussianDropout(layer.rate, **kw())
    if gaussian_noise and isinstance(layer, keras.layers.GaussianNoise):
        return GaussianNoise(layer.stddev, **kw())
    if isinstance(layer, _SPATIAL):
        return Dropout(layer.rate, noise_shape=spatial_noise_shape(layer), **kw())
    if isinstance(layer, keras.layers.Dropout):
        return Dropout(layer.rate, noise_shape=layer.noise_shape, **kw())
    return None


def _dropout_cells(cell):
    """The cells of an RNN cell (stacked ones included) that hold dropout."""
    if isinstance(cell, keras.layers.StackedRNNCells):
        return [c for sub in cell.cells for c in _dropout_cells(sub)]
    rates = (getattr(cell, "dropout", 0.0), getattr(cell, "recurrent_dropout", 0.0))
    if hasattr(cell, "get_dropout_mask") and any(0.0 < r < 1.0 for r in rates):
        return [cell]
    return []


def _stochastic_rnn(layer):
    return isinstance(layer, keras.layers.RNN) and bool(_dropout_cells(layer.cell))


def is_sampled(layer):
    """True for a Keras layer whose noise `sampler` draws (rate above 0)."""
    if _stochastic_rnn(layer):
        return True
    if isinstance(layer, keras.layers.AlphaDropout):
        return layer.rate > 0
    if isinstance(layer, keras.layers.GaussianNoise):
        return layer.stddev > 0
    if isinstance(layer, (keras.layers.Dropout, keras.layers.GaussianDropout)):
        return isinstance(layer.rate, (int, float)) and layer.rate > 0
    return False


class Sampler:
    """The patches of one Keras layer, and the objects with a random stream.

    Attributes:
        layer: the Keras layer.
        patches: its `Patch`es.
        streams: dict `object -> object`: every object that draws in the
            scope (`ctx.seed_for(obj)`), mapped to the object whose random
            stream it uses (a twin uses its layer's; an RNN cell its own).
    """

    def __init__(self, layer, patches, streams):
        self.layer = layer
        self.patches = patches
        self.streams = streams


def sampler(layer):
    """The `Sampler` of a Keras layer for which `is_sampled` is True."""
    if _stochastic_rnn(layer):
        return _rnn_sampler(layer)
    if isinstance(layer, keras.layers.AlphaDropout):
        def alpha_call(original, inputs, *args, **kwargs):
            return _alpha_dropout(layer, inputs, current_sampling())
        return Sampler(layer, [Patch(layer, "call", alpha_call)], {layer: layer})
    twin = kreg_twin(layer)

    def twin_call(original, inputs, *args, **kwargs):
        return twin.call(inputs)

    return Sampler(layer, [Patch(layer, "call", twin_call)], {layer: layer, twin: layer})


# ----------------------------------------------------------------------------
# Masks per row (independent) or per sample (joint)
# ----------------------------------------------------------------------------
def _keep(ctx, seed, shape, keep_prob):
    """A bool keep mask of `shape` (rows first): per row, or per sample (joint)."""
    def draw(draw_shape, draw_seed):
        return _bernoulli.keep_mask(draw_shape, keep_prob, draw_seed)

    if not ctx.joint:
        return draw(shape, seed)
    keep = per_sample_draw(ctx, seed, (1,) + tuple(shape[1:]), draw)
    per_sample = (ctx.tiles, shape[0] // ctx.tiles) + tuple(shape[1:])
    return ops.reshape(ops.broadcast_to(keep, per_sample), shape)


def _alpha_dropout(layer, inputs, ctx):
    """Keras's AlphaDropout in training mode, with a kreg mask."""
    shape = tuple(ops.shape(inputs))
    if layer.noise_shape is not None:
        noise = tuple(shape[i] if d is None else d for i, d in enumerate(layer.noise_shape))
        shape = (shape[0],) + noise[1:]
    kept = ops.cast(_keep(ctx, ctx.seed_for(layer), shape, 1.0 - layer.rate), inputs.dtype)
    a = ((1 - layer.rate) * (1 + layer.rate * _ALPHA_P ** 2)) ** -0.5
    b = -a * _ALPHA_P * layer.rate
    x = inputs * kept + _ALPHA_P * (1 - kept)
    return a * x + b


# ----------------------------------------------------------------------------
# Recurrent layers
# ----------------------------------------------------------------------------
def _rnn_sampler(layer):
    cells = _dropout_cells(layer.cell)
    masks = {}  # (id(cell), which) -> this call's masks (reused at every step)

    def rnn_call(original, *args, **kwargs):
        kwargs["training"] = True  # the training path differs only by dropout
        try:
            return original(*args, **kwargs)
        finally:
            masks.clear()

    def mask_method(cell, which):
        rate = cell.dropout if which == 0 else cell.recurrent_dropout

        def get_mask(original, step_input):
            if not 0.0 < rate < 1.0:
                return None
            key = (id(cell), which)
            if key not in masks:
                masks[key] = _cell_masks(cell, which, step_input, 1.0 - rate)
            return masks[key]

        return get_mask

    patches = [Patch(layer, "call", rnn_call)]
    for cell in cells:
        patches.append(Patch(cell, "get_dropout_mask", mask_method(cell, 0)))
        patches.append(Patch(cell, "get_recurrent_dropout_mask", mask_method(cell, 1)))
    streams = {layer: layer, **{cell: cell for cell in cells}}
    return Sampler(layer, patches, streams)


def _cell_masks(cell, which, step_input, keep_prob):
    """A cell's input (which=0) or recurrent (1) masks: 1/keep or 0, as Keras's."""
    ctx = current_sampling()
    count = getattr(cell, "dropout_mask_count", None)
    shape = tuple(ops.shape(step_input))
    ones = ops.ones_like(step_input)
    out = []
    for k in range(count or 1):
        keep = _keep(ctx, ctx.seed_for(cell, salt=4 * which + k), shape, keep_prob)
        out.append(_bernoulli.where_kept(keep, ones, keep_prob, divide=True))
    return out if count is not None else out[0]
