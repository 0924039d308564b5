"""Concrete dropout (Gal, Hron & Kendall 2017): a dropout rate learned by SGD.

Backend-neutral: only `keras.ops` and `keras.random`. The learned rate is a
tensor, so the masks here compare a uniform draw with it rather than going
through kreg's quantized Bernoulli primitive (which takes a Python float).
"""

import math

import keras
from keras import ops

from kreg import _validation as v
from kreg.layers._sampling import per_sample_draw
from kreg.layers.base import StochasticLayer

_WRAPPABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
              keras.layers.Conv3D)
_EPS = 1e-7  # as the authors' code: keeps the logs finite


def concrete_dropout_regularizers(num_train, length_scale, tau=1.0):
    """ConcreteDropout's two regularizers from the data size, as Gal et al. set them.

    `weight_regularizer = length_scale**2 / num_train` (the weight prior)
    and `dropout_regularizer = 2 / (tau * num_train)` (the entropy of the
    rate). Both shrink as the data grow, so the learned rate falls.

    Args:
        num_train: int >= 1. The number of training points N.
        length_scale: float > 0. The prior length-scale l.
        tau: float > 0, default 1.0. The model precision (inverse
            observation noise) of a regression.

    Returns:
        A dict with keys `weight_regularizer` and `dropout_regularizer`, to
        pass as `ConcreteDropout(layer, **regularizers)`.

    Example:

    >>> import kreg
    >>> kreg.layers.concrete_dropout_regularizers(1000, length_scale=0.5)
    {'weight_regularizer': 0.00025, 'dropout_regularizer': 0.002}

    References:
        Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017, section 3
        and the authors' code (`wd = l**2 / N`, `dd = 2 / N`).
    """
    owner = "concrete_dropout_regularizers"
    num_train = v.check_int(owner, "num_train", num_train, low=1)
    length_scale = v.check_float(owner, "length_scale", length_scale, low=0.0,
                                 low_open=True)
    tau = v.check_float(owner, "tau", tau, low=0.0, low_open=True)
    return {"weight_regularizer": length_scale**2 / num_train,
            "dropout_regularizer": 2.0 / (tau * num_train)}


@keras.saving.register_keras_serializable(package="kreg")
class ConcreteDropout(StochasticLayer, keras.layers.Wrapper):
    """Concrete dropout (Gal et al. 2017): dropout on a layer's inputs, learned rate.

    Wraps a `Dense` or `Conv1D/2D/3D` layer and drops its inputs with a rate
    `p = sigmoid(p_logit)` that is a trainable weight of the wrapper. While
    training, the Bernoulli mask is relaxed (the concrete distribution) so
    that the loss has a gradient in `p`: with `u ~ U(0, 1)` per input unit,

        z = sigmoid((log p - log(1 - p) + log u - log(1 - u)) / temperature)

    is the (soft) drop indicator and the inputs become `x (1 - z) / (1 - p)`.
    At inference the wrapper is the wrapped layer (inverted scaling). The
    paper's regularizer

        weight_regularizer * ||W||^2 / (1 - p)
            + dropout_regularizer * K * (p log p + (1 - p) log(1 - p))

    (`W` the wrapped layer's kernel, `K` the number of dropped input units
    per example, the second term minus K times the entropy of p) is attached
    to `p_logit`, so it is in `layer.losses`, `model.losses` and the loss
    `fit` minimizes. `concrete_dropout_regularizers` sets both coefficients
    from N and a length-scale as the paper does. Give the wrapped layer no
    `kernel_regularizer`: the first term is its weight penalty.

    Monte Carlo sampling (`kreg.MCPredictor`, `kreg.export`'s `serve_mc`)
    draws **hard** Bernoulli masks with the learned rate (each unit kept with
    probability `1 - p`, kept units scaled by `1 / (1 - p)`): the dropout
    network the relaxation stands in for. Every row gets its own mask, or in
    joint mode one mask per sample, shared by the inputs of the sample. The
    authors' code samples the relaxed mask instead; at temperature 0.1 the
    two are close. The generator's state and the learned rate are saved with
    the model.

    Args:
        layer: a `keras.layers.Dense`, `Conv1D`, `Conv2D` or `Conv3D` (not
            built yet, or built for the wrapper's inputs), without a
            `kernel_regularizer`.
        weight_regularizer: float >= 0, default 1e-6. The coefficient of
            `||W||^2 / (1 - p)` (the paper's `l^2 / N`).
        dropout_regularizer: float >= 0, default 1e-5. The coefficient of the
            negative entropy term (the paper's `2 / (tau N)`).
        init_rate: float in (0, 1), default 0.1. The initial rate p.
        temperature: float > 0, default 0.1. The relaxation's temperature.
        seed: int or None, default None. Seed of the layer's random stream.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the wrapped layer's floating-point inputs; the size of each
            example (`inputs.shape[1:]`) must be known.
        training: bool, default None (False). Whether to drop (relaxed).

    Returns:
        The wrapped layer's output.

    Example:

    >>> import keras, numpy as np, kreg
    >>> wrapped = kreg.layers.ConcreteDropout(keras.layers.Dense(2), init_rate=0.2,
    ...     **kreg.layers.concrete_dropout_regularizers(100, length_scale=0.1))
    >>> model = keras.Sequential([keras.Input((4,)), wrapped])
    >>> round(wrapped.rate, 6)
    0.2
    >>> len(model.losses)  # the paper's regularizer
    1
    >>> x = np.ones((3, 4), "float32")
    >>> inner = keras.ops.convert_to_numpy(wrapped.layer(x))
    >>> bool(np.allclose(model.predict(x, verbose=0), inner))  # inference
    True

    References:
        Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017, sections 3-4
        (the relaxation and the regularizer).
    """

    def __init__(self, layer, weight_regularizer=1e-6, dropout_regularizer=1e-5,
                 init_rate=0.1, temperature=0.1, seed=None, **kwargs):
        owner = "ConcreteDropout"
        if not isinstance(layer, _WRAPPABLE) or isinstance(layer, StochasticLayer):
            raise v.invalid_type(
                owner, "layer", "a keras.layers.Dense, Conv1D, Conv2D or Conv3D "
                "layer (not a kreg stochastic layer)", layer)
        if layer.kernel_regularizer is not None:
            raise ValueError(v.error_message(
                owner, "layer", "a layer without a kernel_regularizer "
                "(ConcreteDropout adds its own weight penalty, "
                "weight_regularizer * ||W||^2 / (1 - p))", layer,
                received=f"layer={layer.name!r} with kernel_regularizer="
                f"{layer.kernel_regularizer!r}"))
        super().__init__(layer, **kwargs)
        self.weight_regularizer = v.check_float(
            owner, "weight_regularizer", weight_regularizer, low=0.0)
        self.dropout_regularizer = v.check_float(
            owner, "dropout_regularizer", dropout_regularizer, low=0.0)
        self.init_rate = v.check_float(owner, "init_rate", init_rate, low=0.0,
                                       high=1.0, low_open=True, high_open=True)
        self.temperature = v.check_float(owner, "temperature", temperature,
                                         low=0.0, low_open=True)
        self.seed = v.check_seed(owner, seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.input_dim = None

    def build(self, input_shape):
        units = tuple(input_shape)[1:]
        if any(d is None for d in units):
            raise ValueError(v.error_message(
                "ConcreteDropout", "inputs", "inputs whose size per example "
                "(shape[1:]) is known: the regularizer counts the dropped units",
                None, received=f"input_shape={tuple(input_shape)}"))
        super().build(input_shape)
        self.input_dim = int(math.prod(units))
        logit = math.log(self.init_rate) - math.log(1.0 - self.init_rate)
        self.p_logit = self.add_weight(
            name="p_logit", shape=(),
            initializer=keras.initializers.Constant(logit),
            regularizer=self._regularizer, trainable=True, autocast=False)

    # -- the learned rate ----------------------------------------------------
    @property
    def rate(self):
        """The current learned dropout rate p = sigmoid(p_logit), a float."""
        if not self.built:
            return self.init_rate
        return float(ops.convert_to_numpy(ops.sigmoid(self.p_logit.value)))

    @property
    def is_stochastic(self):
        """True: the rate is a weight, so the layer always draws."""
        return True

    def _p(self, dtype):
        return ops.cast(ops.sigmoid(self.p_logit.value), dtype)

    def _regularizer(self, p_logit):
        """The paper's regularizer, from the current weights."""
        p = ops.sigmoid(ops.cast(p_logit, "float32"))
        kernel = ops.cast(self.layer.kernel.value, "float32")
        weight = self.weight_regularizer * ops.sum(ops.square(kernel)) / (1.0 - p)
        neg_entropy = p * ops.log(p + _EPS) + (1.0 - p) * ops.log(1.0 - p + _EPS)
        return weight + self.dropout_regularizer * self.input_dim * neg_entropy

    # -- StochasticLayer -----------------------------------------------------
    def _check_call(self, inputs, training, ctx):
        v.check_float_tensor("ConcreteDropout", "inputs", inputs)

    def _infer(self, inputs):
        return self.layer(inputs)

    def _train(self, inputs):
        p = self._p(inputs.dtype)
        u = keras.random.uniform(ops.shape(inputs), seed=self.training_seed(),
                                 dtype=inputs.dtype)
        logits = (ops.log(p + _EPS) - ops.log(1.0 - p + _EPS)
                  + ops.log(u + _EPS) - ops.log(1.0 - u + _EPS))
        drop = ops.sigmoid(logits / ops.cast(self.temperature, inputs.dtype))
        return self.layer(inputs * (1.0 - drop) / (1.0 - p))

    def _sample(self, inputs, ctx):
        """Hard Bernoulli masks with the learned rate."""
        p = self._p(inputs.dtype)
        seed = ctx.seed_for(self)

        def draw(shape, seed):
            return keras.random.uniform(shape, seed=seed, dtype="float32")

        shape = ops.shape(inputs)
        if not ctx.joint:
            u, x = draw(shape, seed), inputs
        else:
            u = per_sample_draw(ctx, seed, (1,) + tuple(shape[1:]), draw)
            x = ops.reshape(inputs, (ctx.tiles, -1) + tuple(shape[1:]))
        keep = ops.greater_equal(ops.cast(u, inputs.dtype), p)
        dropped = ops.where(keep, x / (1.0 - p), ops.zeros((), inputs.dtype))
        return self.layer(ops.reshape(dropped, shape))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(weight_regularizer=self.weight_regularizer,
                      dropout_regularizer=self.dropout_regularizer,
                      init_rate=self.init_rate, temperature=self.temperature,
                      seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # A copy: Keras's Wrapper.from_config pops "layer" from the dict it gets.
        return super().from_config(dict(config), custom_objects=custom_objects)
