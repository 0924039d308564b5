"""The sampling scope: how the Monte Carlo predictor makes kreg's layers sample.

Inside `sampling_scope(context)`, kreg's stochastic layers (and only they)
draw their noise as the `SamplingContext` says, whatever their `training`
argument, while every other layer (BatchNormalization included) stays in
inference mode. The scope is read when a function is traced, so it only
affects functions traced inside it: `model.predict`'s cached function is
never changed by it. Used by `kreg.MCPredictor` and `kreg.export`; the seed
layout lives in `kreg.layers._seeds`. Backend-neutral.

How layers kreg did not write sample (the one mechanism, for contributors):
kreg's own layers read `current_sampling()` in their `call`. Every other
layer that Monte Carlo samples (Keras's Dropout family, the dropout of
Keras's recurrent cells and of MultiHeadAttention, wherever they sit, and
with `augment=True` Keras's augmentation layers) is given `Patch`es: while
`patched(patches)` is active on a thread, `obj.name(...)` runs
`method(original, ...)` instead of `original(...)`, but only inside a
sampling scope; anywhere else (`model.predict`, `fit`, another thread) the
object behaves exactly as before. A patch is an instance attribute set while
a Monte Carlo function is traced and removed afterwards: no variable, no
layer attribute and no `SeedGenerator` of the model changes. The patches of
a layer are made by `kreg.layers._keras_noise.sampler` (noise layers, RNNs)
and `kreg.mc.augment.sampler` (augmentation); `kreg.mc.plan.SamplingPlan`
collects them, and `sample_outputs` enters `patched` next to
`sampling_scope`. To support a new kind of layer, write its patches there.
"""

import contextlib
import threading
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

from keras import ops

from kreg import _compat
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


class Patch(NamedTuple):
    """`obj.name(...)` runs `method(original, ...)` inside a sampling scope.

    Attributes:
        obj: the object (a layer, an RNN cell).
        name: the name of the method replaced (`"call"`, ...).
        method: `method(original, *args, **kwargs)`, where `original` is the
            object's own bound method; it reads `current_sampling()`.
    """

    obj: Any
    name: str
    method: Callable


_LOCK = threading.Lock()
_INSTALLED = {}  # (id(obj), name) -> [users, what the instance held before]
_PATCHES = threading.local()


def _active():
    return getattr(_PATCHES, "active", {})


def _dispatcher(key, original):
    def dispatch(*args, **kwargs):
        method = _active().get(key)
        if method is None or current_sampling() is None:
            return original(*args, **kwargs)
        return method(original, *args, **kwargs)

    return dispatch


def _install(patch):
    key = (id(patch.obj), patch.name)
    with _LOCK:
        entry = _INSTALLED.get(key)
        if entry is not None:
            entry[0] += 1
            return
        original = getattr(patch.obj, patch.name)
        previous = _compat.set_instance_method(patch.obj, patch.name,
                                               _dispatcher(key, original))
        _INSTALLED[key] = [1, previous]


def _uninstall(patch):
    key = (id(patch.obj), patch.name)
    with _LOCK:
        entry = _INSTALLED[key]
        entry[0] -= 1
        if not entry[0]:
            del _INSTALLED[key]
            _compat.restore_instance_method(patch.obj, patch.name, entry[1])


@contextlib.contextmanager
def patched(patches):
    """Activate `patches` (`Patch`es) on this thread while the block runs.

    Enter it where a Monte Carlo function is traced, next to
    `sampling_scope`. Nested and concurrent uses are safe: activation is per
    thread, an installed dispatcher is shared and removed when its last user
    exits.
    """
    patches = list(patches)
    previous = _active()
    installed = []
    try:
        for patch in patches:
            _install(patch)
            installed.append(patch)
        _PATCHES.active = {**previous,
                           **{(id(p.obj), p.name): p.method for p in patches}}
        yield
    finally:
        _PATCHES.active = previous
        for patch in installed:
            _uninstall(patch)
