"""`SamplingPlan`: what Monte Carlo prediction knows about one model.

`kreg.MCPredictor` and `kreg.export` sample a model the same way; the plan is
that shared part, computed once per model: which layers sample and the
random stream of each (`layer_index`), the split into a deterministic prefix
run once per input and a stochastic suffix run per sample, the backend's
seed dtype, how each output is read (task, activation, logits: the heads) and
the compiled functions of every predictor of the model (`cache`).
Backend-neutral; `kreg.export` traces the same functions with TensorFlow.
"""

import json
import weakref

import keras
import numpy as np
from keras import ops

from kreg import _compat
from kreg import _validation as v
from kreg.layers import _keras_noise
from kreg.layers._sampling import SamplingContext
from kreg.layers._sampling import patched
from kreg.layers._sampling import sampling_scope
from kreg.layers._seeds import encode_seed
from kreg.layers._seeds import seed_dtype
from kreg.mc import _heads
from kreg.mc import augment as _augment
from kreg.mc._graph import is_kreg_sampling
from kreg.mc._graph import sampling_layers
from kreg.mc._graph import split_model
from kreg.mc._graph import unsampled_noise
from kreg.mc.prediction import check_temperature

# Default `max_batch` (rows of one forward pass, inputs x samples) of
# `MCPredictor` and `kreg.export`. Measured on the 2-core CPU (see the
# MCPredictor docstring): it bounds a pass's memory and is far above the
# passes of the speed benchmark (T=50 x 256 rows).
DEFAULT_MAX_BATCH = 1 << 14

# model -> {sampling key: {name: value}}: compiled functions and the split of
# every plan of the model with the same sampling layers and settings.
_CACHES = weakref.WeakKeyDictionary()


def _layer_key(layer):
    """A layer's sampling settings: its class and config (rate, stddev, ...)."""
    try:
        config = json.dumps(layer.get_config(), sort_keys=True, default=repr)
    except (NotImplementedError, TypeError, ValueError):
        config = repr(getattr(layer, "rate", None))
    return (id(layer), type(layer).__name__, config)


class SamplingPlan:
    """How `model` is sampled by `kreg.MCPredictor` and `kreg.export`.

    Args:
        owner: str, the public name reported in errors ("MCPredictor", ...).
        model: a built Keras model (or layer) with layers that sample
            (`kreg.mc._graph.sampling_layers`).
        task: `"auto"`, `"classification"`, `"regression"`, or one per output
            (see `kreg.MCPredictor`).
        from_logits: None, a bool, or one per output (see `kreg.MCPredictor`).
        augment: bool, default False. The model's Keras random augmentation
            layers sample too (`kreg.mc.augment`; see `kreg.MCPredictor`).

    Attributes:
        model: the model.
        layers: the sampling layers, in a stable order (kreg's and Keras's
            noise and recurrent layers, then the augmentation layers with
            `augment=True`).
        augment_layers: the Keras augmentation layers that sample ([] unless
            `augment=True`).
        layer_index: dict `id(layer) -> int`, each layer's random stream.
        split: the prefix/suffix split (`kreg.mc._graph.Split`).
        heads: one `kreg.mc._heads.Head` per output (None for a subclassed
            model until its first outputs are seen, see `ensure_heads`).
        cache: dict shared by every plan of the model with the same sampling
            layers and settings (compiled functions, input templates).
    """

    def __init__(self, owner, model, *, task="auto", from_logits=None, augment=False):
        if not model.built:
            raise v.invalid_value(owner, "model",
                                  "a built model (call it or build it first)", model)
        flat = _compat.flatten_layers(model)  # the one walk of the model's layers
        self.augment_layers = (_augment.augmentation_layers(model, owner, flat)
                               if augment else [])
        unsampled = unsampled_noise(model, flat)
        if unsampled:
            raise cannot_sample(owner, model, unsampled)
        layers = sampling_layers(model, flat) + self.augment_layers
        if not layers:
            raise no_sampling_layer(owner, model)
        self.owner = owner
        self.model = model
        self.layers = layers
        key = tuple(_layer_key(layer) for layer in layers)
        self.cache = _CACHES.setdefault(model, {}).setdefault(key, {})
        if "samplers" not in self.cache:  # one twin per Keras layer and settings
            self.cache["samplers"] = (
                [_keras_noise.sampler(layer) for layer in layers
                 if not is_kreg_sampling(layer) and layer not in self.augment_layers]
                + [_augment.sampler(layer) for layer in self.augment_layers])
        samplers = self.cache["samplers"]
        #: The `kreg.layers._sampling.Patch`es that make layers kreg did not
        #: write sample (entered with the sampling scope, see `sample_outputs`).
        self.patches = [patch for s in samplers for patch in s.patches]
        self.layer_index = _stream_index(layers, samplers)
        if "split" not in self.cache:
            self.cache["split"] = split_model(model, layers)
        self.split = self.cache["split"]
        self.task = task
        self.from_logits = from_logits
        #: Part of every compiled function's key that depends on the heads.
        self.heads_key = (repr(task), repr(from_logits))
        self.heads, self.known_structure = _heads.model_heads(
            owner, model, task, from_logits)

    @property
    def seed_dtype(self):
        """The dtype of kreg's sampling seeds on this backend."""
        return seed_dtype()

    def pass_seed(self, seed, counter=0):
        """The seed tensor of pass `counter` of user seed `seed` (Python ints)."""
        return ops.convert_to_tensor(np.array(encode_seed(seed, counter)),
                                     dtype=self.seed_dtype)

    @property
    def out_structure(self):
        """The structure of the model's outputs (None: not known yet)."""
        if self.known_structure is not None:
            return self.known_structure
        return self.cache.get("out_structure")

    def ensure_heads(self, outputs):
        """Resolve the heads of a subclassed model from its flat outputs."""
        if self.heads is None:
            self.heads = _heads.late_heads(self.owner, self.model, self.task,
                                           self.from_logits, outputs,
                                           self.cache.get("out_structure"))
        return self.heads

    def to_probabilities(self, outputs):
        """Per-sample softmax/sigmoid of logits outputs (a flat list of tensors)."""
        return _heads.to_probabilities(outputs, self.ensure_heads(outputs))

    def noting_structure(self, fn):
        """`fn`, recording its output structure (subclassed models) when traced."""
        cache = self.cache

        def call(inputs, training=False):
            out = fn(inputs, training=training)
            cache["out_structure"] = keras.tree.map_structure(lambda _: None, out)
            return out

        return call

    def sample(self, fn, inputs, seed, tiles, *, joint=False, sample_offset=0,
               total_samples=None, transform=None):
        """`sample_outputs` with this plan's layer index and augmentation layers."""
        return sample_outputs(fn, inputs, seed, tiles, layer_index=self.layer_index,
                              joint=joint, sample_offset=sample_offset,
                              total_samples=total_samples, transform=transform,
                              patches=self.patches)


def _stream_index(layers, samplers):
    """dict `id(object) -> random stream` of everything that draws in a pass.

    The sampling layers first, in order; a twin (`kreg.layers._keras_noise`)
    shares its layer's stream, an RNN cell gets the next free one.
    """
    index = {id(layer): i for i, layer in enumerate(layers)}
    free = len(layers)
    for s in samplers:
        for obj, owner in s.streams.items():
            if id(obj) in index:
                continue
            if owner is obj:
                index[id(obj)], free = free, free + 1
            else:
                index[id(obj)] = index[id(owner)]
    return index


def no_sampling_layer(owner, model):
    """kreg's error for a model in which nothing samples."""
    hint = ""
    if _augment.augmentation_layers(model, owner):
        hint = (" It has random augmentation layers: pass augment=True to "
                "sample them (test-time augmentation).")
    return ValueError(
        f"Invalid value for argument `model` of {owner}: expected a model with at "
        "least one layer that samples with a rate above 0 (kreg's stochastic "
        "layers; Keras's Dropout, SpatialDropout, GaussianDropout, GaussianNoise, "
        "AlphaDropout; the dropout of MultiHeadAttention or of a recurrent "
        f"layer); every sample would be identical.{hint} Received: "
        f"model={model.name!r}")


def cannot_sample(owner, model, layers):
    """kreg's error for a model with noise of its own that kreg cannot draw."""
    names = ", ".join(f"{type(layer).__name__} {layer.name!r}" for layer in layers)
    return ValueError(
        f"Invalid value for argument `model` of {owner}: expected a model whose "
        "random layers kreg can sample; these layers hold a "
        "keras.random.SeedGenerator of their own, so their noise would silently "
        "stay off in every sample: " + names + ". Draw the noise with a "
        "keras.layers.Dropout (or GaussianNoise, GaussianDropout) sublayer, "
        "called with training=training, or with a kreg layer. Received: "
        f"model={model.name!r}")


def sample_outputs(fn, inputs, seed, tiles, *, layer_index, joint=False,
                   sample_offset=0, total_samples=None, transform=None,
                   patches=()):
    """Run `fn` on `inputs` tiled `tiles` times with kreg's layers sampling.

    The building block of `MCPredictor` and of `kreg.export`'s Monte Carlo
    signatures: every (nested) input tensor is tiled sample-major along the
    batch axis, `fn(tiled, training=False)` runs inside a sampling scope (so
    only the sampling layers draw noise, BatchNormalization and the rest
    stay in inference mode), and every output is reshaped to
    `(tiles, N, ...)`.

    Args:
        fn: a model or layer (e.g. the suffix of `kreg.mc._graph.split_model`).
        inputs: a tensor or a nested structure of tensors of batch size N.
        seed: int tensor of shape (2,), the pass seed (`encode_seed`).
        tiles: int, the number of samples in this pass.
        layer_index: dict `id(layer) -> int` (one random stream per layer).
        joint, sample_offset, total_samples: see `SamplingContext`.
        transform: None or a callable on the flat list of outputs (e.g.
            `SamplingPlan.to_probabilities`), applied per sample.
        patches: the `kreg.layers._sampling.Patch`es of the layers kreg did
            not write (`SamplingPlan.patches`); none by default.

    Returns:
        A list of tensors of shape `(tiles, N, ...)`, one per model output (in
        the order of `keras.tree.flatten` of the model's output).
    """
    tiled = keras.tree.map_structure(
        lambda t: ops.tile(t, (tiles,) + (1,) * (len(t.shape) - 1)), inputs)
    ctx = SamplingContext(seed, tiles=tiles, joint=joint,
                          sample_offset=sample_offset,
                          total_samples=total_samples or tiles,
                          layer_index=layer_index)
    with patched(patches), sampling_scope(ctx):
        out = keras.tree.flatten(fn(tiled, training=False))
    if transform is not None:
        out = transform(out)
    return [ops.reshape(o, (tiles, -1) + tuple(o.shape[1:])) for o in out]


def resolve_temperatures(owner, heads, temperature):
    """One temperature (or None) per head; an error for a regression head.

    `temperature` is None, a float > 0 (every output) or a list/dict with one
    per output (see `MCPredictor`); also used by `kreg.export`.
    """
    names = [h.name for h in heads]
    temps = _heads.per_output(owner, "temperature", temperature, names,
                              check_temperature_value(owner))
    for head, t in zip(heads, temps):
        check_temperature(owner, t, head.task, head.name if len(heads) > 1 else None)
    return temps


def check_temperature_value(owner):
    """None or a float > 0 (one output's temperature), in kreg's wording."""
    def check(value):
        if value is None:
            return None
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(
                value, bool):
            raise v.invalid_type(owner, "temperature", "a float > 0 or None (or a "
                                 "list/dict of them, one per output)", value)
        return v.check_float(owner, "temperature", value, low=0.0, low_open=True)
    return check
