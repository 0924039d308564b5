"""Export a model to a TensorFlow SavedModel with a Monte Carlo endpoint.

TensorFlow only. The SavedModel format, `keras.export.ExportArchive` and the
stateless random ops that the Monte Carlo signatures are built from are
TensorFlow's; on another Keras backend `kreg.export` raises a `ValueError`
(export from a process with `KERAS_BACKEND=tensorflow`). TensorFlow is
imported inside the functions, so `import kreg` works on every backend.
(The module is `kreg.serving`, not `kreg.export`, so that no import of the
module can shadow the function `kreg.export`.)

The SavedModel needs neither kreg nor Keras to run: `tf.saved_model.load`,
TensorFlow Serving and `saved_model_cli` see three signatures:

- `serve(x)`: deterministic inference, `model(x, training=False)`, the same
  numbers as `model.predict(x)`.
- `serve_mc(x)`: Monte Carlo averaging over `mc_samples` samples of kreg's
  stochastic layers (every other layer, BatchNormalization included, in
  inference mode; the layers before the first stochastic layer computed once
  per input). Fresh randomness on every call and on every load: the seed is
  mixed from the clock (`tf.timestamp()`) and a per-load call counter, so
  server replicas loaded from one file do not replay one "random" sequence.
- `serve_mc_seeded(x, seed)`: the same computation with a given scalar int64
  `seed` (modulo 2**52; `serve_mc` draws its seeds uniformly below 2**52):
  the same seed and the same request give the same result in any
  process (each row's masks depend on its position in the tiled batch, so a
  row sent in another batch gets other samples). A SavedModel signature has
  no optional inputs, so this separate signature is the honest form of "an
  optional seed". Its scalar `seed` means that TensorFlow Serving's REST API
  takes it in the columnar form (`{"inputs": {"x": [...], "seed": 7}}`), not
  the row form (`"instances"`).

The Monte Carlo signatures return a dict: `mean` and `std` (over samples,
1/T normalization, as `kreg.MCPrediction`), for classifiers (softmax or
sigmoid outputs) `entropy` and `mutual_information` (nats, the definitions
of `kreg.MCPrediction`), and `seed`, shape (N,): the seed of the call for
every row, so that `serve_mc_seeded` can replay any `serve_mc` call.

Models with several outputs get one group of keys per output,
`<output>_mean`, `<output>_std`, ... (see `export`), and one `seed`. With
`temperature=T`, `mean`, `std`, `entropy` and `mutual_information` are the
tempered ones of `kreg.MCPredictor(..., temperature=T)`. Requests are
processed in chunks of `max_batch // mc_samples` rows by a `tf.while_loop`
in the graph, so memory is bounded whatever the request size.

Signature inputs are named after the model's inputs (`keras.Input(...,
name="x")`; Keras's default name is `keras_tensor`), as in `model.export`.

ONNX: `model.export(path, format="onnx")` (extra `kreg[onnx]`: tf2onnx,
onnx, onnxruntime; call the model once first) serves the deterministic
model, kreg's layers included. The Monte Carlo graph cannot go to ONNX:
tf2onnx has no conversion for TensorFlow's stateless random ops (ONNX's
random ops take a fixed seed attribute, not a seed tensor), so it logs
`Unsupported ops: Counter({'StatelessRandomUniformV2': ...})`, writes a
file anyway, and onnxruntime refuses it with `[ONNXRuntimeError] : 10 :
INVALID_GRAPH : ... StatelessRandomUniformV2 ...`. Serve Monte Carlo
predictions from the SavedModel.
"""

import os
import shutil

import keras

from kreg import _compat
from kreg import _validation as v
from kreg._extras import require_tensorflow_backend
from kreg.layers import _seeds
from kreg.mc import _stats
from kreg.mc._heads import output_key
from kreg.mc.plan import DEFAULT_MAX_BATCH
from kreg.mc.plan import SamplingPlan
from kreg.mc.plan import check_temperature_value
from kreg.mc.plan import resolve_temperatures

OWNER = "export"
SIGNATURES = ("serve", "serve_mc", "serve_mc_seeded")


def check_tensorflow(owner):
    """Raise kreg's error unless Keras runs on the TensorFlow backend.

    Without TensorFlow installed: a one-line `kreg._extras.MissingExtraError`
    (a ModuleNotFoundError) naming `pip install "kreg[tensorflow]"`; with it,
    on another backend: kreg's ValueError for the argument `backend`.
    """
    require_tensorflow_backend(owner, "SavedModel export is TensorFlow-only")


def _input_signature(model, input_signature):
    if input_signature is None:
        try:
            input_signature = _compat.export_input_signature(model)
        except ValueError as err:
            raise ValueError(
                v.error_message(
                    OWNER, "model",
                    "a model with known inputs (call it once, or pass "
                    f"`input_signature`) [{err}]",
                    model.name,
                )
            ) from None
    elif not isinstance(input_signature, (list, tuple)):
        input_signature = [input_signature]
    try:
        specs = [keras.tree.map_structure(_compat.make_tf_tensor_spec, s)
                 for s in input_signature]
    except (TypeError, ValueError) as err:
        raise type(err)(v.error_message(
            OWNER, "input_signature",
            "None or a list of keras.InputSpec (with shape and dtype) or "
            f"tf.TensorSpec [{err}]", input_signature)) from None
    _check_shapes(model, specs)
    return specs


def _check_shapes(model, specs):
    """A given signature must fit the model's inputs (when it has static ones)."""
    try:
        inputs = keras.tree.flatten(model.inputs)
    except (AttributeError, ValueError):  # a subclassed model: nothing to compare
        return
    given = keras.tree.flatten(specs)
    if not inputs or len(given) != len(inputs):
        return
    for spec, tensor in zip(given, inputs):
        expected = tuple(tensor.shape)
        shape = spec.shape
        fits = shape.rank == len(expected) and all(
            a is None or b is None or a == b for a, b in zip(shape.as_list(), expected))
        if not fits:
            raise v.invalid_value(
                OWNER, "input_signature", "specs of the shapes the model's inputs "
                f"accept ({', '.join(str(tuple(t.shape)) for t in inputs)})",
                [tuple(s.shape.as_list()) for s in given])


def _summary(samples, task, activation, temperature=None):
    """In-graph mean, std and (classification) entropy split of (T, N, ...).

    `kreg.mc._stats.statistics`, as `MCPredictor` computes them (tempered as
    `MCPredictor(..., temperature=T)` with a `temperature`), in the
    samples' dtype.
    """
    import tensorflow as tf

    stats = _stats.statistics(samples, _stats.kind_of(task, activation), temperature)
    out = {"mean": stats["mean"], "std": tf.sqrt(stats["variance"])}
    if task == "classification":
        out["entropy"] = stats["entropy"]
        out["mutual_information"] = stats["mutual_information"]
    return {key: tf.cast(value, samples.dtype) for key, value in out.items()}


def _summaries(samples, heads, temperatures):
    """The signature's outputs: one group per model output (see `export`)."""
    if len(heads) == 1:
        return _summary(samples[0], heads[0].task, heads[0].activation,
                        temperatures[0])
    out = {}
    for sample, head, temp in zip(samples, heads, temperatures):
        for key, value in _summary(sample, head.task, head.activation, temp).items():
            out[f"{output_key(head.name)}_{key}"] = value
    return out


def _check_output_keys(heads):
    keys = [output_key(h.name) for h in heads]
    if len(heads) > 1 and (len(set(keys)) != len(keys) or "seed" in keys):
        raise v.invalid_value(
            OWNER, "model",
            "outputs whose names stay distinct as signature keys (letters, "
            "digits and _; `seed` is taken): rename the output layers",
            [h.name for h in heads])


def _rows_per_pass(max_batch, mc_samples):
    """Input rows per forward pass (max_batch // mc_samples), or None: all."""
    if max_batch is None:
        return None
    if max_batch < mc_samples:
        raise v.invalid_value(
            OWNER, "max_batch",
            f"an int >= mc_samples ({mc_samples}) or None: a pass holds every "
            "Monte Carlo sample of at least one input row", max_batch)
    return max_batch // mc_samples


def _endpoints(model, mc_samples, task, input_signature=None, *, temperature=None,
               from_logits=None, max_batch=None, joint=False, augment=False,
               conformal=None):
    """The Python functions behind the three signatures, and the input specs.

    Returns `({"serve": f, "serve_mc": f, "serve_mc_seeded": f}, specs)`:
    `serve(x)`, `serve_mc(x)`, `serve_mc_seeded(x, seed)`, to be traced with
    `specs` (plus a scalar int64 seed for the seeded one).
    """
    import tensorflow as tf

    # MCPredictor's plan: the split (prefix computed once), layer streams, heads;
    # it refuses a model in which nothing samples.
    plan = SamplingPlan(OWNER, model, task=task, from_logits=from_logits,
                        augment=augment)
    specs = _input_signature(model, input_signature)
    if len(specs) != 1:
        raise v.invalid_value(
            OWNER, "model",
            "a model whose call takes one input argument (a tensor, or a "
            "list/dict of tensors for a multi-input Functional model)",
            f"{model.name} with {len(specs)} input arguments")
    if any(getattr(spec, "name", None) == "seed" for spec in keras.tree.flatten(specs)):
        raise v.invalid_value(
            OWNER, "input_signature",
            "inputs not named 'seed' (the name of serve_mc_seeded's seed input): "
            "rename the model input or pass an input_signature with other names",
            [spec.name for spec in keras.tree.flatten(specs)])
    rows_per_pass = _rows_per_pass(max_batch, mc_samples)
    if plan.heads is not None:  # known outputs: check before tracing
        resolve_temperatures(OWNER, plan.heads, temperature)
        _check_output_keys(plan.heads)
    split = plan.split
    seed_dtype = plan.seed_dtype
    calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="kreg_mc_calls")

    def chunk(x, user, high, index):
        """The summaries of one pass over rows x; `index` counts the passes."""
        if split.prefix is not None:
            frontier = split.prefix(x, training=False)
            frontier = list(frontier) if isinstance(frontier, (list, tuple)) else [frontier]
            arg = frontier if len(frontier) > 1 else frontier[0]
        else:
            arg = x
        # kreg's sampling seed from the request's (kreg.layers._seeds): pass
        # i of seed s is pass 0 of seed s + i * 2**32 (MCPredictor's counter),
        # and joint samples do not depend on the pass.
        counter = high if joint else tf.math.floormod(high + index,
                                                      1 << _seeds.COUNTER_BITS)
        base = tf.cast(tf.stack(_seeds.encode_seed(user, counter)), seed_dtype)
        samples = plan.sample(split.suffix, arg, base, mc_samples, joint=joint,
                              total_samples=mc_samples,
                              transform=plan.to_probabilities)
        heads = plan.heads
        _check_output_keys(heads)
        return _summaries(samples, heads,
                          resolve_temperatures(OWNER, heads, temperature))

    def mc(x, seed):
        user, high = _seeds.split_request_seed(seed)
        rows = tf.shape(keras.tree.flatten(x)[0])[:1]
        if rows_per_pass is None:
            out = chunk(x, user, high, tf.constant(0, tf.int64))
        else:
            out = _chunked(x, rows[0], rows_per_pass,
                           lambda xc, i: chunk(xc, user, high, i))
        if conformal:  # kreg.conformal: sets / intervals from the summaries
            from kreg.conformal import _tf as conformal_tf
            out.update(conformal_tf.outputs(OWNER, out, conformal, plan.heads, seed,
                                            model))
        out["seed"] = tf.fill(rows, seed)
        return out

    def serve(x):
        return model(x, training=False)

    def serve_mc(x):
        # Entropy at run time: the clock's bits and a call counter (the
        # counter alone restarts from its saved value on every load).
        count = calls.assign_add(1)
        clock = tf.bitcast(tf.timestamp(), tf.int64)
        seed = tf.random.stateless_uniform(
            [], seed=tf.stack([clock, count]), minval=0,
            maxval=tf.constant(1 << _seeds.REQUEST_SEED_BITS, tf.int64), dtype=tf.int64)
        return mc(x, seed)

    def serve_mc_seeded(x, seed):
        return mc(x, tf.cast(seed, tf.int64))

    endpoints = {"serve": serve, "serve_mc": serve_mc,
                 "serve_mc_seeded": serve_mc_seeded}
    return endpoints, specs


def _check_target(path, overwrite):
    """Validate the SavedModel directory `path`; returns it as a str."""
    path = os.fsdecode(os.fspath(path))
    if not path:
        raise v.invalid_value(
            OWNER, "path", "a non-empty path (the SavedModel directory to write; "
            "'./name' for one in the current directory)", path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise v.invalid_value(OWNER, "path", "a directory path (a file exists there)",
                              path)
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise v.invalid_value(
                OWNER, "path", "a new or empty directory (it holds files: "
                "pass overwrite=True to replace a SavedModel written there)", path)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise v.invalid_value(
                OWNER, "path", "a new or empty directory, or with overwrite=True "
                "a SavedModel directory (it holds files but no saved_model.pb: "
                "kreg does not delete it)", path)
    return path


def _chunked(x, n, rows, fn):
    """`fn(rows of x, pass index)` over consecutive chunks of `rows` rows.

    A `tf.while_loop`: one chunk's tiled batch (rows x samples) lives at a
    time, and the per-row summaries are concatenated. The first chunk runs
    before the loop (it fixes the outputs' keys and dtypes).
    """
    import tensorflow as tf

    def take(i):
        start = i * rows
        stop = tf.minimum(start + rows, n)
        return keras.tree.map_structure(lambda t: t[start:stop], x)

    first = fn(take(0), tf.constant(0, tf.int64))
    keys = sorted(first)
    chunks = (n + rows - 1) // rows
    arrays = [tf.TensorArray(first[k].dtype, size=tf.maximum(chunks, 1),
                             infer_shape=False).write(0, first[k]) for k in keys]

    def body(i, arrays):
        out = fn(take(i), tf.cast(i, tf.int64))
        return i + 1, [a.write(i, out[k]) for a, k in zip(arrays, keys)]

    _, arrays = tf.while_loop(lambda i, _: i < chunks, body, (tf.constant(1), arrays))
    return {k: a.concat() for k, a in zip(keys, arrays)}


def export(model, path, *, mc_samples=50, task="auto", input_signature=None,
           verbose=False, overwrite=False, temperature=None, from_logits=None,
           max_batch=DEFAULT_MAX_BATCH, joint=False, augment=False, conformal=None,
           moments=False):
    """Write a TensorFlow SavedModel with deterministic and Monte Carlo signatures.

    The SavedModel (written by `keras.export.ExportArchive`) runs without
    kreg or Keras: load it with `tf.saved_model.load(path)` or serve it with
    TensorFlow Serving. Its signatures are `serve` (deterministic,
    `== model.predict`), `serve_mc` (Monte Carlo averaging, fresh randomness
    on every call and every load) and `serve_mc_seeded` (the same with an
    int64 `seed` input, taken modulo 2**52; the same seed gives the same
    result anywhere, and for `0 <= seed < 2**32` the same numbers as
    `kreg.MCPredictor(model, mc_samples, seed=seed).predict(x,
    batch_size=len(x))`). The first one,
    `serve`, is also `serving_default`. See the module docstring for the
    outputs.

    A request's rows are tiled `mc_samples` times (the layers before the
    first stochastic layer run once per input) in passes of at most
    `max_batch // mc_samples` rows: a `tf.while_loop` inside the graph runs
    the chunks one after another, so memory is bounded whatever the request
    size. Pass i of a request with seed s draws the samples of pass 0 with
    seed `s + i * 2**32` (as `MCPredictor`'s pass counter), so rows
    `[i * r, (i + 1) * r)` of a big request (r = `max_batch // mc_samples`)
    get exactly what a request of those rows alone with that seed gets; with
    `joint=True` the samples do not depend on the chunking at all.

    Several outputs: the Monte Carlo signatures return one group of keys per
    model output, prefixed with the output's name (`model.output_names`,
    characters other than letters, digits and `_` replaced by `_`):
    `<output>_mean`, `<output>_std` and, for classification outputs,
    `<output>_entropy` and `<output>_mutual_information`, plus one `seed`.
    A model with one output keeps the unprefixed keys. Logits outputs
    (`from_logits`) are served as probabilities (each sample passed through
    its softmax/sigmoid before the average, as `MCPredictor`); `serve`
    returns what `model.predict` returns. Several inputs (a list or dict):
    the signatures' inputs are named after the model's inputs.

    Args:
        model: a built Keras model (Sequential, Functional or subclassed)
            with one input argument (a tensor, list or dict), one or more
            outputs and at least one kreg stochastic layer with rate > 0.
        path: str or path-like. The SavedModel directory to write.
        mc_samples: int >= 1, default 50. Monte Carlo samples per request.
        task: `"auto"` (default: classification for softmax/sigmoid outputs,
            else regression), `"classification"` or `"regression"`. Only
            classification adds `entropy` and `mutual_information`.
        input_signature: None (default: taken from the model) or a list of
            `keras.InputSpec`/`tf.TensorSpec`, as in `model.export`.
        verbose: bool, default False. Print the signatures written.
        overwrite: bool, default False. Whether to replace a SavedModel
            already at `path`. Without it a non-empty directory at `path` is
            an error (Keras's `model.export` would mix the new files with
            the old ones); with it the old SavedModel directory (one holding
            `saved_model.pb`) is removed just before the new one is written.
            A non-empty directory that is not a SavedModel is never removed.
        temperature: None (default), a float > 0, or a list/dict with one per
            output (None for an output left alone). Temperature scaling baked
            into `serve_mc` and `serve_mc_seeded`, with the meaning of
            `MCPredictor(..., temperature=T)`: `mean` is
            `softmax(log(pbar) / T)` of the MC mean pbar, and `std`,
            `entropy` and `mutual_information` are those of
            `kreg.calibration.tempered_uncertainty_ops`. An error for a
            regression output. `serve` is not tempered.
        from_logits: None (default: from the compiled loss), True/False, or
            a list/dict with one per output, as in `MCPredictor`.
        max_batch: int >= mc_samples or None, default 16384
            (`kreg.mc.plan.DEFAULT_MAX_BATCH`). The most rows (inputs x
            samples) in one forward pass; None: every request in one pass.
        joint: bool, default False. Joint samples (sample t is one network
            for every row of a request), as `MCPredictor(..., joint=True)`.
        augment: bool, default False. The Monte Carlo signatures also sample
            the model's Keras random augmentation layers (test-time
            augmentation), as `MCPredictor(..., augment=True)`. Their ops
            (stateless random draws, image transforms) are TensorFlow ops
            and go into the SavedModel like the dropout masks; `serve` stays
            `model.predict`.
        conformal: None (default), a fitted `kreg.conformal.SplitConformal`
            or a list of them (one per output, chosen by their `output`).
            The Monte Carlo signatures also return its prediction sets
            (`set`, bool (N, K)) or intervals (`lower`, `upper`), computed
            in the graph from the served `mean` (and `std`), prefixed
            `<output>_` for a model with several outputs. Fit it on what
            the signature serves (the same `mc_samples`, `temperature`).
            Randomized APS/RAPS draw their uniforms from the request's seed
            (`serve_mc_seeded` replays a `serve_mc` call's sets).
        moments: bool, default False. Also write a `serve_moments(x)`
            signature: `kreg.MomentPredictor(model, task=task,
            from_logits=from_logits)` in one deterministic pass (keys `mean`,
            `std` and, for classifiers, `entropy` and `mutual_information`;
            see `kreg.mc.moments.moments_endpoint` and docs/moments.md).

    Returns:
        None. The SavedModel is written to `path`.

    Example:

    >>> import os, tempfile, keras, numpy as np, tensorflow as tf, kreg
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     kreg.layers.Dropout(0.5), keras.layers.Dense(3, activation="softmax")])
    >>> path = os.path.join(tempfile.mkdtemp(), "served")
    >>> kreg.export(model, path, mc_samples=20)
    >>> served = tf.saved_model.load(path)
    >>> sorted(served.signatures)
    ['serve', 'serve_mc', 'serve_mc_seeded', 'serving_default']
    >>> x = np.ones((2, 4), "float32")
    >>> out = served.serve_mc(x)
    >>> sorted(out)
    ['entropy', 'mean', 'mutual_information', 'seed', 'std']
    >>> bool(np.allclose(served.serve(x), model.predict(x, verbose=0), atol=1e-6))
    True
    >>> a = served.serve_mc_seeded(x, tf.constant(7, tf.int64))["mean"]
    >>> b = served.serve_mc_seeded(x, tf.constant(7, tf.int64))["mean"]
    >>> bool(np.array_equal(a, b))
    True

    References:
        Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016
        (Monte Carlo dropout); Depeweg et al. 2018 and Houlsby et al. 2011
        (entropy and mutual information).
    """
    check_tensorflow(OWNER)
    if not isinstance(model, keras.Model):
        raise v.invalid_type(OWNER, "model", "a Keras model", model)
    if not model.built:
        raise v.invalid_value(OWNER, "model",
                              "a built model (call it or build it first)", model.name)
    if not isinstance(path, (str, os.PathLike)):
        raise v.invalid_type(OWNER, "path", "a str or path-like", path)
    mc_samples = v.check_int(OWNER, "mc_samples", mc_samples, low=1)
    if isinstance(task, str) or not isinstance(task, (list, tuple, dict)):
        task = v.check_option(OWNER, "task", task,
                              ("auto", "classification", "regression"))
    verbose = v.check_bool(OWNER, "verbose", verbose)
    overwrite = v.check_bool(OWNER, "overwrite", overwrite)
    path = _check_target(path, overwrite)
    max_batch = v.check_int(OWNER, "max_batch", max_batch, low=1, allow_none=True)
    joint = v.check_bool(OWNER, "joint", joint)
    augment = v.check_bool(OWNER, "augment", augment)
    if not isinstance(temperature, (list, tuple, dict)):
        check_temperature_value(OWNER)(temperature)
    if conformal is not None:
        from kreg.conformal import _tf as conformal_tf
        conformal = conformal_tf.check(OWNER, conformal)
    moments = v.check_bool(OWNER, "moments", moments)

    import tensorflow as tf

    endpoints, specs = _endpoints(model, mc_samples, task, input_signature,
                                  temperature=temperature, from_logits=from_logits,
                                  max_batch=max_batch, joint=joint, augment=augment,
                                  conformal=conformal)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", endpoints["serve"], specs)
    archive.add_endpoint("serve_mc", endpoints["serve_mc"], specs)
    archive.add_endpoint("serve_mc_seeded", endpoints["serve_mc_seeded"],
                         specs + [tf.TensorSpec([], tf.int64, name="seed")])
    if moments:  # analytic moment propagation (kreg.mc.moments)
        from kreg.mc.moments import moments_endpoint

        archive.add_endpoint("serve_moments", moments_endpoint(
            model, task=task, from_logits=from_logits), specs)
    if os.path.isdir(path) and os.listdir(path):  # a SavedModel, overwrite=True
        shutil.rmtree(path)
    archive.write_out(path, verbose=verbose)
