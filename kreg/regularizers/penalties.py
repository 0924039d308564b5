"""L1, L2 and elastic-net kernel penalties, and helpers to apply and read them."""

import keras
from keras import ops

from kreg import _validation as v


def _coef(owner, name, value):
    return v.check_float(owner, name, value, low=0.0,
                         expected="a finite float >= 0")


@keras.saving.register_keras_serializable(package="kreg")
class L1(keras.regularizers.Regularizer):
    """L1 (lasso) penalty: `l1 * sum(|w|)`.

    Numerically identical to `keras.regularizers.L1` for the same argument.
    Drives weights towards zero; plain (sub)gradient training reaches "near
    zero", exact zeros need a proximal step (see REFERENCES.md).

    Args:
        l1: float >= 0, default 0.01. The penalty coefficient.

    Call arguments:
        x: the weight tensor.

    Returns:
        A scalar tensor, the penalty.

    Example:

    >>> import numpy as np, kreg
    >>> float(kreg.regularizers.L1(0.1)(np.array([[1.0, -2.0]], "float32")))
    0.30000001192092896

    References:
        Tibshirani, "Regression Shrinkage and Selection via the Lasso", 1996.
    """

    def __init__(self, l1=0.01):
        self.l1 = _coef("L1", "l1", l1)

    def __call__(self, x):
        return ops.cast(self.l1, dtype=x.dtype) * ops.sum(ops.absolute(x))

    def get_config(self):
        return {"l1": self.l1}


@keras.saving.register_keras_serializable(package="kreg")
class L2(keras.regularizers.Regularizer):
    """L2 (ridge, weight decay) penalty: `l2 * sum(w ** 2)`.

    Numerically identical to `keras.regularizers.L2`; its gradient is
    `2 * l2 * w`. With Adam this is *not* decoupled weight decay (use the
    optimizer's `weight_decay` for that, Loshchilov & Hutter 2019).

    Args:
        l2: float >= 0, default 0.01. The penalty coefficient.

    Call arguments:
        x: the weight tensor.

    Returns:
        A scalar tensor, the penalty.

    Example:

    >>> import numpy as np, kreg
    >>> float(kreg.regularizers.L2(0.1)(np.array([[1.0, -2.0]], "float32")))
    0.5

    References:
        Goodfellow, Bengio & Courville, Deep Learning, section 7.1.1.
    """

    def __init__(self, l2=0.01):
        self.l2 = _coef("L2", "l2", l2)

    def __call__(self, x):
        return ops.cast(self.l2, dtype=x.dtype) * ops.sum(ops.square(x))

    def get_config(self):
        return {"l2": self.l2}


@keras.saving.register_keras_serializable(package="kreg")
class ElasticNet(keras.regularizers.Regularizer):
    """Elastic-net penalty: `l1 * sum(|w|) + l2 * sum(w ** 2)`.

    The "naive" elastic net of Zou & Hastie; numerically identical to
    `keras.regularizers.L1L2(l1, l2)`. `ElasticNet.from_ratio(alpha,
    l1_ratio)` takes scikit-learn's parameterization.

    Args:
        l1: float >= 0, default 0.01. The L1 coefficient.
        l2: float >= 0, default 0.01. The L2 coefficient.

    Call arguments:
        x: the weight tensor.

    Returns:
        A scalar tensor, the penalty.

    Example:

    >>> import numpy as np, kreg
    >>> reg = kreg.regularizers.ElasticNet(l1=0.1, l2=0.1)
    >>> round(float(reg(np.array([[1.0, -2.0]], "float32"))), 6)
    0.8
    >>> kreg.regularizers.ElasticNet.from_ratio(0.2, l1_ratio=0.5).get_config()
    {'l1': 0.1, 'l2': 0.05}

    References:
        Zou & Hastie, "Regularization and variable selection via the elastic
        net", JRSS B 67, 2005, section 2.
    """

    def __init__(self, l1=0.01, l2=0.01):
        self.l1 = _coef("ElasticNet", "l1", l1)
        self.l2 = _coef("ElasticNet", "l2", l2)

    @classmethod
    def from_ratio(cls, alpha, l1_ratio=0.5):
        """Build from scikit-learn's `(alpha, l1_ratio)`.

        scikit-learn's ElasticNet minimizes `1/(2n) ||y - Xw||^2 + alpha *
        l1_ratio * |w|_1 + alpha * (1 - l1_ratio) / 2 * ||w||^2`, so
        `l1 = alpha * l1_ratio` and `l2 = alpha * (1 - l1_ratio) / 2` (when
        the data term is the mean squared error / 2).

        Args:
            alpha: float >= 0. The overall strength.
            l1_ratio: float in [0, 1], default 0.5. The L1 share.

        Returns:
            An `ElasticNet`.
        """
        alpha = _coef("ElasticNet.from_ratio", "alpha", alpha)
        l1_ratio = v.check_float("ElasticNet.from_ratio", "l1_ratio", l1_ratio,
                                 low=0.0, high=1.0)
        return cls(l1=alpha * l1_ratio, l2=alpha * (1.0 - l1_ratio) / 2.0)

    def __call__(self, x):
        regularization = ops.convert_to_tensor(0.0, dtype=x.dtype)
        if self.l1 != 0.0:
            regularization += ops.cast(self.l1, dtype=x.dtype) * ops.sum(
                ops.absolute(x))
        if self.l2 != 0.0:
            regularization += ops.cast(self.l2, dtype=x.dtype) * ops.sum(
                ops.square(x))
        return regularization

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


_SHORT_NAMES = {
    "l1": L1, "l2": L2, "elastic_net": ElasticNet, "elasticnet": ElasticNet,
    "l1_l2": ElasticNet,
}


def get(identifier):
    """Resolve a regularizer from an instance, a config dict or a name.

    Accepts `None`, any callable regularizer instance, a config dict (Keras's
    serialized form or `{"class_name": "kreg>L2", "config": {...}}`), a
    registered name such as `"kreg>ElasticNet"` (which Keras's own
    `keras.regularizers.get` cannot resolve), a kreg short name (`"l1"`,
    `"l2"`, `"elastic_net"`) and any name Keras's `get` resolves.

    Args:
        identifier: the thing to resolve.

    Returns:
        A regularizer instance, or None.

    Example:

    >>> import kreg
    >>> kreg.regularizers.get("kreg>ElasticNet").get_config()
    {'l1': 0.01, 'l2': 0.01}
    >>> type(kreg.regularizers.get("l2")).__name__
    'L2'
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str):
        if identifier.lower() in _SHORT_NAMES:
            return _SHORT_NAMES[identifier.lower()]()
        cls = keras.saving.get_registered_object(identifier)
        if cls is not None:
            return cls()
        try:
            return keras.regularizers.get(identifier)
        except ValueError:
            accepted = ", ".join(repr(n) for n in sorted(_SHORT_NAMES))
            raise v.invalid_value(
                "kreg.regularizers.get", "identifier",
                f"a regularizer instance, a config dict, a registered name "
                f"such as 'kreg>ElasticNet', or one of {accepted}",
                identifier) from None
    if callable(identifier):
        return identifier
    raise v.invalid_type(
        "kreg.regularizers.get", "identifier",
        "a regularizer instance, a config dict or a name", identifier)


def _layers_with_weights(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "kernel", None) is not None or \
                getattr(layer, "bias", None) is not None:
            yield layer


def apply(model, kernel=None, bias=None):
    """Add penalties to every kernel (and bias) of a built model, in place.

    For each layer with a `kernel` attribute (Dense, Conv, DropConnect, ...)
    sets `kernel_regularizer` (and `bias_regularizer`) so that `get_config`
    and saving see it, and attaches the penalty to the variable so that
    `model.losses` and `fit` do. A compiled model's cached train/test
    functions are reset so the next `fit` includes the penalty.

    Args:
        model: a built Keras model.
        kernel: regularizer (or identifier for `get`) for kernels, default
            None (leave kernels as they are).
        bias: regularizer (or identifier) for biases, default None.

    Returns:
        The list of layers that were changed.

    Example:

    >>> import keras, kreg
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> [l.name for l in kreg.regularizers.apply(model, kernel="l2")] == \\
    ...     [model.layers[0].name]
    True
    >>> len(model.losses)
    1
    """
    if not isinstance(model, keras.layers.Layer):
        raise v.invalid_type("kreg.regularizers.apply", "model",
                             "a Keras model or layer", model)
    if not model.built:
        raise v.invalid_value("kreg.regularizers.apply", "model",
                              "a built model (call it or build it first)",
                              model)
    kernel = get(kernel)
    bias = get(bias)
    changed = []
    for layer in _layers_with_weights(model):
        touched = False
        if kernel is not None and getattr(layer, "kernel", None) is not None:
            layer.kernel_regularizer = kernel
            layer.kernel.regularizer = kernel
            touched = True
        if bias is not None and getattr(layer, "bias", None) is not None:
            layer.bias_regularizer = bias
            layer.bias.regularizer = bias
            touched = True
        if touched:
            changed.append(layer)
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    return changed


def penalty(model):
    """The model's total weight penalty and its breakdown per layer.

    Args:
        model: a built Keras model (or layer).

    Returns:
        `(total, per_layer)`: the total as a Python float and a dict mapping
        each layer name that carries a weight penalty to its float value
        (activity regularizers are not included; they depend on inputs).

    Example:

    >>> import keras, kreg, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, kernel_initializer="ones", kernel_regularizer=kreg.regularizers.L2(0.5),
    ...     name="d")])
    >>> kreg.regularizers.penalty(model)
    (1.0, {'d': 1.0})
    """
    per_layer = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        value = 0.0
        found = False
        for var in layer._trainable_variables + layer._non_trainable_variables:
            reg = getattr(var, "regularizer", None)
            if reg is None:
                continue
            found = True
            value += float(ops.convert_to_numpy(reg(var.value)))
        if found:
            per_layer[layer.name] = value
    return float(sum(per_layer.values())), per_layer
