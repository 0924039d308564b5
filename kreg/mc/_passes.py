"""Running Monte Carlo passes: the compiled functions, the chunk and pass loops.

`PassRunner` is the machinery behind `kreg.MCPredictor` (its base class):
inputs are cut into chunks of rows (`_run`, the chunk loop), each chunk's T
samples run in one or more compiled passes of `tiles` samples (`_run_chunk`,
the pass loop) whose statistics are reduced where the samples are made
(`kreg.mc._stats`) and merged across passes; only the statistics (and the
samples asked for) reach the host. The predictor holds the user's settings
(`samples`, `seed`, `max_batch`, `joint`, the temperatures) and the plan.
"""

import collections
import warnings

import keras
import numpy as np
from keras import ops

from kreg import _validation as v
from kreg._compile import compile_inference
from kreg.layers._seeds import COUNTER_BITS
from kreg.layers._seeds import SEED_BITS
from kreg.mc import _inputs
from kreg.mc import _stats

# A user seed s in [0, 2**32) and the pass counter c < 2**20 of a predict
# call become kreg's pass seed through `kreg.layers._seeds.encode_seed`, one
# to one, so distinct seeds (and passes) give distinct random streams.
_DEFAULT_BATCH = 256


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


class _PassSpec(collections.namedtuple(
        "_PassSpec", ["kinds", "temperatures", "stage", "deterministic"])):
    """What one compiled pass computes (hashable: part of its cache key).

    kinds: per output, `kreg.mc._stats.kind_of`; temperatures: per output,
    whether it is tempered (the values are an input of the compiled function,
    so predictors with other temperatures share it); stage: `"whole"`, `"first"` or `"merge"` (see
    `MCPredictor._sampler`); deterministic: also return the deterministic
    outputs.
    """

    @classmethod
    def of(cls, heads, temperatures):
        kinds = tuple(_stats.kind_of(h.task, h.activation) for h in heads)
        return cls(kinds, tuple(t is not None for t in temperatures), "whole", False)



class _Progress:
    """The progress bar of a call: shown with verbose=1, or "auto" once it is long."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.calls = 0
        self.bar = (keras.utils.Progbar(None, unit_name="pass")
                    if verbose in (1, True) else None)

    def update(self, several):
        """Count one pass; `several`: the call has (or will have) more than one."""
        self.calls += 1
        if self.bar is None and self.verbose == "auto" and self.calls == 1 and several:
            self.bar = keras.utils.Progbar(None, unit_name="pass")
        if self.bar is not None:
            self.bar.update(self.calls)


class PassRunner:
    """The compiled passes and loops of `kreg.MCPredictor` (its base class).

    Reads the predictor's `plan`, `samples`, `seed`, `max_batch`, `joint`,
    `heads`, `_temperatures` and `_cache` (the plan's compiled functions).
    """

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
            fn = self._cache["prefix"] = compile_inference(
                self._prefix_outputs, self.model.variables, batch_args=(0,))
        return fn

    def _prefix_outputs(self, xs):
        out = self.split.prefix(xs if len(xs) > 1 else xs[0], training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def _deterministic_outputs(self, frontier):
        out = self.split.suffix(self._call_input(frontier), training=False)
        return self.to_probabilities(keras.tree.flatten(out))

    def _sampler(self, tiles, spec):
        """The compiled function of one pass of `tiles` samples.

        `run(xs, seed, offset, temperatures, acc=None)` returns a dict: the pass's
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

        def run(xs, seed, offset, temps, acc=None):
            frontier = xs
            if spec.stage == "whole" and prefix is not None:
                frontier = self._prefix_outputs(xs)
            outs = plan.sample(suffix, self._call_input(frontier), seed, tiles,
                               joint=joint, sample_offset=offset,
                               total_samples=total, transform=transform)
            result = {"samples": outs}
            if spec.stage == "whole":
                result["stats"] = [
                    _stats.statistics(o, kind, temps[k] if tempered else None)
                    for k, (o, kind, tempered) in enumerate(
                        zip(outs, spec.kinds, spec.temperatures))]
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

        # The inputs' and accumulators' rows are traced once as unknown.
        fn = compile_inference(run, self.model.variables, batch_args=(0, 4))
        self._cache[key] = fn
        return fn

    def _tempered(self, kind):
        """Compiled `kreg.mc._stats.tempered(samples, temperature)` (several passes)."""
        key = ("tempered", kind)
        fn = self._cache.get(key)
        if fn is None:
            fn = self._cache[key] = compile_inference(
                lambda s, t: _stats.tempered(s, t, kind), [], batch_args=(0,))
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

        The chunk loop: x is cut into chunks of at most `batch_size` rows
        (`kreg.mc._inputs.batches`), each padded to a power of two so that
        few functions compile, and sampled by `_run_chunk`. Only the
        statistics (and the samples of the outputs where `keep(head)`, or
        every output in joint mode) are copied to the host.

        Returns:
            `(stats, samples, det, ys)`: per output, the finalized statistics
            (dicts of NumPy arrays, `kreg.mc._stats.finalize`; tempered where
            a temperature is set) and the (T, N, ...) samples (None where not
            kept); the deterministic outputs when asked (else None); the
            targets of a data stream.
        """
        rows = self._rows(batch_size)
        progress = _Progress(verbose)
        # The base seed: fixed per predictor seed, fresh per call otherwise.
        if self.seed is not None:
            base = self.seed
        else:
            base = int(self._rng.integers(0, 1 << SEED_BITS))
        chunks, kept_all, dets, ys_all = [], [], [], []
        spec = None
        done = 0
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
            res, kept, passes = self._run_chunk(
                owner, xs, rows, spec._replace(deterministic=deterministic), base,
                done, batch_size, progress)
            done += passes
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

    def _run_chunk(self, owner, xs, rows, spec, base, done, batch_size, progress):
        """The pass loop: the T samples of one chunk, in passes of `tiles` samples.

        A chunk whose T samples fit in `max_batch` rows is one compiled call,
        prefix and statistics included; otherwise the prefix runs once, the
        passes accumulate their statistics (`spec.stage` "first", then
        "merge"), and a tempered output is tempered over all its samples.

        Returns:
            `(result, kept, passes)`: the last pass's result (finalized `stats`,
            `det`), every pass's samples in sample order, the number of passes.
        """
        t_total = self.samples
        padded = _bucket(len(xs[0]), rows)
        tensors = [ops.convert_to_tensor(_pad(a, padded)) for a in xs]
        tiles = t_total if self.max_batch is None else max(
            1, min(t_total, self.max_batch // padded))
        frontier = tensors
        if tiles < t_total and self.split.prefix is not None:
            frontier = self._prefix()(tensors)  # once for the chunk's passes
        temps = self._temperature_tensor()
        starts = list(range(0, t_total, tiles))
        # The pass with the remainder of the samples first: every later pass
        # has `tiles` samples (two compiled functions per chunk size). Seeds
        # follow the sample order, not the order of the calls.
        acc, kept, res = None, {}, None
        for start in starts[-1:] + starts[:-1]:
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
                    ops.convert_to_tensor(start, dtype="int32"), temps]
            if acc is not None:
                args.append(acc)
            out = self._sampler(min(tiles, t_total - start), spec._replace(
                stage=stage, deterministic=spec.deterministic and stage != "merge"))(*args)
            res = out if res is None else dict(res, **out)
            acc = out.get("acc")
            kept[start] = out["samples"]
            progress.update(several=len(starts) > 1 or len(xs[0]) == rows)
        kept = [kept[start] for start in starts]  # in sample order
        if len(starts) > 1:  # tempering needs every sample
            for k, tempered in enumerate(spec.temperatures):
                if tempered:
                    res["stats"][k].update(self._tempered(spec.kinds[k])(
                        ops.concatenate([p[k] for p in kept], axis=0), temps[k]))
        return res, kept, len(starts)

    def _temperature_tensor(self):
        """The temperatures as an input of the compiled passes (1 where untempered)."""
        return ops.convert_to_tensor(
            np.array([1.0 if t is None else t for t in self._temperatures], "float32"))

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

