"""TensorFlow only: `SplitConformal` sets and intervals inside a SavedModel.

`kreg.export(model, path, conformal=cp)` calls `check` on the argument and,
in the Monte Carlo signatures, `outputs` on the summaries that `serve_mc`
returns: the sets (intervals) of `cp.predict` on the served MC mean (and
std), computed in the graph with the scores of `kreg.conformal._scores`
(one definition for both), in float64. The uniforms of randomized APS/RAPS
are drawn from the request's seed (`tf.random.stateless_uniform`), so
`serve_mc_seeded` replays a `serve_mc` call's sets exactly. Nothing here is
imported by `import kreg`.
"""

import types

import numpy as np

from kreg import _validation as v
from kreg.conformal import _scores
from kreg.conformal.split_conformal import SplitConformal


def _tf_ops():
    import tensorflow as tf

    return types.SimpleNamespace(
        argsort_desc=lambda p: tf.argsort(-p, axis=-1, stable=True),
        argsort=lambda a: tf.argsort(a, axis=-1, stable=True),
        take=lambda a, idx: tf.gather(a, idx, batch_dims=1),
        cumsum=lambda a: tf.cumsum(a, axis=-1),
        maximum=tf.maximum,
        as_float=lambda a, like: tf.cast(a, like.dtype),
    )


def check(owner, conformal):
    """`export`'s `conformal`: a fitted SplitConformal or a list of them.

    Returns the list.
    """
    expected = "None, a fitted kreg.conformal.SplitConformal or a list of them"
    items = list(conformal) if isinstance(conformal, (list, tuple)) else [conformal]
    if not items:
        raise v.invalid_value(owner, "conformal", expected, conformal)
    for cp in items:
        if not isinstance(cp, SplitConformal):
            raise v.invalid_type(owner, "conformal", expected, cp)
        if not cp.fitted:
            raise v.invalid_value(owner, "conformal", expected + " (call fit(pred, "
                                  "y) on calibration data first)", cp)
    outputs = [cp.output for cp in items]
    if len(set(map(repr, outputs))) != len(outputs):
        raise v.invalid_value(owner, "conformal", "one SplitConformal per output "
                              "(distinct `output`)", outputs)
    return items


def _head_index(owner, cp, heads):
    names = [h.name for h in heads]
    if len(heads) == 1 and cp.output in (None, 0, names[0]):
        return 0
    if cp.output in names:
        return names.index(cp.output)
    if isinstance(cp.output, int) and not isinstance(cp.output, bool) and (
            0 <= cp.output < len(heads)):
        return cp.output
    raise v.invalid_value(
        owner, "conformal", "SplitConformal(..., output=name) naming one of the "
        "model's outputs: " + ", ".join(repr(n) for n in names), cp.output)


# Folded with the request's seed into the uniforms of conformal object i:
# streams apart from the dropout masks' (which use kreg.layers._seeds).
_UNIFORM_SALT = 0x636F6E66  # "conf"


def uniforms(seed, rows, index):
    """The uniforms (rows,) float64 of randomized scores for a request's seed."""
    import tensorflow as tf

    key = tf.stack([tf.cast(seed, tf.int64), tf.constant(_UNIFORM_SALT + index, tf.int64)])
    return tf.random.stateless_uniform(tf.reshape(rows, [1]), seed=key, dtype=tf.float64)


def _units(model, name, summary_mean):
    """The number of units of output `name`, if known before serving (else None)."""
    def count(shape):
        if getattr(shape, "rank", 0) is None:  # a tf.TensorShape of unknown rank
            return None
        dims = tuple(shape)[1:]
        return None if any(d is None for d in dims) else int(np.prod(dims, dtype=int))

    units = count(summary_mean.shape)
    if units is None:
        try:
            outputs, names = model.outputs, list(model.output_names)
        except (AttributeError, ValueError):  # a subclassed model
            return None
        if outputs and len(outputs) == len(names) and name in names:
            units = count(outputs[names.index(name)].shape)
    return units


def outputs(owner, summary, conformal, heads, seed, model):
    """The conformal keys to add to a Monte Carlo signature's outputs.

    Args:
        owner: who calls (for errors).
        summary: the signature's dict: `mean`, `std` (one output) or
            `<output>_mean`, `<output>_std` (several).
        conformal: the list from `check`.
        heads: the model's output heads (`kreg.mc._heads`), in order.
        seed: the request's scalar int64 seed (the `seed` output), for the
            uniforms of randomized scores (`uniforms(seed, N, i)` for the
            i-th SplitConformal).
        model: the exported model (its output shapes: a SplitConformal
            fitted on another number of classes is an error at export; where
            the shapes are unknown, at serving time).

    Returns:
        A dict: `set` (bool, (N, K)) for a classification output,
        `lower`/`upper` (the mean's shape and dtype) for a regression one,
        prefixed `<output>_` as the other keys when the model has several.
    """
    import tensorflow as tf

    from kreg.mc._heads import output_key

    ops = _tf_ops()
    out = {}
    for index, cp in enumerate(conformal):
        position = _head_index(owner, cp, heads)
        head = heads[position]
        prefix = "" if len(heads) == 1 else f"{output_key(head.name)}_"
        if head.task != cp.task:
            raise v.invalid_value(owner, "conformal", f"a {head.task} method for "
                                  f"output {head.name!r}", cp)
        mean = summary[prefix + "mean"]
        m = tf.cast(mean, tf.float64)
        q = tf.constant(cp.quantiles, tf.float64)
        if cp.task == "classification":
            units = 1 if head.activation == "sigmoid" else cp.num_classes
            known = _units(model, head.name, mean)
            if known is not None and known != units:
                raise v.invalid_value(
                    owner, "conformal", f"a SplitConformal fitted on "
                    f"{2 if known == 1 else known} classes for output {head.name!r}",
                    v.Shown(f"a SplitConformal fitted on {cp.num_classes} classes"))
            if known is None:  # checked when served
                tf.debugging.assert_equal(
                    tf.reduce_prod(tf.shape(m)[1:]), units, message=(
                        f"kreg.export: the output {head.name!r} has another number "
                        f"of classes than the SplitConformal ({cp.num_classes})"))
            p = tf.clip_by_value(tf.reshape(m, [-1, units]), 0.0, 1.0)  # as the host
            if units == 1:  # one sigmoid unit: the classes [1 - p, p]
                p = tf.concat([1.0 - p, p], axis=-1)
            else:
                p = p / tf.reduce_sum(p, axis=-1, keepdims=True)
            u = uniforms(seed, tf.shape(p)[0], index) if cp.randomized else None
            scores = _scores.label_scores(p, cp.method, u=u, ops=ops, **cp.score_kwargs)
            out[prefix + "set"] = _scores.in_set(scores, q)
        else:
            s = tf.cast(summary[prefix + "std"], tf.float64)
            lower, upper = _scores.interval(m, s, q[0], cp.method)
            out[prefix + "lower"] = tf.cast(lower, mean.dtype)
            out[prefix + "upper"] = tf.cast(upper, mean.dtype)
    return out
