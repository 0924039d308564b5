"""Weight decay done right: L2 penalties moved into an optimizer's decoupled decay.

The equivalence, in Keras's conventions. `kernel_regularizer=L2(l)` adds
`l * ||w||^2` to the loss, whose gradient is `2 l w`. A Keras optimizer built
with `weight_decay=wd` applies `w <- w - lr * wd * w` before its own step,
outside the gradient. With plain SGD (no momentum) the penalty's step is
`w <- w - lr * 2 l w` as well, so

    wd = 2 * l

gives the same updates, at every learning rate and under any schedule (both
are proportional to the current `lr`). The equivalence breaks:

* under Adam (and RMSprop, Adagrad, ...): the penalty's gradient `2 l w` is
  divided by `sqrt(v) + eps` with the rest of the gradient, so weights with
  large gradients are barely decayed and weights with small ones are decayed
  hard; decoupled decay shrinks every weight by the same factor
  `1 - lr * wd` (Loshchilov & Hutter 2019). With Adam, `L2(l)` is not weight
  decay: that is what AdamW fixes;
* with momentum: the penalty's gradient accumulates in the velocity, which
  amplifies it by up to `1 / (1 - momentum)`, while Keras applies the
  decoupled decay once per step;
* in its size: the decay per step is `lr * wd`, so at Adam's usual
  `lr = 1e-3` the SGD-equivalent `wd = 2 l` shrinks weights about 100 times
  less per step than SGD at `lr = 0.1` did. The SGD-equivalent coefficient is
  the faithful translation, not a tuned value: tune `wd` for AdamW (its
  default is 0.004).
"""

import keras

from kreg import _compat
from kreg import _validation as v
from kreg.regularizers.penalties import L1
from kreg.regularizers.penalties import L2
from kreg.regularizers.penalties import ElasticNet

_OWNER = "decoupled_weight_decay"


class WeightDecayChange:
    """What `decoupled_weight_decay` changed (a plain record).

    Attributes:
        weight_decay: float, the optimizer's new `weight_decay` (`2 * l2`).
        l2: float, the L2 coefficient of the penalties that were removed.
        layers: list of str, the layers whose kernel penalty was removed
            (their kernels, and only they, are decayed).
        excluded: list of str, the paths of the model's other trainable
            variables (biases, normalization weights, kernels without a
            penalty, ...), excluded from the decay.
        previous_weight_decay: float or None, the optimizer's `weight_decay`
            before (AdamW's default 0.004 included).
    """

    def __init__(self, weight_decay, l2, layers, excluded, previous_weight_decay):
        self.weight_decay = weight_decay
        self.l2 = l2
        self.layers = layers
        self.excluded = excluded
        self.previous_weight_decay = previous_weight_decay

    def __repr__(self):
        return (f"WeightDecayChange(weight_decay={self.weight_decay!r}, "
                f"l2={self.l2!r}, layers={self.layers!r}, "
                f"excluded={len(self.excluded)} variables, "
                f"previous_weight_decay={self.previous_weight_decay!r})")


def _l2_part(layer, reg):
    """The L2 coefficient of a kernel regularizer; refuse any other part."""
    l1, l2 = None, None
    if isinstance(reg, (L2, keras.regularizers.L2)):
        l1, l2 = 0.0, float(reg.l2)
    elif isinstance(reg, (ElasticNet, keras.regularizers.L1L2)):
        l1, l2 = float(reg.l1), float(reg.l2)
    elif isinstance(reg, (L1, keras.regularizers.L1)):
        l1, l2 = float(reg.l1), 0.0
    if l1 is None:
        raise v.invalid_value(
            _OWNER, "model", "kernel regularizers that are L2 penalties (kreg's or "
            "Keras's L2, or L1L2/ElasticNet with l1=0)",
            v.Shown(f"<layer {layer.name!r} with kernel_regularizer "
                    f"{type(reg).__name__}, which is not an L2 penalty>"))
    if l1 != 0.0:
        raise v.invalid_value(
            _OWNER, "model", "kernel penalties without an L1 part (an L1 penalty "
            "is not weight decay; move only L2 penalties)",
            v.Shown(f"<layer {layer.name!r} with {type(reg).__name__}"
                    f"(l1={l1}, l2={l2})>"))
    return l2


def decoupled_weight_decay(model, optimizer):
    """Move a model's L2 kernel penalties into an optimizer's decoupled weight decay.

    Every layer whose `kernel_regularizer` is an L2 penalty `L2(l)` (kreg's or
    Keras's, or an `L1L2`/`ElasticNet` with `l1 = 0`) loses it (the layer's
    `kernel_regularizer` and the kernel's regularizer become None, so
    `model.losses` no longer holds it), and `optimizer.weight_decay` is set
    to the SGD-equivalent `2 * l` (see the module docstring: Keras's `L2(l)`
    has the gradient `2 l w`, Keras's decay is `w <- w - lr * wd * w`). Only
    those kernels are decayed: every other trainable variable of the model
    (biases, BatchNormalization and LayerNormalization weights, embeddings,
    kernels without a penalty, ConcreteDropout's rate) is passed to
    `optimizer.exclude_from_weight_decay`. Bias penalties are left in place.

    A Keras optimizer has one `weight_decay`, so kernels with different L2
    coefficients are refused (the error lists them), as are L1 parts and
    regularizers of other kinds: the helper moves only what it can move
    exactly. Compile the model with the returned optimizer afterwards; a
    compiled model's cached step functions are reset.

    The exclusion list is not part of an optimizer's config: a model saved
    with its optimizer and loaded again decays every variable. Call this on
    the model before its penalties were removed (or rebuild the exclusion
    with `optimizer.exclude_from_weight_decay`) when you resume training.

    Args:
        model: a built Keras model.
        optimizer: a `keras.optimizers.Optimizer` instance that is not built
            yet (AdamW, or SGD, Adam, ... built with any `weight_decay`).

    Returns:
        A `WeightDecayChange` (attributes `weight_decay`, `l2`, `layers`,
        `excluded`, `previous_weight_decay`).

    Example:

    >>> import keras, kreg
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, kernel_regularizer=kreg.regularizers.L2(1e-4),
    ...                        name="hidden"),
    ...     keras.layers.BatchNormalization(name="bn"),
    ...     keras.layers.Dense(1, kernel_regularizer=kreg.regularizers.L2(1e-4),
    ...                        name="out")], name="net")
    >>> optimizer = keras.optimizers.AdamW(learning_rate=1e-3)
    >>> change = kreg.regularizers.decoupled_weight_decay(model, optimizer)
    >>> change.weight_decay, change.layers, change.previous_weight_decay
    (0.0002, ['hidden', 'out'], 0.004)
    >>> sorted(change.excluded)
    ['net/bn/beta', 'net/bn/gamma', 'net/hidden/bias', 'net/out/bias']
    >>> len(model.losses), optimizer.weight_decay
    (0, 0.0002)

    References:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR
        2019, sections 2-3.
    """
    if not isinstance(model, keras.layers.Layer):
        raise v.invalid_type(_OWNER, "model", "a built Keras model", model)
    if not model.built:
        raise v.invalid_value(_OWNER, "model", "a built Keras model (call it or "
                              "build it first)", model.name)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise v.invalid_type(_OWNER, "optimizer", "a keras.optimizers.Optimizer "
                             "instance", optimizer)
    if getattr(optimizer, "built", False):
        raise v.invalid_value(
            _OWNER, "optimizer", "an optimizer that is not built yet (Keras can "
            "exclude variables from weight decay only before it is built)",
            v.Shown(f"<built {type(optimizer).__name__}>"))
    found = {}
    for layer in _compat.flatten_layers(model, include_self=False):
        reg = getattr(layer, "kernel_regularizer", None)
        kernel = getattr(layer, "kernel", None)
        if reg is None or not isinstance(kernel, keras.Variable):
            continue
        l2 = _l2_part(layer, reg)
        if l2 > 0.0:
            found[layer.name] = (layer, l2)
    if not found:
        raise v.invalid_value(_OWNER, "model", "a model with at least one L2 "
                              "kernel penalty to move", model.name)
    coefficients = {name: l2 for name, (_, l2) in found.items()}
    if len(set(coefficients.values())) > 1:
        raise v.invalid_value(
            _OWNER, "model", "kernel L2 penalties with one coefficient (a Keras "
            "optimizer has one weight_decay; use one L2 coefficient, or "
            "optimizers per group of variables)", v.Shown(f"<L2 coefficients "
                                                        f"{coefficients}>"))
    l2 = next(iter(coefficients.values()))
    decayed = {id(layer.kernel) for layer, _ in found.values()}
    excluded = [w for w in model.trainable_variables if id(w) not in decayed]
    previous = optimizer.weight_decay
    for layer, _ in found.values():
        layer.kernel_regularizer = None
        layer.kernel.regularizer = None
    optimizer.weight_decay = 2.0 * l2
    optimizer.exclude_from_weight_decay(var_list=excluded)
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    return WeightDecayChange(
        weight_decay=2.0 * l2, l2=l2, layers=list(found),
        excluded=[w.path for w in excluded],
        previous_weight_decay=None if previous is None else float(previous))


def mc_dropout_l2(length_scale, rate, num_train, tau, *, loss="mse", outputs=1):
    """Gal's L2 coefficient for MC dropout regression, from a prior and a noise level.

    Gal & Ghahramani's model precision `tau = p l^2 / (2 N lambda)` (keep
    probability `p = 1 - rate`, prior length-scale `l`, N training points),
    solved for `lambda = p l^2 / (2 N tau)`, the coefficient of `||W||^2` in
    their objective `(1/N) sum_i E_i + lambda ||W||^2` with
    `E = 1/2 ||y - yhat||^2`. Keras's `loss="mse"` is the mean of the squared
    errors over the `outputs`, `2 / outputs` times E, so the same optimum
    needs `L2(2 lambda / outputs)`; `loss="half_sse"` returns lambda itself
    (a loss that is E). Use the result as `kernel_regularizer=L2(...)` with
    SGD, or move it into decoupled decay with `decoupled_weight_decay`.

    Args:
        length_scale: float > 0. The prior length-scale l.
        rate: float in [0, 1). The dropout rate (1 - p).
        num_train: int >= 1. The number of training points N.
        tau: float > 0. The model precision (1 / the observation noise
            variance).
        loss: `"mse"` (default, Keras's mean squared error) or `"half_sse"`
            (Gal's E), keyword-only.
        outputs: int >= 1, default 1, keyword-only. The number of regression
            outputs (for `loss="mse"`).

    Returns:
        A float, the `L2` coefficient.

    Example:

    >>> import kreg
    >>> kreg.regularizers.mc_dropout_l2(1.0, rate=0.5, num_train=100, tau=0.25,
    ...                                 loss="half_sse")
    0.01
    >>> kreg.regularizers.mc_dropout_l2(1.0, rate=0.5, num_train=100, tau=0.25)
    0.02

    References:
        Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016,
        section 4 and appendix (model precision).
    """
    owner = "mc_dropout_l2"
    length_scale = v.check_float(owner, "length_scale", length_scale, low=0.0,
                                 low_open=True)
    rate = v.check_float(owner, "rate", rate, low=0.0, high=1.0, high_open=True)
    num_train = v.check_int(owner, "num_train", num_train, low=1)
    tau = v.check_float(owner, "tau", tau, low=0.0, low_open=True)
    loss = v.check_option(owner, "loss", loss, ("mse", "half_sse"))
    outputs = v.check_int(owner, "outputs", outputs, low=1)
    lam = (1.0 - rate) * length_scale**2 / (2.0 * num_train * tau)
    return 2.0 * lam / outputs if loss == "mse" else lam
