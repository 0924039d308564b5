"""Uncertainty in one forward pass: analytic moment propagation.

`MomentPredictor` marginalizes a network's noise (dropout, DropConnect,
Gaussian noise) analytically instead of by sampling: it walks the model's
functional graph once, carrying for every tensor its mean and its variance
over the noise (units assumed independent: a diagonal covariance), with the
per-layer rules of `kreg.mc._moment_rules`. The layers before the first
noise source see zero variance and run as plain layers, once. At an output
the moments are read as `kreg.MCPredictor` reads its samples: a regression
output reports its mean and variance; a classification output (softmax or
sigmoid, or logits) draws `head_samples` cheap samples of its Gaussian
logits (with their full covariance across classes when the last layer is a
Dense on a flat input) and reports the mean probabilities and the entropy
split of those samples. `kreg.export(..., moments=True)` serves the same
computation as a `serve_moments` signature (`moments_endpoint`).
"""

import statistics

import keras
import numpy as np
from keras import ops

from kreg import _compat
from kreg import _validation as v
from kreg._compile import compile_inference
from kreg.mc import _heads
from kreg.mc import _inputs
from kreg.mc import _moment_rules as rules
from kreg.mc import _stats
from kreg.mc._graph import functional_view
from kreg.mc.metrics import xlogx
from kreg.mc.prediction import MCPrediction

_DEFAULT_BATCH = 1024
_JITTER = 1e-5  # relative: added to the logits covariance before its Cholesky


class MomentPrediction(MCPrediction):
    """An `MCPrediction` computed by moment propagation (`kreg.MomentPredictor`).

    The attributes mean what they mean for Monte Carlo (`mean`, `variance`,
    `std`, and for classification `entropy`, `expected_entropy`,
    `mutual_information`, `variation_ratio`), so kreg's metrics and
    calibration take it as they take an `MCPrediction`. `samples` is None
    and `joint` False (no network is drawn, so `covariance` is undefined).

    Attributes:
        num_samples: for a softmax output, the number of samples of its
            Gaussian logits that gave the probabilities' statistics
            (`MomentPredictor(head_samples=...)`); None for regression and
            sigmoid outputs (computed by quadrature).
        method: `"moments"`.

    Example:

    >>> import keras, numpy as np, kreg
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
    ...     kreg.layers.Dropout(0.5), keras.layers.Dense(1)])
    >>> pred = kreg.MomentPredictor(model).predict(np.ones((2, 3), "float32"))
    >>> type(pred).__name__, pred.task, pred.mean.shape, pred.num_samples
    ('MomentPrediction', 'regression', (2, 1), None)
    """

    method = "moments"

    def __repr__(self):
        return (f"MomentPrediction(task={self.task!r}, inputs={self.mean.shape[0]}, "
                f"num_samples={self.num_samples})")


def _traverse(graph, inputs, apply):
    """Values of `graph.outputs` from values of `graph.inputs`, node by node.

    `apply(op, node, ins)` returns the values of the node's outputs from
    those of its input tensors.
    """
    values = {id(t): x for t, x in zip(graph.inputs, inputs)}
    nodes = _compat.nodes_by_depth(graph)
    for depth in sorted(nodes, reverse=True):
        for node in nodes[depth]:
            op = node.operation
            if op is None or node.is_input or isinstance(op, keras.layers.InputLayer):
                continue
            ins = [values[id(t)] for t in node.input_tensors]
            for t, out in zip(node.outputs, apply(op, node, ins)):
                values[id(t)] = out
    return [values[id(t)] for t in graph.outputs]


def _label(op):
    return f"{type(op).__name__} {getattr(op, 'name', '')!r}"


def _nested_graph(owner, op):
    graph = functional_view(op) if isinstance(op, keras.Model) else None
    if graph is None:
        raise v.invalid_value(
            owner, "model", "layers with a moment rule downstream of the noise: "
            f"the nested {_label(op)} is a subclassed model (its graph is not "
            "known)", op.name)
    return graph


def _check(owner, graph):
    """Which output tensors are noisy; raise kreg's error for a missing rule."""

    def apply(op, node, ins):
        if isinstance(op, keras.Model) and (any(ins) or rules.holds_noise(op)):
            return _traverse(_nested_graph(owner, op), ins, apply)
        noisy = any(ins) or rules.is_noise(op)
        if noisy:
            try:
                rules.rule_for(op)
            except rules.NoRule as error:
                raise v.invalid_value(
                    owner, "model", "layers with a moment rule downstream of the "
                    f"noise (see docs/moments.md): {error}", getattr(op, "name", op)
                ) from None
        return [noisy] * len(node.outputs)

    return _traverse(graph, [False] * len(graph.inputs), apply)


def propagate(graph, xs, owner="MomentPredictor"):
    """The `Moments` of every output of `graph` for the input tensors `xs`."""

    def apply(op, node, ins):
        if all(m.deterministic and m.head is None for m in ins) and not rules.holds_noise(op):
            table = {id(t): m.mean for t, m in zip(node.input_tensors, ins)}

            def fill(x):
                return table.get(id(x), x) if isinstance(x, keras.KerasTensor) else x

            args = keras.tree.map_structure(fill, node.arguments.args)
            kwargs = keras.tree.map_structure(fill, node.arguments.kwargs)
            return [rules.Moments(o) for o in keras.tree.flatten(op(*args, **kwargs))]
        ins = [rules.materialize(m, _label(op)) for m in ins]
        if isinstance(op, keras.Model):
            return _traverse(_nested_graph(owner, op), ins, apply)
        out = rules.rule_for(op)(op, ins)
        return out if isinstance(out, list) else [out]

    return _traverse(graph, [rules.Moments(x) for x in xs], apply)


def _logit_samples(m, activation, eps):
    """Probabilities of `S` samples of Gaussian logits with moments `m`."""
    mean = m.mean
    if m.factor is not None and activation == "softmax":
        kernel, var_in, extra = m.factor
        c = mean.shape[-1]
        # kernel^T diag(v) kernel for every row as one matmul: v @ (W_c W_d).
        pairs = ops.reshape(kernel[:, :, None] * kernel[:, None, :], (-1, c * c))
        cov = ops.reshape(ops.matmul(var_in, pairs), (-1, c, c))
        if extra is not None:
            cov = cov + extra[:, :, None] * ops.eye(c, dtype=cov.dtype)[None]
        diag = ops.mean(ops.diagonal(cov, axis1=1, axis2=2), axis=-1)
        jitter = (_JITTER * diag + 1e-12)[:, None, None]
        chol = ops.cholesky(cov + jitter * ops.eye(c, dtype=cov.dtype)[None])
        z = mean[None] + ops.einsum("sc,ndc->snd", eps, chol)
    else:
        shape = (eps.shape[0],) + (1,) * (len(mean.shape) - 1) + (mean.shape[-1],)
        z = mean[None] + rules.std(m.variance())[None] * ops.reshape(eps, shape)
    if activation == "softmax":
        return ops.softmax(z, axis=-1)
    return ops.sigmoid(z)


def _sample_statistics(s, kind):
    """`kreg.mc._stats.statistics` of the logit samples s (S, N, ...), with the
    data checks made on the mean only (the samples are probabilities)."""
    mean = ops.mean(s, axis=0)
    stats = _stats.pass_statistics(mean[None], kind)  # the checks, cheaply
    stats.update(count=ops.cast(ops.shape(s)[0], s.dtype), mean=mean,
                 m2=ops.sum(ops.square(s - mean), axis=0))
    if kind != "regression":
        flat = _stats._flat(s, 2)
        stats["entropy_sum"] = ops.sum(_stats._entropies(flat, kind), axis=0)
        stats["votes"] = _stats._votes(flat, kind)
    return _stats.finalize(stats, kind)


def _sigmoid_statistics(m, kind):
    """Statistics of sigmoid(z), z ~ N(mean, var) per unit, by quadrature.

    The sigmoid outputs are independent binary problems (as in
    `kreg.MCPrediction`), so each unit's Gaussian logit gives them exactly up
    to the Gauss-Hermite rule of `kreg.mc._moment_rules.quadrature`:
    `E[p]`, `Var[p]`, the expected entropy `E[H(p)]`, and the variation ratio
    `min(P(z > 0), P(z < 0))`.
    """
    mean, std = m.mean, rules.std(m.variance())
    nodes, weights = rules.quadrature_nodes(mean)
    p = ops.sigmoid(mean[None] + std[None] * nodes)
    pm = ops.sum(weights * p, axis=0)
    var = ops.maximum(ops.sum(weights * p * p, axis=0) - pm * pm, 0.0)
    out = _regression_statistics(rules.Moments(pm, var))
    if kind == "regression":
        return out

    def entropy(q, lead):  # summed over the units of an input
        h = -(xlogx(q, ops) + xlogx(1.0 - q, ops))
        return ops.sum(_stats._flat(h, lead), axis=-1)

    total = entropy(pm, 1)
    expected = ops.sum(ops.reshape(weights, (-1, 1)) * entropy(p, 2), axis=0)
    up = rules.normal_cdf(mean / std)
    out.update(entropy=total, expected_entropy=expected,
               mutual_information=ops.maximum(total - expected, 0.0),
               variation_ratio=ops.mean(_stats._flat(ops.minimum(up, 1.0 - up), 1),
                                        axis=-1))
    return out


def _regression_statistics(m):
    mean, var = m.mean, m.variance()
    nan = ops.isnan(mean) | ops.isnan(var)
    big = ops.cast(float("inf"), mean.dtype)
    return {"mean": mean, "variance": var,
            "nan": ops.sum(ops.cast(nan, mean.dtype)),
            "low": ops.min(ops.where(nan, big, mean)),
            "high": ops.max(ops.where(nan, -big, mean)),
            "sum_error": ops.zeros((), mean.dtype)}


def output_statistics(owner, m, head, eps):
    """`kreg.mc._stats`-style statistics of one output's moments."""
    kind = _stats.kind_of(head.task, head.activation)
    activation = m.head or (head.activation if head.from_logits else None)
    if activation == "sigmoid":
        return _sigmoid_statistics(m, kind)
    if activation is not None:
        probs = _logit_samples(m, activation, eps(m.mean.shape[-1]))
        return _sample_statistics(probs, kind if head.task == "regression" else activation)
    if head.task == "classification":
        if not m.deterministic:
            raise v.invalid_value(
                owner, "model", f"a softmax or sigmoid at output {head.name!r} "
                "(its probabilities must come from a Softmax/Activation layer or "
                "a layer's activation, or pass from_logits=True)", head.name)
        return _stats.statistics(m.mean[None], kind)
    return _regression_statistics(m)


def _bucket(n, cap):
    b = 1
    while b < n:
        b *= 2
    return min(b, cap)


def _primes(count):
    """The first `count` primes."""
    primes, n = [], 2
    while len(primes) < count:
        if all(n % p for p in primes if p * p <= n):
            primes.append(n)
        n += 1
    return primes


def _shifted_halton(n, dims, seed):
    """n points of the Halton sequence in [0, 1)^dims, shifted by one random vector.

    The radical inverse of 1..n in the first `dims` prime bases, plus a
    uniform shift modulo 1 (a Cranley-Patterson rotation, seeded): a
    low-discrepancy design whose average is an unbiased estimate.
    """
    points = np.empty((n, dims))
    for d, base in enumerate(_primes(dims)):
        index = np.arange(1, n + 1)
        scale, value = 1.0, np.zeros(n)
        while index.any():
            scale /= base
            value += scale * (index % base)
            index //= base
        points[:, d] = value
    return (points + np.random.default_rng(seed).random(dims)) % 1.0


class MomentPredictor:
    """Mean and uncertainty of a noisy network in one deterministic pass.

    Propagates the mean and the (diagonal) variance of every unit over the
    network's noise: kreg's Dropout, DropConnectDense/Conv2D,
    GaussianDropout and GaussianNoise, and Keras's Dropout, SpatialDropout,
    GaussianDropout and GaussianNoise (counted as noise sources, as if
    converted with `kreg.convert_dropout`). The result approximates what
    `kreg.MCPredictor` estimates with T samples, at about the cost of two
    deterministic passes. The per-layer rules and their approximations are in
    `kreg.mc._moment_rules` and docs/moments.md; a layer downstream of the
    noise without a rule is an error at construction, naming it.

    Where it is exact: networks whose noise meets only linear layers (the
    closed form of the mean and variance). Where it approximates: each
    nonlinearity sees a Gaussian (exact moments for ReLU of a Gaussian, but
    the input is not Gaussian after the first); the units are independent
    (wrong after a shared input is used twice, e.g. a residual `x + f(x)`,
    and increasingly wrong with depth); max pooling (Clark's pairwise
    approximation) and LayerNormalization (its statistics held fixed).

    Classification outputs: the logits' moments give `head_samples`
    Gaussian samples of the logits (fixed quasi-random normal draws, a
    scrambled Sobol sequence seeded by `seed`; with the logits' full covariance across classes
    when the last layer is a Dense on a flat input), each passed through the
    softmax or sigmoid; their statistics are those of `kreg.MCPrediction`
    (mean probability, entropy, expected entropy, mutual information,
    variation ratio). This was chosen over the probit approximation and the
    Laplace bridge by measurement (benchmarks/moments.py).

    Args:
        model: a built Sequential or Functional Keras model (nested ones
            included) with at least one noise layer.
        task: `"auto"` (default), `"classification"` or `"regression"`, or a
            list/dict with one per output, as in `kreg.MCPredictor`.
        from_logits: None (default: the compiled loss's), True or False, or
            one per output, as in `kreg.MCPredictor`.
        head_samples: int >= 2, default 64. Samples of the Gaussian logits
            of a classification output.
        seed: int >= 0, default 0. Seed of those fixed draws.

    Call arguments (`predict`):
        x: inputs as `model.predict` takes them (arrays, list/dict of
            arrays, a dataset or generator), validated as by `MCPredictor`.
        batch_size: int >= 1 or None (default 1024). Inputs per compiled
            call (chunks are padded to a power of two).

    Returns:
        `predict` returns a `MomentPrediction` (an `MCPrediction`), or the
        output structure of them for a model with several outputs.

    Example:

    >>> import keras, numpy as np, kreg
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(16, activation="relu"), kreg.layers.Dropout(0.5),
    ...     keras.layers.Dense(3, activation="softmax")])
    >>> pred = kreg.MomentPredictor(model).predict(np.ones((5, 4), "float32"))
    >>> pred.mean.shape, pred.task
    ((5, 3), 'classification')
    >>> bool(np.allclose(pred.mean.sum(axis=1), 1.0, atol=1e-5))
    True
    >>> bool(np.all(pred.mutual_information >= 0))
    True

    References:
        Wang & Manning, "Fast dropout training", ICML 2013; Gast & Roth,
        "Lightweight Probabilistic Deep Networks", CVPR 2018; Brach, Sick &
        Duerr, "Single Shot MC Dropout Approximation", 2020; Frey & Hinton
        1999 (rectified Gaussian); Clark, "The greatest of a finite set of
        random variables", Operations Research 9, 1961; Wan et al., ICML
        2013 (DropConnect's moments).
    """

    def __init__(self, model, *, task="auto", from_logits=None, head_samples=64,
                 seed=0):
        owner = "MomentPredictor"
        if not isinstance(model, keras.Model):
            raise v.invalid_type(owner, "model", "a Keras model", model)
        if not model.built:
            raise v.invalid_value(owner, "model",
                                  "a built model (call it or build it first)", model.name)
        _heads.check_settings(owner, task, from_logits)
        self.head_samples = v.check_int(owner, "head_samples", head_samples, low=2)
        self.seed = v.check_int(owner, "seed", seed, low=0, high=(1 << 32) - 1)
        self.task = task
        self.from_logits = from_logits
        self.model = model
        self.graph = functional_view(model)
        if self.graph is None:
            raise v.invalid_value(
                owner, "model", "a Sequential or Functional model (moment "
                "propagation walks the layer graph; a subclassed model has none)",
                model.name)
        noisy = any(_check(owner, self.graph)) or any(
            rules.is_noise(layer) for layer in _compat.flatten_layers(model))
        if not noisy:
            raise v.invalid_value(
                owner, "model", "a model with at least one noise layer (Dropout, "
                "DropConnect, GaussianDropout, GaussianNoise) with rate > 0; "
                "without noise the moments are the deterministic outputs", model.name)
        self.heads, self._structure = _heads.model_heads(owner, model, task, from_logits)
        self._eps = {}
        self._fn = None

    def _draws(self, classes):
        """Fixed quasi-random standard normal draws (head_samples, classes).

        A randomly shifted Halton sequence (NumPy only) mapped through the
        normal quantile function: the average over the draws integrates the
        smooth softmax far more accurately than as many random draws.
        """
        if classes not in self._eps:
            u = _shifted_halton(self.head_samples, classes, self.seed)
            quantile = np.vectorize(statistics.NormalDist().inv_cdf)
            self._eps[classes] = quantile(np.clip(u, 1e-7, 1 - 1e-7))
        return self._eps[classes]

    def statistics(self, xs):
        """The per-output statistics of a flat list of input tensors (traced)."""
        outs = propagate(self.graph, xs)

        def eps(classes):
            return ops.convert_to_tensor(self._draws(classes).astype("float32"))

        return [output_statistics("MomentPredictor", m, head, eps)
                for m, head in zip(outs, self.heads)]

    def _compiled(self):
        if self._fn is None:
            self._fn = compile_inference(self.statistics, self.model.variables)
        return self._fn

    def predict(self, x, batch_size=None):
        """The moments of the outputs for inputs `x` (see the class doc)."""
        owner = "MomentPredictor.predict"
        rows = v.check_int(owner, "batch_size", batch_size, low=1,
                           allow_none=True) or _DEFAULT_BATCH
        fn = self._compiled()
        chunks = []
        for xs, _, _ in _inputs.batches(owner, self.model, x, rows, want_y=False):
            n = len(xs[0])
            padded = _bucket(n, rows)
            xs = [a if len(a) == padded else np.concatenate(
                [a, np.repeat(a[-1:], padded - len(a), axis=0)]) for a in xs]
            stats = fn([ops.convert_to_tensor(a) for a in xs])
            chunks.append([_stats.to_host(st, n) for st in stats])
        preds = []
        for k, head in enumerate(self.heads):
            st = _stats.join([c[k] for c in chunks])
            sampled = "entropy" in st or head.task == "classification"
            pred = MomentPrediction.from_statistics(
                st, head.task, activation=head.activation,
                num_samples=self.head_samples if sampled else 1)
            softmax = head.activation == "softmax" and "entropy" in st
            pred.num_samples = self.head_samples if softmax else None
            preds.append(pred)
        if len(preds) == 1 and not isinstance(self._structure, (list, tuple, dict)):
            return preds[0]
        return keras.tree.pack_sequence_as(self._structure, preds)


def moments_endpoint(model, *, task="auto", from_logits=None, head_samples=64,
                     seed=0):
    """`serve_moments(x)` of `kreg.export(..., moments=True)` (TensorFlow).

    Returns a function of the model's input structure returning a dict:
    `mean` and `std` of every output, for classification outputs `entropy`
    and `mutual_information`; several outputs get `<output>_` prefixed keys
    as the Monte Carlo signatures do.
    """
    from kreg.mc._heads import output_key

    predictor = MomentPredictor(model, task=task, from_logits=from_logits,
                                head_samples=head_samples, seed=seed)

    def serve_moments(x):
        stats = predictor.statistics(keras.tree.flatten(x))
        out = {}
        for st, head in zip(stats, predictor.heads):
            prefix = "" if len(stats) == 1 else f"{output_key(head.name)}_"
            out[prefix + "mean"] = st["mean"]
            out[prefix + "std"] = ops.sqrt(st["variance"])
            if "entropy" in st:
                out[prefix + "entropy"] = st["entropy"]
                out[prefix + "mutual_information"] = st["mutual_information"]
        return out

    return serve_moments
