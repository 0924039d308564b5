"""Test-time Monte Carlo averaging over kreg's stochastic layers."""

import math
import weakref

import keras
import numpy as np
from keras import ops

from kreg import _validation as v
from kreg._compile import compile_inference
from kreg.layers.base import SamplingContext
from kreg.layers.base import sampling_scope
from kreg.mc import metrics
from kreg.mc._graph import sampling_layers
from kreg.mc._graph import split_model
from kreg.mc.prediction import MCPrediction

_SEED_RANGE = 1 << 24
_COMPILED = weakref.WeakKeyDictionary()  # model -> {sampling key: {name: fn}}
_DEFAULT_BATCH = 256


def _output_activation(model):
    """'softmax', 'sigmoid' or None, read off the layer producing the output."""
    layer = None
    try:
        outputs = model.outputs
        if outputs and len(outputs) == 1:
            layer = outputs[0]._keras_history.operation
    except (AttributeError, ValueError):
        layer = None
    if layer is None and getattr(model, "layers", None):
        layer = model.layers[-1]
    while isinstance(layer, keras.Model) and getattr(layer, "layers", None):
        layer = layer.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    for name in ("softmax", "sigmoid"):
        if act is keras.activations.get(name):
            return name
    return None


def sample_outputs(fn, inputs, seed, tiles, *, layer_index, joint=False,
                   sample_offset=0, total_samples=None):
    """Run `fn` on `inputs` tiled `tiles` times with kreg's layers sampling.

    The building block of `MCPredictor` and of `kreg.export`'s Monte Carlo
    signatures: every (nested) input tensor is tiled sample-major along the
    batch axis, `fn(tiled, training=False)` runs inside a sampling scope (so
    only kreg's stochastic layers draw masks, BatchNormalization and the rest
    stay in inference mode), and the first output is reshaped to
    `(tiles, N, ...)`.

    Args:
        fn: a model or layer (e.g. the suffix of `kreg.mc._graph.split_model`).
        inputs: a tensor or a nested structure of tensors of batch size N.
        seed: int tensor of shape (2,), the base seed of this pass.
        tiles: int, the number of samples in this pass.
        layer_index: dict `id(layer) -> int` (one random stream per layer).
        joint, sample_offset, total_samples: see `SamplingContext`.

    Returns:
        A tensor of shape `(tiles, N, ...)`.
    """
    tiled = keras.tree.map_structure(
        lambda t: ops.tile(t, (tiles,) + (1,) * (len(t.shape) - 1)), inputs)
    ctx = SamplingContext(seed, tiles=tiles, joint=joint,
                          sample_offset=sample_offset,
                          total_samples=total_samples or tiles,
                          layer_index=layer_index)
    with sampling_scope(ctx):
        out = fn(tiled, training=False)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return ops.reshape(out, (tiles, -1) + tuple(out.shape[1:]))


class MCPredictor:
    """Monte Carlo averaging of a model's kreg stochastic layers at test time.

    Runs `samples` stochastic forward passes in which only kreg's stochastic
    layers (Dropout, DropConnect) draw masks; BatchNormalization and every
    other layer stay in inference mode, and no variable of the model changes
    (the masks come from the predictor's own seeds, not the layers'
    generators). All samples of a chunk of inputs run in one compiled
    function (the batch tiled sample-major, each sample with its own masks);
    for Sequential and Functional models the layers before the first
    stochastic layer run once per input. `model.predict` is never affected.

    Args:
        model: a built Keras model containing kreg stochastic layers with
            rate > 0 (use `kreg.convert_dropout` for a model built with
            `keras.layers.Dropout`).
        samples: int >= 1, default 50. The number T of Monte Carlo samples.
        seed: int >= 0 or None, default None. With a seed, every `predict`
            call returns the same samples; without one, fresh samples.
        max_batch: int >= 1 or None, default None. The most rows in one
            forward pass (inputs x samples); bounds memory. None: all
            samples of a chunk of inputs in one pass.
        task: `"auto"` (default: classification for softmax/sigmoid
            outputs, else regression), `"classification"` or `"regression"`.
        joint: bool, default False. If True, sample t is one network (one set
            of masks) applied to every input; masks depend only on the seed
            and t, so results do not depend on chunking. Dropout masks are
            drawn over the feature axes (respecting `noise_shape`),
            DropConnect draws one weight mask per sample. The prediction
            keeps its samples, for `MCPrediction.covariance` and
            `kreg.acquisition.batch_bald`.

    Call arguments (`predict`):
        x: inputs (NumPy array or tensor) of shape (N, ...).
        batch_size: int or None. Inputs per chunk (default: 256, or fewer
            so that `max_batch` holds).
        verbose: `"auto"`, 0 or 1. A progress bar over passes.
        return_samples: bool, default False. Keep the (T, N, ...) samples.

    Returns:
        `predict` returns an `MCPrediction`; `evaluate` a dict with the MC
        and deterministic scores.

    Example:

    >>> import keras, numpy as np, kreg
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     kreg.layers.Dropout(0.5), keras.layers.Dense(3, activation="softmax")])
    >>> pred = kreg.MCPredictor(model, samples=20, seed=0).predict(
    ...     np.ones((5, 4), "float32"), verbose=0)
    >>> pred.mean.shape, pred.task, pred.num_samples
    ((5, 3), 'classification', 20)
    >>> bool(np.all(pred.mutual_information >= 0))
    True

    References:
        Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016;
        Srivastava et al., JMLR 2014, section 7.5 (Monte-Carlo model
        averaging vs weight scaling).
    """

    def __init__(self, model, samples=50, *, seed=None, max_batch=None,
                 task="auto", joint=False):
        owner = "MCPredictor"
        if not isinstance(model, keras.Model) and not isinstance(model, keras.layers.Layer):
            raise v.invalid_type(owner, "model", "a Keras model", model)
        self.samples = v.check_int(owner, "samples", samples, low=1)
        self.seed = v.check_seed(owner, seed)
        self.max_batch = v.check_int(owner, "max_batch", max_batch, low=1,
                                     allow_none=True)
        self.task = v.check_option(owner, "task", task,
                                   ("auto", "classification", "regression"))
        self.joint = v.check_bool(owner, "joint", joint)
        if not model.built:
            raise v.invalid_value(owner, "model",
                                  "a built model (call it or build it first)", model)
        self.model = model
        layers = sampling_layers(model)
        if not layers:
            has_keras_dropout = any(
                isinstance(layer, keras.layers.Dropout)
                or type(layer).__name__.startswith("SpatialDropout")
                for layer in model._flatten_layers(include_self=False))
            hint = (" It uses keras.layers.Dropout: convert it with "
                    "kreg.convert_dropout(model)." if has_keras_dropout else "")
            raise ValueError(
                "Invalid value for argument `model` of MCPredictor: expected a "
                "model with at least one kreg stochastic layer (Dropout, "
                "DropConnect) with rate > 0; every sample would be identical."
                f"{hint} Received: model={model.name!r}")
        self.sampling_layers = layers
        self._layer_index = {id(layer): i for i, layer in enumerate(layers)}
        # Compiled functions and the prefix split are shared by every
        # predictor of the same model (and the same sampling layers and
        # rates), so several predictors do not each retrace.
        key = tuple((id(layer), layer.rate) for layer in layers)
        per_model = _COMPILED.setdefault(model, {})
        self._cache = per_model.setdefault(key, {})
        if "split" not in self._cache:
            self._cache["split"] = split_model(model)
        self._split = self._cache["split"]
        act = _output_activation(model)
        if self.task == "auto":
            self.resolved_task = "classification" if act else "regression"
        else:
            self.resolved_task = self.task
        self.activation = act or "softmax"
        self._rng = np.random.default_rng(seed)

    # -- compiled pieces -------------------------------------------------------
    def _prefix(self):
        fn = self._cache.get("prefix")
        if fn is None:
            prefix = self._split.prefix

            def run(x):
                out = prefix(x, training=False)
                return list(out) if isinstance(out, (list, tuple)) else [out]

            fn = self._cache["prefix"] = compile_inference(run, self.model.variables)
        return fn

    def _sampler(self, tiles):
        key = ("sampler", tiles, self.joint, self.samples if self.joint else None)
        fn = self._cache.get(key)
        if fn is not None:
            return fn
        suffix = self._split.suffix
        joint = self.joint
        total = self.samples
        index = self._layer_index

        def run(inputs, seed, offset):
            arg = inputs if len(inputs) > 1 else inputs[0]
            return sample_outputs(suffix, arg, seed, tiles, layer_index=index,
                                  joint=joint, sample_offset=offset,
                                  total_samples=total)

        fn = compile_inference(run, self.model.variables)
        self._cache[key] = fn
        return fn

    def _seed_dtype(self):
        return self.sampling_layers[0].seed_generator.state.dtype

    # -- public API ------------------------------------------------------------
    def _plan(self, n, batch_size):
        t = self.samples
        if batch_size is None:
            batch_size = _DEFAULT_BATCH
        batch_size = max(1, min(batch_size, n))
        if self.max_batch is not None:
            batch_size = min(batch_size, self.max_batch)
            tiles = max(1, min(t, self.max_batch // batch_size))
        else:
            tiles = t
        return batch_size, tiles

    def predict(self, x, batch_size=None, verbose="auto", return_samples=False):
        """Run the T stochastic passes over `x`; returns an `MCPrediction`."""
        owner = "MCPredictor.predict"
        batch_size = v.check_int(owner, "batch_size", batch_size, low=1,
                                 allow_none=True)
        if verbose not in ("auto", 0, 1, True, False):
            raise v.invalid_value(owner, "verbose", "'auto', 0 or 1", verbose)
        return_samples = v.check_bool(owner, "return_samples", return_samples)
        samples = self._samples(x, batch_size, verbose)
        return MCPrediction(samples, self.resolved_task, activation=self.activation,
                            joint=self.joint,
                            keep_samples=return_samples or self.joint)

    def _samples(self, x, batch_size, verbose):
        if isinstance(x, (list, tuple)):
            raise v.invalid_type("MCPredictor.predict", "x",
                                 "a single array (single-input models)", x)
        x = ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x
        n = x.shape[0]
        batch_size, tiles = self._plan(n, batch_size)
        t_total = self.samples
        input_chunks = math.ceil(n / batch_size)
        sample_chunks = math.ceil(t_total / tiles)
        passes = input_chunks * sample_chunks
        show = verbose in (1, True) or (verbose == "auto" and passes > 1)
        bar = keras.utils.Progbar(passes, unit_name="pass") if show else None
        # The base seed: fixed per predictor seed, fresh per call otherwise.
        if self.seed is not None:
            base = self.seed % _SEED_RANGE
        else:
            base = int(self._rng.integers(0, _SEED_RANGE))
        dtype = self._seed_dtype()
        out = None
        done = 0
        for i in range(input_chunks):
            xb = x[i * batch_size:(i + 1) * batch_size]
            if self._split.prefix is not None:
                frontier = self._prefix()(ops.convert_to_tensor(xb))
            else:
                frontier = [ops.convert_to_tensor(xb)]
            for j in range(sample_chunks):
                start = j * tiles
                count = min(tiles, t_total - start)
                counter = 0 if self.joint else i * sample_chunks + j
                seed = ops.convert_to_tensor(np.array([base, counter]), dtype=dtype)
                offset = ops.convert_to_tensor(start, dtype="int32")
                res = ops.convert_to_numpy(
                    self._sampler(count)(frontier, seed, offset))
                if out is None:
                    out = np.empty((t_total, n) + res.shape[2:], res.dtype)
                out[start:start + count, i * batch_size:i * batch_size + len(xb)] = res
                done += 1
                if bar is not None:
                    bar.update(done)
        return out

    def evaluate(self, x, y, *, tau=None, batch_size=None, verbose="auto", bins=15):
        """MC scores next to the deterministic model's on (x, y).

        Classification: NLL (of the mean probability of the true class),
        accuracy, Brier score and expected calibration error (`bins` bins).
        Regression: RMSE and, when the model precision `tau` is given, Gal's
        test negative log-likelihood (None otherwise: a mixture of point
        predictions has no likelihood without an observation noise).

        Args:
            x: inputs; y: targets (integer labels or one-hot for softmax).
            tau: float > 0 or None, default None. Gal's model precision (see
                `kreg.mc.metrics.model_precision`).
            batch_size, verbose: as in `predict`.
            bins: int >= 1, default 15.

        Returns:
            dict: `{"mc": {...}, "deterministic": {...}, "samples": T,
            "task": ...}`.
        """
        owner = "MCPredictor.evaluate"
        if tau is not None:
            tau = v.check_float(owner, "tau", tau, low=0.0, low_open=True)
        bins = v.check_int(owner, "bins", bins, low=1)
        samples = self._samples(x, batch_size, verbose)
        det = ops.convert_to_numpy(
            self.model.predict(x, batch_size=batch_size or _DEFAULT_BATCH, verbose=0))
        if self.resolved_task == "classification":
            sig = self.activation == "sigmoid"
            mc = metrics.classification_scores(samples.mean(axis=0), y,
                                               sigmoid=sig, bins=bins)
            dt = metrics.classification_scores(det, y, sigmoid=sig, bins=bins)
        else:
            mc = metrics.regression_scores(samples, y, tau)
            dt = metrics.regression_scores(det[None], y, tau)
        return {"mc": mc, "deterministic": dt, "samples": self.samples,
                "task": self.resolved_task}
