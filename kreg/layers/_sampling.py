"""The sampling scope: how the Monte Carlo predictor makes kreg's layers sample.

Inside `sampling_scope(context)`, kreg's stochastic layers (and only they)
draw their noise as the `SamplingContext` says, whatever their `training`
argument, while every other layer (BatchNormalization included) stays in
inference mode. The scope is read when a function is traced, so it only
affects functions traced inside it: `model.predict`'s cached function is
never changed by it. Used by `kreg.MCPredictor` and `kreg.export`; the seed
layout lives in `kreg.layers._seeds`. Backend-neutral.
"""

import contextlib
import threading

from keras import ops

from kreg.layers import _seeds


class SamplingContext:
    """What kreg's stochastic layers need to know while Monte Carlo sampling.

    Attributes:
        seed: int tensor of shape (2,), the pass seed `[seed0, seed1]` from
            `kreg.layers._seeds.encode_seed`. Each layer mixes in its own
            index (see `layer_index`).
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
        return _seeds.layer_seed(self.seed, index, salt)


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


def per_sample_draw(ctx, seed, shape, draw):
    """One draw of `shape` for each Monte Carlo sample of a tiled pass.

    Returns a tensor of shape `(ctx.tiles,) + shape`. In joint mode, sample
    t's draw is row `sample_offset + t` of a draw for all `total_samples`, so it
    depends on the seed, the layer and the sample index only (not on chunking).

    Args:
        ctx: the active `SamplingContext`.
        seed: the layer's seed in this pass (`ctx.seed_for(layer)`).
        shape: tuple, the shape of one sample's draw.
        draw: `draw(shape, seed)` returning a tensor of that shape.
    """
    shape = tuple(shape)
    if not ctx.joint:
        return draw((ctx.tiles,) + shape, seed)
    full = draw((ctx.total_samples,) + shape, seed)
    return ops.slice(full, (ctx.sample_offset,) + (0,) * len(shape),
                     (ctx.tiles,) + shape)
