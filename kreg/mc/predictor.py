"""`kreg.MCPredictor`: test-time Monte Carlo averaging of a model's noise."""

import warnings

import keras
import numpy as np

from kreg import _validation as v
from kreg.layers._seeds import SEED_BITS
from kreg.mc import _heads
from kreg.mc import _inputs
from kreg.mc import metrics
from kreg.mc._passes import PassRunner
from kreg.mc.convert import forced_training_layers
from kreg.mc.convert import forced_training_message
from kreg.mc.plan import DEFAULT_MAX_BATCH
from kreg.mc.plan import SamplingPlan
from kreg.mc.plan import check_temperature_value  # noqa: F401 - re-exported
from kreg.mc.plan import resolve_temperatures
from kreg.mc.prediction import MCPrediction


class MCPredictor(PassRunner):
    """Monte Carlo averaging of a model's noise at test time.

    Runs `samples` stochastic forward passes in which only the model's noise
    layers draw: kreg's stochastic layers (Dropout, DropConnect, ...) and
    Keras's own noise wherever it sits (Dropout, SpatialDropout,
    GaussianDropout, GaussianNoise, AlphaDropout, the dropout of
    MultiHeadAttention and of recurrent layers, one mask per sequence, in nested
    models, custom layers and keras-hub blocks: no conversion needed, see
    `kreg.layers._keras_noise`). BatchNormalization and every other layer stay
    in inference mode, and no variable of the model changes (the masks come from
    the predictor's own seeds, not the layers' generators). When every sample
    comes out identical (an `if training:` branch in a subclassed model's
    `call`), it warns once. The samples of a chunk of inputs run in one compiled
    function (the batch tiled sample-major, each sample with its own masks); for
    Sequential and Functional models the layers before the first stochastic
    layer run once per input. `model.predict` is never affected.

    The statistics (mean, variance, the entropy split, the variation ratio)
    are computed where the samples are made, in the same compiled call, in
    float32 (`kreg.mc._stats`; merged across passes when a chunk needs
    several, see `max_batch`), and only they are copied to the host: one
    compiled call per chunk of inputs when its T samples fit in `max_batch`
    rows. The samples themselves reach the host only where they are needed:
    `return_samples=True`, `joint=True` (kept for `covariance` and
    BatchBALD), and `evaluate` of a regression output with `tau` (Gal's
    log-likelihood is a log-mean-exp over the samples). The numbers equal
    those of `MCPrediction(samples)` (float64 NumPy) to float32 round-off.

    Every model shape works: one or several inputs (an array, a list/tuple
    of arrays or a dict keyed by input name, as `model.predict` takes them)
    and one or several outputs (`predict` returns the structure that
    `model.predict` returns, with an `MCPrediction` in place of each array).
    Each output is read from the layer that produces it: softmax or sigmoid
    means classification, a linear output regression, unless it outputs
    logits (`from_logits`), which are turned into probabilities sample by
    sample (softmax, or sigmoid for one unit or a binary loss) before the
    average: the MC estimate is the mean of the T probability vectors.

    Args:
        model: a built Keras model with at least one noise layer with a rate
            above 0 (see above), or, with `augment=True`, Keras random
            augmentation layers. A layer that draws noise of its own that
            kreg cannot sample (a custom layer holding a SeedGenerator) is an
            error naming it.
        samples: int >= 1, default 50. The number T of Monte Carlo samples.
        seed: int in [0, 2**32) or None, default None. With a seed, every
            `predict` call returns the same samples, and distinct seeds give
            distinct random streams; without one, fresh samples per call.
        max_batch: int >= 1 or None, default 16384 (`DEFAULT_MAX_BATCH`).
            The most rows in one forward pass (inputs x samples); bounds
            memory. None: all samples of a chunk of inputs in one pass. The
            default was the fastest of the sizes measured, within 10% of the
            smallest peak memory (docs/benchmarks.md).
        task: `"auto"` (default: per output, classification for softmax/
            sigmoid or logits outputs, else regression), `"classification"`
            or `"regression"`; or a list/dict with one per output.
        from_logits: None (default: the compiled loss's `from_logits` of
            each output, False for an uncompiled model), True or False; or a
            list/dict with one per output.
        joint: bool, default False. If True, sample t is one network (one set
            of masks) applied to every input; masks depend only on the seed
            and t, so results do not depend on chunking. Dropout masks are
            drawn over the feature axes (respecting `noise_shape`),
            DropConnect draws one weight mask per sample; the samples of
            every output come from the same T networks. The prediction keeps
            its samples, for `MCPrediction.covariance` and
            `kreg.acquisition.batch_bald`.
        augment: bool, default False. Test-time augmentation: the model's
            Keras random augmentation layers (`RandomFlip`,
            `RandomTranslation`, `RandomRotation`, `RandomZoom`,
            `RandomContrast`, `RandomBrightness`, `RandomCrop`) sample too,
            as in training, with seeds from the predictor's (so `seed=`
            reproduces them; their own generators are not used and no
            variable changes); every other layer stays in inference mode.
            Each row of each sample gets its own transformation; with
            `joint=True`, sample t applies one transformation to all its
            inputs, a function of the seed, the layer and t. `RandomCrop`
            crops a random window per row (per sample when joint) where the
            input is larger than the crop, else it takes Keras's training
            path (a resize). A model whose only random layers are
            augmentation layers is accepted; another Keras random
            preprocessing layer (`RandomShear`, `MixUp`, ...) is an error,
            since it would not sample. See `kreg.mc.augment`.
        temperature: float > 0 or None, default None. Temperature scaling
            (Guo et al. 2017) of classification outputs. For several
            outputs, a float applies to every output (all must then be
            classification outputs), or pass a list/dict with one per
            output (None leaves that output alone); an error for a
            regression output. Where T enters: on the MC mean, as the
            logits of the averaged prediction: `q = softmax(log(pbar) / T)`
            with `pbar` the mean of the T sample probabilities
            (`sigmoid(logit(pbar) / T)` for sigmoid outputs), which is
            `kreg.calibration.apply_temperature(pbar, T)`. This is the
            quantity that `kreg.calibration.fit_temperature(pbar_val,
            y_val)` fits on a validation split, so the reported mean is the
            one whose NLL was minimized (tempering each sample before
            averaging would be another, unfitted predictor). The argmax
            never changes. `MCPrediction.mean`, `variance`/`std`,
            `entropy`, `expected_entropy` and `mutual_information` are
            those of `kreg.calibration.tempered_uncertainty` (consistent
            with q; mutual information stays >= 0); `samples` (with
            `return_samples=True` or `joint=True`), `covariance` and
            `variation_ratio` stay untempered. `evaluate` scores the
            tempered MC mean (its `"deterministic"` scores stay the
            untempered model's).

    Call arguments (`predict`):
        x: inputs as `model.predict` takes them: a NumPy array, tensor or
            list of rows; a list/tuple of arrays or a dict keyed by input
            name (multi-input models); a `tf.data.Dataset` (TensorFlow), a
            `keras.utils.PyDataset` or a generator of x or (x, y) batches
            (the data's batches are the chunks).
        batch_size: int or None. Inputs per chunk (default: 256, or fewer
            so that `max_batch` holds). Chunks are padded to a power of two
            (or `batch_size`), so inputs of any size reuse a few compiled
            functions.
        verbose: `"auto"`, 0 or 1. A progress bar over passes.
        return_samples: bool, default False. Keep the (T, N, ...) samples
            (copied to the host; otherwise only the statistics are).

    Returns:
        `predict` returns an `MCPrediction` (or the output structure of
        them); `evaluate` a dict with the MC and deterministic scores (or
        the output structure of such dicts).

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
    >>> hot = kreg.MCPredictor(model, samples=20, seed=0, temperature=2.0).predict(
    ...     np.ones((5, 4), "float32"), verbose=0)      # T on the MC mean
    >>> bool(np.allclose(hot.mean, kreg.calibration.apply_temperature(pred.mean, 2.0),
    ...                  atol=1e-6))
    True

    References:
        Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016;
        Srivastava et al., JMLR 2014, section 7.5 (Monte-Carlo model
        averaging vs weight scaling); Guo, Pleiss, Sun & Weinberger, "On
        Calibration of Modern Neural Networks", ICML 2017, section 4.2
        (temperature scaling).
    """

    def __init__(self, model, samples=50, *, seed=None, max_batch=DEFAULT_MAX_BATCH,
                 task="auto", from_logits=None, joint=False, temperature=None,
                 augment=False):
        owner = "MCPredictor"
        if not isinstance(model, keras.Model) and not isinstance(model, keras.layers.Layer):
            raise v.invalid_type(owner, "model", "a Keras model", model)
        self.samples = v.check_int(owner, "samples", samples, low=1)
        self.seed = v.check_int(owner, "seed", seed, low=0,
                                high=(1 << SEED_BITS) - 1, allow_none=True)
        self.max_batch = v.check_int(owner, "max_batch", max_batch, low=1,
                                     allow_none=True)
        _heads.check_settings(owner, task, from_logits)
        if not isinstance(temperature, (list, tuple, dict)):
            check_temperature_value(owner)(temperature)
        self.task = task
        self.from_logits = from_logits
        self.temperature = temperature
        self.joint = v.check_bool(owner, "joint", joint)
        self.augment = v.check_bool(owner, "augment", augment)
        self.model = model
        #: The `kreg.mc.plan.SamplingPlan` shared with `kreg.export`: the
        #: sampling layers, their streams, the prefix split, the heads and the
        #: compiled functions (shared by every predictor of the same model
        #: and sampling settings, so several predictors do not each retrace).
        self.plan = SamplingPlan(owner, model, task=task, from_logits=from_logits,
                                 augment=self.augment)
        self._cache = self.plan.cache
        self._heads_key = self.plan.heads_key
        self._temperatures = None
        if self.heads is not None:
            self._resolve_temperatures()
        self._rng = np.random.default_rng(seed)
        self._warned_identical = False
        forced = forced_training_layers(model)
        if forced:
            warnings.warn(forced_training_message(forced), UserWarning, stacklevel=2)

    # -- per-model sampling facts (the plan's) ---------------------------------
    @property
    def sampling_layers(self):
        """The kreg stochastic layers that sample, in a stable order."""
        return self.plan.layers

    @property
    def layer_index(self):
        """dict `id(layer) -> int`: each sampling layer's random stream."""
        return self.plan.layer_index

    @property
    def split(self):
        """The prefix/suffix split (`kreg.mc._graph.Split`)."""
        return self.plan.split

    @property
    def heads(self):
        """One `kreg.mc._heads.Head` per output (None until known)."""
        return self.plan.heads

    @property
    def seed_dtype(self):
        """The dtype of kreg's sampling seeds on this backend."""
        return self.plan.seed_dtype

    @property
    def resolved_task(self):
        """The task of the output, or a list of them (one per output)."""
        return self._per_head("task")

    @property
    def activation(self):
        """How classification outputs are read (`"softmax"`/`"sigmoid"`)."""
        return self._per_head("activation")

    def _per_head(self, attr):
        if self.heads is None:  # a subclassed model not run yet: one output
            heads = _heads.late_heads("MCPredictor", self.model, self.task,
                                      self.from_logits, [np.zeros((1, 2))])
            return getattr(heads[0], attr)
        values = [getattr(h, attr) for h in self.heads]
        return values[0] if len(values) == 1 else values

    def to_probabilities(self, outputs):
        """Per-sample softmax/sigmoid of logits outputs (a flat list of tensors).

        Resolves the heads of a subclassed model from its outputs on first use.
        """
        self._ensure_heads(outputs)
        return _heads.to_probabilities(outputs, self.heads)

    def _ensure_heads(self, outputs):
        self.plan.ensure_heads(outputs)
        if self._temperatures is None:
            self._resolve_temperatures()

    def _resolve_temperatures(self):
        self._temperatures = resolve_temperatures("MCPredictor", self.heads,
                                                  self.temperature)

    @property
    def temperatures(self):
        """The temperature of every output (a list; None: not tempered)."""
        if self._temperatures is None:
            return None
        return list(self._temperatures)

    @property
    def _out_structure(self):
        return self.plan.out_structure

    def _pack(self, flat):
        if self._out_structure is None or len(flat) == 1 and not isinstance(
                self._out_structure, (list, tuple, dict)):
            return flat[0] if len(flat) == 1 else flat
        return keras.tree.pack_sequence_as(self._out_structure, flat)

    # -- public API ------------------------------------------------------------
    def _check_call(self, owner, batch_size, verbose):
        batch_size = v.check_int(owner, "batch_size", batch_size, low=1,
                                 allow_none=True)
        if not isinstance(verbose, (str, int)) or verbose not in ("auto", 0, 1):
            raise v.invalid_value(owner, "verbose", "'auto', 0 or 1", verbose)
        return batch_size

    def predict(self, x, batch_size=None, verbose="auto", return_samples=False):
        """Run the T stochastic passes over `x`.

        Returns:
            An `MCPrediction`, or for a model with several outputs the
            structure `model.predict` returns with one in place of each array.
        """
        owner = "MCPredictor.predict"
        batch_size = self._check_call(owner, batch_size, verbose)
        return_samples = v.check_bool(owner, "return_samples", return_samples)
        stats, samples, _, _ = self._run(owner, x, batch_size, verbose,
                                         keep=lambda head: return_samples)
        preds = [MCPrediction.from_statistics(
                     st, head.task, activation=head.activation, joint=self.joint,
                     num_samples=self.samples, samples=s, temperature=temp,
                     dtype=head.dtype)
                 for st, s, head, temp in zip(stats, samples, self.heads,
                                              self._temperatures)]
        return self._pack(preds)

    def evaluate(self, x, y=None, *, tau=None, batch_size=None, verbose="auto", bins=15):
        """MC scores next to the deterministic model's on (x, y).

        Classification: NLL (of the mean probability of the true class),
        accuracy, Brier score and expected calibration error (`bins` bins).
        Regression: RMSE and, when the model precision `tau` is given, Gal's
        test negative log-likelihood (None otherwise: a mixture of point
        predictions has no likelihood without an observation noise).

        Args:
            x: inputs as in `predict`, or a dataset/generator of (x, y).
            y: targets (integer labels or one-hot for softmax, 0/1 for
                sigmoid, values for regression), in the structure of the
                model's outputs (a list or dict for several outputs); None
                when x yields (x, y) batches.
            tau: float > 0 or None, default None. Gal's model precision (see
                `kreg.mc.metrics.model_precision`).
            batch_size, verbose: as in `predict`.
            bins: int >= 1, default 15.

        Returns:
            dict: `{"mc": {...}, "deterministic": {...}, "samples": T,
            "task": ...}`; for several outputs, the output structure of them.
        """
        owner = "MCPredictor.evaluate"
        if tau is not None:
            tau = v.check_float(owner, "tau", tau, low=0.0, low_open=True)
        bins = v.check_int(owner, "bins", bins, low=1)
        batch_size = self._check_call(owner, batch_size, verbose)
        stream = _inputs.is_data_stream(x)
        if x is None:
            raise v.invalid_type(owner, "x", "the inputs (see MCPredictor.predict)", x)
        if not stream and y is None:
            raise v.invalid_type(owner, "y", "the targets (an array, or a structure "
                                 "matching the model's outputs)", y)
        if stream and y is not None:
            raise v.invalid_value(
                owner, "y", "None when x is a dataset or generator (it yields "
                "(x, y) batches)", _inputs.describe(y))
        # Gal's regression log-likelihood needs the samples (a log-mean-exp
        # over them per target); every other score reads the statistics.
        stats, samples, det, ys = self._run(
            owner, x, batch_size, verbose, deterministic=True, want_y=stream,
            keep=lambda head: head.task == "regression" and tau is not None)
        names = [h.name for h in self.heads]
        if stream:
            parts = [_inputs.targets(owner, b, names) for b in ys]
            targets = [np.concatenate([p[k] for p in parts]) for k in range(len(names))]
        else:
            targets = _inputs.targets(owner, y, names)
        results = []
        for k, head in enumerate(self.heads):
            yk = _inputs.check_target(owner, "y" if len(names) == 1 else f"y[{names[k]!r}]",
                               targets[k], head, stats[k]["mean"].shape)
            mean = stats[k]["mean"]  # tempered where a temperature is set
            if head.task == "classification":
                sig = head.activation == "sigmoid"
                mc = metrics.classification_scores(mean, yk, sigmoid=sig, bins=bins)
                dt = metrics.classification_scores(det[k], yk, sigmoid=sig, bins=bins)
            else:
                mc = metrics.regression_scores(
                    mean[None] if samples[k] is None else samples[k], yk, tau)
                dt = metrics.regression_scores(det[k][None], yk, tau)
            results.append({"mc": mc, "deterministic": dt, "samples": self.samples,
                            "task": head.task})
        return self._pack(results)


