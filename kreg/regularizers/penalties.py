"""L1, L2 and elastic-net kernel penalties, and helpers to apply and read them."""

import inspect

import keras
from keras import ops

from kreg import _compat
from kreg import _validation as v


def _coef(owner, name, value):
    return v.check_float(owner, name, value, low=0.0,
                         expected="a finite float >= 0")


def _weights(owner, x):
    """Validate the weight tensor a penalty is called on.

    An integer kernel would turn the coefficient into 0 (Keras casts it to the
    weight's dtype) and give a zero penalty without a word, so it is refused.
    """
    v.check_float_tensor(f"{owner}.__call__", "x", x,
                         "a floating-point weight tensor")
    return x


@keras.saving.register_keras_serializable(package="kreg")
class L1(keras.regularizers.Regularizer):
    """L1 (lasso) penalty: `l1 * sum(|w|)`.

    Numerically identical to `keras.regularizers.L1` for the same argument;
    `kreg.regularizers.l1` is an alias, as `keras.regularizers.l1` is. Drives
    weights towards zero; plain (sub)gradient training reaches "near
    zero", exact zeros need a proximal step (see REFERENCES.md).

    Args:
        l1: float >= 0, default 0.01. The penalty coefficient.

    Call arguments:
        x: the weight tensor (a floating dtype; an integer tensor is an
            `ArgumentTypeError`, where Keras would cast the coefficient to
            an integer and return 0).

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
        x = _weights("L1", x)
        return ops.cast(self.l1, dtype=x.dtype) * ops.sum(ops.absolute(x))

    def get_config(self):
        return {"l1": self.l1}


@keras.saving.register_keras_serializable(package="kreg")
class L2(keras.regularizers.Regularizer):
    """L2 (ridge, weight decay) penalty: `l2 * sum(w ** 2)`.

    Numerically identical to `keras.regularizers.L2` (alias
    `kreg.regularizers.l2`, as in Keras); its gradient is
    `2 * l2 * w`. With Adam this is *not* decoupled weight decay (use the
    optimizer's `weight_decay` for that, Loshchilov & Hutter 2019).

    Args:
        l2: float >= 0, default 0.01. The penalty coefficient.

    Call arguments:
        x: the weight tensor (a floating dtype; an integer tensor is an
            `ArgumentTypeError`, where Keras would cast the coefficient to
            an integer and return 0).

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
        x = _weights("L2", x)
        return ops.cast(self.l2, dtype=x.dtype) * ops.sum(ops.square(x))

    def get_config(self):
        return {"l2": self.l2}


class _Default(float):
    """A default coefficient, told apart from the same value passed explicitly."""


# ElasticNet's defaults: `alpha=` excludes an explicit `l1` or `l2`.
_DEFAULT_L1 = _Default(0.01)
_DEFAULT_L2 = _Default(0.01)


@keras.saving.register_keras_serializable(package="kreg")
class ElasticNet(keras.regularizers.Regularizer):
    """Elastic-net penalty: `l1 * sum(|w|) + l2 * sum(w ** 2)`.

    The "naive" elastic net of Zou & Hastie; numerically identical to
    `keras.regularizers.L1L2(l1, l2)`. It also takes scikit-learn's
    parameterization, `ElasticNet(alpha=..., l1_ratio=...)` (or
    `ElasticNet.from_ratio(alpha, l1_ratio)`): scikit-learn's ElasticNet
    penalizes `alpha * l1_ratio * |w|_1 + alpha * (1 - l1_ratio) / 2 *
    ||w||^2`, so `l1 = alpha * l1_ratio` and `l2 = alpha * (1 - l1_ratio) /
    2`. The config holds the resulting `l1` and `l2`.

    Its defaults (0.01 and 0.01) are not Keras's: `keras.regularizers.L1L2()`
    defaults to 0 and 0, a zero penalty. The drop-in for Keras's class is
    `kreg.regularizers.L1L2` (alias `l1_l2`, as in Keras), a subclass with
    Keras's defaults, so `kreg.regularizers.l1_l2()` gives Keras's numbers;
    `ElasticNet()`, named for the penalty, penalizes by default.

    Args:
        l1: float >= 0, default 0.01. The L1 coefficient.
        l2: float >= 0, default 0.01. The L2 coefficient.
        alpha: float >= 0 or None, default None. scikit-learn's overall
            strength; excludes `l1` and `l2`.
        l1_ratio: float in [0, 1] or None, default None (0.5 with `alpha`,
            as in scikit-learn). scikit-learn's L1 share; needs `alpha`.

    Call arguments:
        x: the weight tensor (a floating dtype; an integer tensor is an
            `ArgumentTypeError`, where Keras would cast the coefficient to
            an integer and return 0).

    Returns:
        A scalar tensor, the penalty.

    Example:

    >>> import numpy as np, kreg
    >>> reg = kreg.regularizers.ElasticNet(l1=0.1, l2=0.1)
    >>> round(float(reg(np.array([[1.0, -2.0]], "float32"))), 6)
    0.8
    >>> kreg.regularizers.ElasticNet(alpha=0.2, l1_ratio=0.5).get_config()
    {'l1': 0.1, 'l2': 0.05}

    References:
        Zou & Hastie, "Regularization and variable selection via the elastic
        net", JRSS B 67, 2005, section 2.
    """

    def __init__(self, l1=_DEFAULT_L1, l2=_DEFAULT_L2, *, alpha=None, l1_ratio=None):
        owner = type(self).__name__
        if alpha is None:
            if l1_ratio is not None:
                raise v.invalid_value(
                    owner, "alpha", "a float >= 0 with `l1_ratio` (scikit-learn's "
                    "parameterization)", alpha)
        else:
            if l1 is not _DEFAULT_L1 or l2 is not _DEFAULT_L2:
                raise v.invalid_value(
                    owner, "alpha", "either `l1`/`l2` or `alpha`/`l1_ratio`, not "
                    f"both (l1={float(l1)!r}, l2={float(l2)!r})", alpha)
            alpha = _coef(owner, "alpha", alpha)
            l1_ratio = v.check_float(owner, "l1_ratio", 0.5 if l1_ratio is None else l1_ratio,
                                     low=0.0, high=1.0)
            l1, l2 = alpha * l1_ratio, alpha * (1.0 - l1_ratio) / 2.0
        self.l1 = _coef(owner, "l1", l1)
        self.l2 = _coef(owner, "l2", l2)

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
        owner = f"{cls.__name__}.from_ratio"
        alpha = _coef(owner, "alpha", alpha)
        l1_ratio = v.check_float(owner, "l1_ratio", l1_ratio, low=0.0, high=1.0)
        return cls(l1=alpha * l1_ratio, l2=alpha * (1.0 - l1_ratio) / 2.0)

    def __call__(self, x):
        x = _weights(type(self).__name__, x)
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


@keras.saving.register_keras_serializable(package="kreg")
class L1L2(ElasticNet):
    """Keras's `L1L2` with Keras's defaults: `l1 * sum(|w|) + l2 * sum(w ** 2)`.

    The drop-in for `keras.regularizers.L1L2` (alias `l1_l2`): the same
    penalty as `ElasticNet`, with Keras's defaults `l1=0.0, l2=0.0`, so
    `kreg.regularizers.l1_l2()` is the zero penalty Keras's `l1_l2()` is and
    `l1_l2(l1=1e-5, l2=1e-4)` gives Keras's numbers. `ElasticNet` keeps its
    own defaults (0.01 and 0.01).

    Args:
        l1: float >= 0, default 0.0. The L1 coefficient.
        l2: float >= 0, default 0.0. The L2 coefficient.

    Call arguments:
        x: the weight tensor (a floating dtype).

    Returns:
        A scalar tensor, the penalty.

    Example:

    >>> import numpy as np, kreg
    >>> kreg.regularizers.l1_l2().get_config()
    {'l1': 0.0, 'l2': 0.0}
    >>> reg = kreg.regularizers.l1_l2(l1=0.1, l2=0.1)
    >>> round(float(reg(np.array([[1.0, -2.0]], "float32"))), 6)
    0.8

    References:
        Zou & Hastie, "Regularization and variable selection via the elastic
        net", JRSS B 67, 2005, section 2.
    """

    def __init__(self, l1=0.0, l2=0.0):
        super().__init__(l1=l1, l2=l2)


# Keras's aliases (in Keras 3 they are the classes themselves).
l1 = L1
l2 = L2
l1_l2 = L1L2

# Names `get` resolves to kreg's classes (case-insensitive). Keras's own
# names ("l1", "l2", "l1l2" and the class names) give kreg's drop-ins with
# Keras's defaults.
_SHORT_NAMES = {
    "l1": L1, "l2": L2, "l1l2": L1L2, "l1_l2": L1L2,
    "elastic_net": ElasticNet, "elasticnet": ElasticNet,
}

# Keras's own `get`, held here: kreg's `get` stands in for it, and a test
# harness that puts kreg's in its place must not make this call itself.
_keras_get = keras.regularizers.get

# Callable Keras objects that are not regularizers: accepting one would make
# the "penalty" a layer's output or an initializer's draw.
_NOT_REGULARIZERS = (
    keras.layers.Layer, keras.callbacks.Callback, keras.initializers.Initializer,
    keras.losses.Loss, keras.metrics.Metric, keras.optimizers.Optimizer,
    keras.constraints.Constraint,
)
_EXPECTED = ("a regularizer instance or class, a callable, a config dict, "
             "a registered name such as 'kreg>ElasticNet', or one of "
             + ", ".join(repr(n) for n in sorted(_SHORT_NAMES)))


def _describe(obj):
    if inspect.isclass(obj):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    return f"a {type(obj).__name__} ({type(obj).__module__})"


def resolve(identifier, owner="kreg.regularizers.get", name="identifier"):
    """`get` for an argument `name` of `owner` (the name in kreg's errors)."""
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        obj = _from_config(identifier, owner, name)
    elif isinstance(identifier, str):
        obj = _from_name(identifier, owner, name)
    else:
        obj = identifier
    if inspect.isclass(obj):
        if not issubclass(obj, keras.regularizers.Regularizer):
            raise v.ArgumentTypeError(v.error_message(
                owner, name, "a regularizer (a keras.regularizers.Regularizer "
                f"subclass); got {_describe(obj)}", identifier))
        obj = obj()  # as Keras's `get` does with a class
    if isinstance(obj, _NOT_REGULARIZERS) or not callable(obj):
        raise v.ArgumentTypeError(v.error_message(
            owner, name, f"{_EXPECTED}; got {_describe(obj)}, which is not a "
            "regularizer", identifier))
    return obj


def _from_config(config, owner, name):
    if "class_name" not in config:
        raise v.invalid_value(
            owner, name, "a config dict with a 'class_name' key (Keras's "
            "serialized form, e.g. {'class_name': 'kreg>L2', 'config': "
            "{'l2': 0.01}})", config)
    try:
        return keras.regularizers.deserialize(config)
    except (TypeError, ValueError) as err:
        raise v.invalid_value(
            owner, name, f"a config dict Keras can deserialize into a "
            f"regularizer (it said: {err})", config) from err


def _from_name(identifier, owner, name):
    if identifier.lower() in _SHORT_NAMES:
        return _SHORT_NAMES[identifier.lower()]
    registered = keras.saving.get_registered_object(identifier)
    if registered is not None:
        return registered  # checked by the caller: a Regularizer class only
    try:
        return _keras_get(identifier)
    except ValueError:
        raise v.invalid_value(owner, name, _EXPECTED, identifier) from None


def get(identifier):
    """Resolve a regularizer from an instance, a class, a config dict or a name.

    Accepts what Keras's `keras.regularizers.get` accepts, with the same
    results (`None`; a regularizer instance or any callable, returned as is;
    a regularizer *class*, instantiated with its defaults; a config dict; a
    name), plus a registered name such as `"kreg>ElasticNet"` (which Keras's
    own `get` cannot resolve) and the short names `"l1"`, `"l2"`, `"l1l2"`,
    `"l1_l2"` (kreg's drop-ins with Keras's defaults) and `"elastic_net"`.
    Names are case-insensitive. Anything that is not a regularizer (a layer,
    a callback, an initializer, ...: for example `"kreg>Dropout"`), an
    unknown name and a dict without `'class_name'` are errors.

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
    >>> kreg.regularizers.get(kreg.regularizers.L2).get_config()
    {'l2': 0.01}
    """
    return resolve(identifier)


def _layers_with_weights(model):
    for layer in _compat.flatten_layers(model, include_self=False):
        if getattr(layer, "kernel", None) is not None or \
                getattr(layer, "bias", None) is not None:
            yield layer


def _check_built_model(owner, model):
    if not isinstance(model, keras.layers.Layer):
        raise v.invalid_type(owner, "model", "a Keras model or layer", model)
    if not model.built:
        raise v.invalid_value(owner, "model",
                              "a built model (call it or build it first)",
                              model)


def apply(model, kernel=None, bias=None):
    """Add penalties to every kernel (and bias) of a built model, in place.

    For each layer with a `kernel` attribute (Dense, Conv, DropConnect, ...)
    sets `kernel_regularizer` (and `bias_regularizer`) so that `get_config`
    and saving see it, and attaches the penalty to the variable so that
    `model.losses` and `fit` do. A compiled model's cached train/test
    functions are reset so the next `fit` includes the penalty.

    Args:
        model: a built Keras model.
        kernel: regularizer (or identifier for `get`, a class included) for
            kernels, default None (leave kernels as they are).
        bias: regularizer (or identifier) for biases, default None.

    Returns:
        The list of layers that were changed. Asking for a penalty that no
        layer of the model can take (no kernel, or no bias) is a ValueError.

    Example:

    >>> import keras, kreg
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> [l.name for l in kreg.regularizers.apply(model, kernel="l2")] == \\
    ...     [model.layers[0].name]
    True
    >>> len(model.losses)
    1
    """
    _check_built_model("kreg.regularizers.apply", model)
    kernel = resolve(kernel, "kreg.regularizers.apply", "kernel")
    bias = resolve(bias, "kreg.regularizers.apply", "bias")
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
    if not changed and (kernel is not None or bias is not None):
        what = "kernel" if kernel is not None else "bias"
        raise v.invalid_value(
            "kreg.regularizers.apply", "model",
            f"a model with at least one layer that has a {what} (Dense, Conv, "
            f"DropConnect, ...) to put the penalty on", model)
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
    _check_built_model("kreg.regularizers.penalty", model)
    per_layer = {}
    for layer in _compat.flatten_layers(model):
        value = 0.0
        found = False
        for var in _compat.own_variables(layer):
            reg = getattr(var, "regularizer", None)
            if reg is None:
                continue
            found = True
            value += float(ops.convert_to_numpy(reg(var.value)))
        if found:
            per_layer[layer.name] = value
    return float(sum(per_layer.values())), per_layer
