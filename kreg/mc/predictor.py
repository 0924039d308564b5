"""Test-time Monte Carlo averaging over kreg's stochastic layers."""

import collections
import warnings

import keras
import numpy as np
from keras import ops

from kreg import _validation as v
from kreg._compile import compile_inference
from kreg.layers._seeds import COUNTER_BITS
from kreg.layers._seeds import SEED_BITS
from kreg.mc import _heads
from kreg.mc import _inputs
from kreg.mc import _stats
from kreg.mc import metrics
from kreg.mc._graph import forced_training_layers
from kreg.mc.plan import SamplingPlan
from kreg.mc.prediction import MCPrediction
from kreg.mc.prediction import check_temperature

# A user seed s in [0, 2**32) and the pass counter c < 2**20 of a predict
# call become kreg's pass seed through `kreg.layers._seeds.encode_seed`, one
# to one, so distinct seeds (and passes) give distinct random streams.
_DEFAULT_BATCH = 256
# Default `max_batch` (rows of one forward pass, inputs x samples). Measured on
# the 2-core CPU (see the MCPredictor docstring): it bounds a pass's memory
# and is far above the passes of the speed benchmark (T=50 x 256 rows).
DEFAULT_MAX_BATCH = 1 << 14


def _bucket(n, cap):
    """The padded row count of a chunk of n rows: a power of two, or `cap`."""
    b = 1
    while b < n:
        b *= 2
    return min(b, cap)


def _pad(a, rows):
    if len(a) == rows:
        return a
    return np.concatenate([a, np.repeat(a[-1:], rows - len(a), axis=0)])


def training_true_message(owner, layers):
    """The warning for sampling layers called with `training=True` in the graph."""
    names = ", ".join(f"{type(layer).__name__} {layer.name!r}" for layer in layers)
    return (f"{owner}: {names} is called with training=True in the model's graph. "
            "Keras 3's model.predict runs it in inference mode all the same, so a "
            "hand-written loop over predict returns identical passes (model(x) "
            "does sample). kreg samples it like any other noise layer; the "
            "training=True is not needed.")


class MCPredictor:
    """Monte Carlo averaging of a model's kreg stochastic layers at test time.

    Runs `samples` stochastic forward passes in which only kreg's stochastic
    layers (Dropout, DropConnect) draw masks; BatchNormalization and every
    other layer stay in inference mode, and no variable of the model changes
    (the masks come from the predictor's own seeds, not the layers'
    generators). The samples of a chunk of inputs run in one compiled
    function (the batch tiled sample-major, each sample with its own masks);
    for Sequential and Functional models the layers before the first
    stochastic layer run once per input. `model.predict` is never affected.

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
        model: a built Keras model containing kreg stochastic layers with
            rate > 0 (use `kreg.convert_dropout` for a model built with
            `keras.layers.Dropout`), or, with `augment=True`, Keras random
            augmentation layers.
        samples: int >= 1, default 50. The number T of Monte Carlo samples.
        seed: int in [0, 2**32) or None, default None. With a seed, every
            `predict` call returns the same samples, and distinct seeds give
            distinct random streams; without one, fresh samples per call.
        max_batch: int >= 1 or None, default 16384 (`DEFAULT_MAX_BATCH`).
            The most rows in one forward pass (inputs x samples); bounds
            memory. None: all samples of a chunk of inputs in one pass. The
            default is measured (TensorFlow, shared 2-core CPU; a net
            10-50-50-1 with two Dropout(0.5), samples=10000, N=1000, extra
            peak host memory over the model alone / time of a predict):
            unbounded 1239 MiB / 125 s; 262144 rows 283 MiB / 87 s; 65536
            rows 374 MiB / 65-81 s; 16384 rows 239 MiB / 34-43 s; 4096 rows
            218 MiB / 50-58 s. 16384 is the fastest and within 10% of the
            smallest peak; the speed benchmark's passes (T=50 x 256 rows =
            12,800 rows) fit in one pass as before.
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
        if not isinstance(task, (str, list, tuple, dict)):
            raise v.invalid_type(owner, "task", "one of 'auto', 'classification', "
                                 "'regression' (or a list/dict, one per output)", task)
        if isinstance(task, str):
            v.check_option(owner, "task", task, _heads.TASKS)
        if not isinstance(from_logits, (list, tuple, dict)):
            _heads.check_from_logits(owner)(from_logits)
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
            warnings.warn(training_true_message(owner, forced), UserWarning, stacklevel=2)

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

    # -- compiled pieces -------------------------------------------------------
    def _call_input(self, inputs):
        """What the suffix takes: the frontier, or the model's input structure."""
        if self.split.prefix is not None:
            return inputs if len(inputs) > 1 else inputs[0]
        template = self._cache.get("in_template")
        if template is None:
            return inputs if len(inputs) > 1 else inputs[0]
        return keras.tree.pack_sequence_as(template, inputs)

    def _prefix(self):
        fn = self._cache.get("prefix")
        if fn is None:
            fn = self._cache["prefix"] = compile_inference(self._prefix_outputs,
                                                           self.model.variables)
        return fn

    def _prefix_outputs(self, xs):
        out = self.split.prefix(xs if len(xs) > 1 else xs[0], training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def _deterministic_outputs(self, frontier):
        out = self.split.suffix(self._call_input(frontier), training=False)
        return self.to_probabilities(keras.tree.flatten(out))

    def _sampler(self, tiles, spec):
        """The compiled function of one pass of `tiles` samples.

        `run(xs, seed, offset, acc=None)` returns a dict: the pass's
        `samples` (per output, left on the device) and, by `spec.stage`
        (see `_PassSpec`), the statistics of every output (`kreg.mc._stats`,
        float32): `"whole"` (the pass is the chunk: the prefix, when there is
        one, runs in the same call, and `stats` are finalized), `"first"`
        (the first pass of several: accumulators `acc`) or `"merge"` (`acc`
        merged with the ones passed in, and `stats` finalized from them).
        `"whole"` and `"first"` also return the deterministic outputs
        (`det`) when `spec.deterministic`. A chunk of several passes thus
        compiles two functions (its first pass is the one with the
        remainder of the samples, the others have `tiles` each).
        """
        key = ("sampler", tiles, self.joint, self.samples if self.joint else None,
               self._heads_key, spec)
        fn = self._cache.get(key)
        if fn is not None:
            return fn
        suffix = self.plan.noting_structure(self.split.suffix)
        prefix = self.split.prefix
        joint = self.joint
        total = self.samples
        plan = self.plan

        def transform(out):
            return self.to_probabilities(out)

        def run(xs, seed, offset, acc=None):
            frontier = xs
            if spec.stage == "whole" and prefix is not None:
                frontier = self._prefix_outputs(xs)
            outs = plan.sample(suffix, self._call_input(frontier), seed, tiles,
                               joint=joint, sample_offset=offset,
                               total_samples=total, transform=transform)
            result = {"samples": outs}
            if spec.stage == "whole":
                result["stats"] = [
                    _stats.statistics(o, kind, temp)
                    for o, kind, temp in zip(outs, spec.kinds, spec.temperatures)]
            else:
                stats = [_stats.pass_statistics(o, kind)
                         for o, kind in zip(outs, spec.kinds)]
                if spec.stage == "merge":
                    stats = [_stats.merge(a, b) for a, b in zip(acc, stats)]
                    result["stats"] = [_stats.finalize(a, kind)
                                       for a, kind in zip(stats, spec.kinds)]
                result["acc"] = stats
            if spec.deterministic:
                result["det"] = self._deterministic_outputs(frontier)
            return result

        fn = compile_inference(run, self.model.variables)
        self._cache[key] = fn
        return fn

    def _tempered(self, kind, temperature):
        """Compiled `kreg.mc._stats.tempered` (a chunk of several passes)."""
        key = ("tempered", kind, temperature)
        fn = self._cache.get(key)
        if fn is None:
            fn = self._cache[key] = compile_inference(
                lambda s: _stats.tempered(s, temperature, kind), [])
        return fn

    # -- running ---------------------------------------------------------------
    def _rows(self, batch_size):
        rows = batch_size or _DEFAULT_BATCH
        if self.max_batch is not None:
            rows = min(rows, self.max_batch)
        return rows

    def _run(self, owner, x, batch_size, verbose, *, deterministic=False,
             want_y=False, keep=lambda head: False):
        """Sample every chunk of x, reducing the samples where they are made.

        One compiled call per pass (`_sampler`): a chunk whose T samples fit
        in `max_batch` rows is one call, prefix and statistics included.
        Only the statistics (and the samples of the outputs where
        `keep(head)`, or every output in joint mode) are copied to the host.

        Returns:
            `(stats, samples, det, ys)`: per output, the finalized statistics
            (dicts of NumPy arrays, `kreg.mc._stats.finalize`; tempered where
            a temperature is set) and the (T, N, ...) samples (None where not
            kept); the deterministic outputs when asked (else None); the
            targets of a data stream.
        """
        t_total = self.samples
        rows = self._rows(batch_size)
        bar = keras.utils.Progbar(None, unit_name="pass") if verbose in (1, True) else None
        # The base seed: fixed per predictor seed, fresh per call otherwise.
        if self.seed is not None:
            base = self.seed
        else:
            base = int(self._rng.integers(0, 1 << SEED_BITS))
        chunks, kept_all, dets, ys_all = [], [], [], []
        spec = None
        done = calls = 0
        for xs, ys, template in _inputs.batches(owner, self.model, x, rows,
                                                want_y=want_y):
            if self.split.prefix is None and "in_template" not in self._cache:
                self._cache["in_template"] = template
            n = len(xs[0])
            if self.heads is None:
                self._first_call(xs)
            if spec is None:
                spec = _PassSpec.of(self.heads, self._temperatures)
                keep_idx = [k for k, h in enumerate(self.heads) if self.joint or keep(h)]
                tempered = [k for k, t in enumerate(spec.temperatures) if t is not None]
            padded = _bucket(n, rows)
            tensors = [ops.convert_to_tensor(_pad(a, padded)) for a in xs]
            tiles = t_total if self.max_batch is None else max(
                1, min(t_total, self.max_batch // padded))
            frontier = tensors
            if tiles < t_total and self.split.prefix is not None:
                frontier = self._prefix()(tensors)  # once for the chunk's passes
            starts = list(range(0, t_total, tiles))
            # The pass with the remainder of the samples first: every later
            # pass has `tiles` samples (two compiled functions per chunk size).
            # Seeds follow the sample order, not the order of the calls.
            acc, kept, res = None, {}, None
            for start in starts[-1:] + starts[:-1]:
                count = min(tiles, t_total - start)
                counter = 0 if self.joint else done + start // tiles
                if counter >= 1 << COUNTER_BITS:
                    raise v.invalid_value(
                        owner, "batch_size",
                        f"fewer than 2**{COUNTER_BITS} forward passes per call (a "
                        "larger batch_size or max_batch, or fewer inputs per call)",
                        batch_size)
                stage = ("whole" if len(starts) == 1 else "merge" if acc is not None
                         else "first")
                args = [frontier, self.plan.pass_seed(base, counter),
                        ops.convert_to_tensor(start, dtype="int32")]
                if acc is not None:
                    args.append(acc)
                out = self._sampler(count, spec._replace(
                    stage=stage, deterministic=deterministic and stage != "merge"))(*args)
                res = out if res is None else dict(res, **out)
                acc = out.get("acc")
                kept[start] = out["samples"]
                calls += 1
                if bar is None and verbose == "auto" and calls == 1 and (
                        len(starts) > 1 or len(xs[0]) == rows):
                    bar = keras.utils.Progbar(None, unit_name="pass")
                if bar is not None:
                    bar.update(calls)
            done += len(starts)
            kept = [kept[start] for start in starts]  # in sample order
            for k in tempered if len(starts) > 1 else ():  # needs every sample
                res["stats"][k].update(self._tempered(spec.kinds[k], spec.temperatures[k])(
                    ops.concatenate([p[k] for p in kept], axis=0)))
            chunks.append([_stats.to_host(st, n) for st in res["stats"]])
            kept_all.append({k: np.concatenate([ops.convert_to_numpy(p[k])[:, :n]
                                                for p in kept], axis=0)
                             for k in keep_idx})
            if deterministic:
                dets.append([ops.convert_to_numpy(d)[:n] for d in res["det"]])
            if want_y:
                ys_all.append(ys)
        heads = range(len(self.heads))
        stats = [_stats.join([c[k] for c in chunks]) for k in heads]
        samples = [np.concatenate([c[k] for c in kept_all], axis=1)
                   if k in keep_idx else None for k in heads]
        det = ([np.concatenate([d[k] for d in dets], axis=0) for k in heads]
               if deterministic else None)
        for head, st in zip(self.heads, stats):
            self._check_probabilities(owner, head, st)
        self._check_identical(stats)
        return stats, samples, det, ys_all

    def _check_identical(self, stats):
        """The safety net: warn once when every sample of every output is the same."""
        if self.samples < 2 or self._warned_identical:
            return
        if any(np.size(st["variance"]) == 0 or np.max(st["variance"]) > 0
               for st in stats):
            return
        self._warned_identical = True
        warnings.warn(
            f"MCPredictor: all {self.samples} samples are identical for every "
            "output, so the uncertainty is 0. The likely cause is noise that "
            "kreg cannot see: a subclassed model whose call runs its dropout only "
            "under `if training:` (call it unconditionally, "
            "`self.drop(h, training=training)`, and kreg samples it), or noise "
            "drawn without a layer (keras.random in a call). Sampling layers "
            f"found: {', '.join(layer.name for layer in self.plan.layers)}.",
            UserWarning, stacklevel=3)

    def _first_call(self, xs):
        """A subclassed model's outputs (structure, heads), from one row, eagerly."""
        one = [ops.convert_to_tensor(a[:1]) for a in xs]
        template = self._cache.get("in_template")
        arg = one[0] if template is None else keras.tree.pack_sequence_as(template, one)
        out = self.model(arg, training=False)
        self._cache["out_structure"] = keras.tree.map_structure(lambda _: None, out)
        self._ensure_heads(keras.tree.flatten(out))

    def _check_probabilities(self, owner, head, stats):
        """A classification output must hold probabilities (else: logits?).

        Read from the statistics' data checks (`kreg.mc._stats`); NaN
        samples are left to `MCPrediction`'s error, as before.
        """
        if head.task != "classification" or head.from_logits or float(stats["nan"]) > 0:
            return
        lo, hi = float(stats["low"]), float(stats["high"])
        range_tol, sum_tol = head.tolerances
        bad = lo < -range_tol or hi > 1 + range_tol
        if not bad and head.activation == "softmax":
            bad = float(stats["sum_error"]) > sum_tol
        if bad:
            raise v.invalid_value(
                owner, "from_logits",
                f"True for output {head.name!r}: it is read as class probabilities "
                f"(task='classification') but its values (in [{lo:.3g}, {hi:.3g}]) "
                "are not probabilities; pass from_logits=True for a logits output, "
                "or task='regression'", self.from_logits)

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
            parts = [_targets(owner, b, names) for b in ys]
            targets = [np.concatenate([p[k] for p in parts]) for k in range(len(names))]
        else:
            targets = _targets(owner, y, names)
        results = []
        for k, head in enumerate(self.heads):
            yk = _check_target(owner, "y" if len(names) == 1 else f"y[{names[k]!r}]",
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


class _PassSpec(collections.namedtuple(
        "_PassSpec", ["kinds", "temperatures", "stage", "deterministic"])):
    """What one compiled pass computes (hashable: part of its cache key).

    kinds: per output, `kreg.mc._stats.kind_of`; temperatures: per output
    (None: untempered); stage: `"whole"`, `"first"` or `"merge"` (see
    `MCPredictor._sampler`); deterministic: also return the deterministic
    outputs.
    """

    @classmethod
    def of(cls, heads, temperatures):
        kinds = tuple(_stats.kind_of(h.task, h.activation) for h in heads)
        return cls(kinds, tuple(temperatures), "whole", False)


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


def _targets(owner, y, names):
    """y as a flat list with one target array per output."""
    expected = ("the targets" if len(names) == 1 else
                f"targets for every output {names}: a list or a dict keyed by name")
    if isinstance(y, dict):
        if sorted(y) != sorted(names):
            raise v.invalid_value(owner, "y", expected, _inputs.describe(y))
        return [y[n] for n in names]
    if len(names) > 1:
        if not isinstance(y, (list, tuple)) or len(y) != len(names):
            raise v.invalid_value(owner, "y", expected, _inputs.describe(y))
        return list(y)
    if isinstance(y, tuple) and len(y) == 1:
        return [y[0]]
    return [y]


def _check_target(owner, name, y, head, out_shape):
    """Validate one output's targets; return them as a NumPy array."""
    n = out_shape[0]
    arr = _inputs.numeric_array(owner, name, y, "an array of numeric targets")
    if arr.ndim == 0 or len(arr) != n:
        raise v.invalid_value(owner, name, f"{n} targets, one per input row",
                              _inputs.describe(arr))
    if not np.all(np.isfinite(arr)):
        raise v.invalid_value(owner, name, "finite targets (no NaN or inf)",
                              _inputs.describe(arr))
    per_row = int(np.prod(out_shape[1:], dtype=np.int64))
    if head.task == "regression":
        if arr[0].size != per_row:
            raise v.invalid_value(owner, name, f"targets of shape {(n,) + out_shape[1:]}",
                                  _inputs.describe(arr))
        return arr
    classes = out_shape[-1] if len(out_shape) > 1 else 1
    if head.activation == "sigmoid":
        if arr[0].size != per_row or arr.min() < 0 or arr.max() > 1:
            raise v.invalid_value(
                owner, name, f"0/1 targets (or probabilities in [0, 1]) of shape "
                f"{(n,) + out_shape[1:]}", _inputs.describe(arr))
        return arr
    if arr.ndim == 2 and arr.shape[1] == classes and classes > 1:
        if arr.min() < 0 or arr.max() > 1 or np.max(np.abs(arr.sum(axis=1) - 1)) > 1e-3:
            raise v.invalid_value(owner, name, "one-hot (or probability) rows that "
                                  "sum to 1", _inputs.describe(arr))
        return arr
    if arr[0].size != 1:
        raise v.invalid_value(owner, name, f"integer labels (N,) or one-hot (N, {classes})",
                              _inputs.describe(arr))
    labels = arr.reshape(-1)
    if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= classes:
        raise v.invalid_value(owner, name, f"integer labels in [0, {classes - 1}] "
                              f"({classes} classes)",
                              _inputs.describe(np.unique(labels)[:10]))
    return labels.astype("int64")
