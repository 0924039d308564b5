"""Per-layer rules of moment propagation (`kreg.MomentPredictor`).

Every tensor of the network is summarized by its elementwise mean and
variance, the units assumed independent (a diagonal covariance). A rule maps
the moments of a layer's inputs to the moments of its outputs:

- linear layers (Dense, EinsumDense, Conv1D/2D/3D, DepthwiseConv,
  SeparableConv, BatchNormalization at inference): `mean = f(m)`,
  `var = f_2(v)` where `f_2` is the same linear map with squared weights and
  no bias; exact for independent inputs;
- layers that move or copy units (Reshape, Flatten, Permute, Cropping,
  ZeroPadding, UpSampling, RepeatVector, Identity): applied to the mean and
  to the variance; exact;
- Add, Subtract, Average, Multiply, Concatenate: independent inputs (exact
  when they are; wrong for a residual `x + f(x)`, whose terms are
  correlated);
- average pooling: exact (a linear map; the variance is divided by the
  number of cells in each window);
- max pooling: Clark's (1961) moments of the max of two Gaussians, applied
  pairwise over each window (an approximation: the max of two Gaussians is
  not Gaussian);
- LayerNormalization: the per-example normalizing statistics are treated as
  constants computed from the moments (`E[mean of x]`, `E[mean of x^2] -
  E[mean of x]^2`), then an affine map (an approximation, good when many
  units carry the noise);
- activations: ReLU and LeakyReLU (and PReLU) exact for a Gaussian input
  (the rectified Gaussian of Frey & Hinton 1999); every other elementwise
  activation (sigmoid, tanh, GELU, softplus, SiLU, ELU, ...) by
  Gauss-Hermite quadrature with `QUADRATURE_NODES` nodes under a Gaussian
  input (the approximation is the Gaussian input, the quadrature is
  accurate to float32 for these smooth functions); softmax only as the
  model's output head (`Moments.head`, see `kreg.mc.moments`);
- noise sources: kreg's and Keras's Dropout (inverted; kreg's test-time
  scaling too), SpatialDropout (its per-unit marginal: exact mean and
  variance, the correlation along the shared axes dropped), GaussianDropout,
  GaussianNoise, and DropConnect (Wan et al.'s moments with a random input).

Backend-neutral: only `keras.ops`.
"""

import math

import keras
import numpy as np
from keras import ops

from kreg import _compat
from kreg.layers.base import StochasticLayer
from kreg.layers.dropconnect import DropConnectConv2D
from kreg.layers.dropconnect import DropConnectDense
from kreg.layers.dropout import Dropout as KregDropout
from kreg.layers.gaussian_dropout import GaussianDropout as KregGaussianDropout
from kreg.layers.gaussian_dropout import GaussianNoise as KregGaussianNoise

#: Gauss-Hermite nodes of the smooth activations.
QUADRATURE_NODES = 24
_GH_X, _GH_W = np.polynomial.hermite.hermgauss(QUADRATURE_NODES)

L = keras.layers


class Moments:
    """The mean and diagonal variance of one tensor.

    Attributes:
        mean: a tensor.
        var: a tensor of the mean's shape, or None (deterministic: zero).
        factor: None, or `(kernel, var_in, extra)` of the Dense layer that
            produced these moments: their covariance across the last axis is
            `kernel^T diag(var_in) kernel + diag(extra)` (used by the output
            head; any other rule drops it).
        head: None, or `"softmax"`/`"sigmoid"`: these are the moments of the
            logits, and the layer applies that activation (resolved at the
            model's output; a sigmoid inside the network is materialized by
            quadrature, a softmax there is an error).
    """

    __slots__ = ("mean", "var", "factor", "head")

    def __init__(self, mean, var=None, factor=None, head=None):
        self.mean = mean
        self.var = var
        self.factor = factor
        self.head = head

    @property
    def deterministic(self):
        return self.var is None

    def variance(self):
        """The variance, zeros where deterministic."""
        return ops.zeros_like(self.mean) if self.var is None else self.var


class NoRule(ValueError):
    """A layer downstream of a noise source without a moment rule."""


# ----------------------------------------------------------------------------
# Gaussian helpers
# ----------------------------------------------------------------------------
def _phi(z):
    return ops.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _Phi(z):
    return 0.5 * (1.0 + ops.erf(z / math.sqrt(2.0)))


def std(var):
    return ops.sqrt(ops.maximum(var, 1e-12))


def relu_moments(mean, var):
    """E[relu(a)] and E[relu(a)^2] for a ~ N(mean, var) (Frey & Hinton 1999)."""
    s = std(var)
    z = mean / s
    cdf, pdf = _Phi(z), _phi(z)
    first = mean * cdf + s * pdf
    second = (mean * mean + var) * cdf + mean * s * pdf
    return first, second


def _leaky(m, alpha):
    """Exact moments of max(a, 0) + alpha min(a, 0) for a ~ N(m.mean, m.var)."""
    mean, var = m.mean, m.var
    first, second = relu_moments(mean, var)
    out_mean = alpha * mean + (1.0 - alpha) * first
    raw2 = mean * mean + var
    out2 = second + alpha * alpha * (raw2 - second)
    return Moments(out_mean, ops.maximum(out2 - out_mean * out_mean, 0.0))


def normal_cdf(z):
    """The standard normal CDF (elementwise)."""
    return _Phi(z)


def quadrature_nodes(like):
    """Gauss-Hermite nodes z_k and weights w_k with E[f(Z)] ~ sum_k w_k f(z_k),
    Z ~ N(0, 1), shaped (nodes, 1, ...) to broadcast against `like`."""
    shape = (QUADRATURE_NODES,) + (1,) * len(like.shape)
    x = ops.reshape(ops.convert_to_tensor(_GH_X * math.sqrt(2.0), like.dtype), shape)
    w = ops.reshape(ops.convert_to_tensor(_GH_W / math.sqrt(math.pi), like.dtype), shape)
    return x, w


def quadrature(fn, m):
    """Moments of fn(a), a ~ N(m.mean, m.var), by Gauss-Hermite quadrature."""
    x, w = quadrature_nodes(m.mean)
    a = m.mean[None] + std(m.var)[None] * x
    lead = ops.shape(a)
    y = ops.reshape(fn(ops.reshape(a, (-1,) + tuple(lead[2:]))), lead)
    first = ops.sum(w * y, axis=0)
    second = ops.sum(w * y * y, axis=0)
    return Moments(first, ops.maximum(second - first * first, 0.0))


def clark_max(a, b):
    """Moments of max(x, y), x ~ a and y ~ b independent (Clark 1961)."""
    va, vb = a.variance(), b.variance()
    theta = std(va + vb)
    alpha = (a.mean - b.mean) / theta
    cdf, cdf_neg, pdf = _Phi(alpha), _Phi(-alpha), _phi(alpha)
    first = a.mean * cdf + b.mean * cdf_neg + theta * pdf
    second = ((a.mean * a.mean + va) * cdf + (b.mean * b.mean + vb) * cdf_neg
              + (a.mean + b.mean) * theta * pdf)
    return Moments(first, ops.maximum(second - first * first, 0.0))


def _max_over_axis(m, axis):
    """Clark's max over one axis (pairwise, in a tree of log2(size) steps)."""
    mean, var = m.mean, m.variance()
    axis = axis % len(mean.shape)

    def part(t, start, stop):
        return t[(slice(None),) * axis + (slice(start, stop),)]

    while mean.shape[axis] > 1:
        size = mean.shape[axis]
        half = size // 2
        left = Moments(part(mean, 0, half), part(var, 0, half))
        right = Moments(part(mean, half, 2 * half), part(var, half, 2 * half))
        both = clark_max(left, right)
        if size % 2:
            both = Moments(ops.concatenate([both.mean, part(mean, 2 * half, size)], axis),
                           ops.concatenate([both.var, part(var, 2 * half, size)], axis))
        mean, var = both.mean, both.var
    return Moments(ops.squeeze(mean, axis), ops.squeeze(var, axis))


# ----------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------
_SMOOTH = ("sigmoid", "tanh", "gelu", "softplus", "silu", "swish", "elu", "selu",
           "softsign", "mish", "hard_sigmoid", "hard_silu", "hard_swish",
           "exponential", "relu6", "log_sigmoid", "tanh_shrink", "celu", "glu",
           "sparse_plus", "squareplus", "soft_shrink", "hard_tanh",
           "hard_shrink", "threshold")


def _activation_names():
    names = {}
    for name in ("linear", "relu", "leaky_relu", "softmax", "log_softmax") + _SMOOTH:
        try:
            names[keras.activations.get(name)] = name
        except (ValueError, TypeError):
            continue
    names.pop(keras.activations.get("glu"), None)  # not elementwise (splits an axis)
    return names


_ACTIVATIONS = _activation_names()


def activation_name(fn):
    """The name of a Keras activation function (None: unknown)."""
    return _ACTIVATIONS.get(fn)


def check_activation(owner, fn):
    """Raise `NoRule` for an activation without a rule."""
    name = activation_name(fn) if fn is not None else "linear"
    if name is None or name == "log_softmax":
        raise NoRule(f"{owner} uses the activation {getattr(fn, '__name__', fn)!r}, "
                     "which has no moment rule (supported: linear, relu, "
                     "leaky_relu, softmax at the output, and the elementwise "
                     f"{', '.join(sorted(set(_SMOOTH) - {'glu'}))})")


def activate(fn, m):
    """The moments after a Keras activation function `fn` (None: linear)."""
    name = "linear" if fn is None else activation_name(fn)
    if name == "linear":
        return m
    if m.deterministic:
        return Moments(fn(m.mean))
    if name == "relu":
        return _leaky(m, 0.0)
    if name == "leaky_relu":
        return _leaky(m, 0.2)  # keras.activations.leaky_relu's default slope
    if name in ("softmax", "sigmoid"):
        return Moments(m.mean, m.var, m.factor, head=name)
    return quadrature(fn, m)


def materialize(m, owner):
    """Moments of a pending head, for a layer that consumes them."""
    if m.head is None:
        return m
    if m.head == "sigmoid":
        return quadrature(keras.activations.sigmoid, Moments(m.mean, m.var))
    raise NoRule(f"{owner} takes the output of a softmax: a softmax has a moment "
                 "rule only as a model output (its head)")


# ----------------------------------------------------------------------------
# Linear layers
# ----------------------------------------------------------------------------
def _bias_shape(layer, rank, units):
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return (1, units) + (1,) * (rank - 2)
    return (1,) * (rank - 1) + (units,)


def _add_bias(layer, x, bias):
    if bias is None:
        return x
    return ops.add(x, ops.reshape(bias, _bias_shape(layer, len(x.shape), bias.shape[-1])))


def _linear_map(layer):
    """`f(x, kernel)` of a linear layer (no bias, no activation)."""
    if isinstance(layer, L.Dense):
        return lambda x, k: ops.matmul(x, k)
    if isinstance(layer, L.EinsumDense):
        return lambda x, k: ops.einsum(layer.equation, x, k)
    if isinstance(layer, _DEPTHWISE):
        return lambda x, k: ops.depthwise_conv(
            x, k, strides=layer.strides, padding=layer.padding,
            dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    return lambda x, k: layer.convolution_op(x, k)


def _kernel(layer):
    return ops.convert_to_tensor(layer.kernel)


def _bias(layer):
    bias = getattr(layer, "bias", None)
    return None if bias is None else ops.convert_to_tensor(bias)


def _einsum_bias(layer, x, bias):
    return x if bias is None else ops.add(x, bias)


def _linear(layer, m, extra_rate=0.0):
    """Pre-activation moments; `extra_rate` > 0: DropConnect's weight noise."""
    f = _linear_map(layer)
    kernel, bias = _kernel(layer), _bias(layer)
    add = _einsum_bias if isinstance(layer, L.EinsumDense) else (
        lambda x, b: _add_bias(layer, x, b))
    mean = add(f(m.mean, kernel), bias)
    k2 = kernel * kernel
    var = None if m.deterministic else f(m.var, k2)
    extra = None
    if extra_rate:
        raw2 = m.mean * m.mean + m.variance()
        extra = f(raw2, k2)
        if bias is not None and getattr(layer, "drop_bias", False):
            extra = add(extra, bias * bias)
        extra = extra * extra_rate
        var = extra if var is None else var + extra
    factor = None
    if isinstance(layer, L.Dense) and len(m.mean.shape) == 2:
        factor = (kernel, m.variance(), extra)
    return Moments(mean, var, factor)


def dense_like(layer, ins):
    return activate(getattr(layer, "activation", None), _linear(layer, ins[0]))


def dropconnect(layer, ins):
    rate = layer.rate / (1.0 - layer.rate) if layer.is_stochastic else 0.0
    return activate(layer.activation, _linear(layer, ins[0], extra_rate=rate))


def separable(layer, ins):
    m = ins[0]

    def conv(x, dk, pk):
        x = ops.depthwise_conv(x, dk, strides=layer.strides, padding=layer.padding,
                               dilation_rate=layer.dilation_rate,
                               data_format=layer.data_format)
        return ops.conv(x, pk, strides=1, padding="valid", data_format=layer.data_format)

    dk = ops.convert_to_tensor(layer.depthwise_kernel)
    pk = ops.convert_to_tensor(layer.pointwise_kernel)
    mean = _add_bias(layer, conv(m.mean, dk, pk), _bias(layer))
    var = conv(m.var, dk * dk, pk * pk)
    return activate(layer.activation, Moments(mean, var))


def batch_norm(layer, ins):
    m = ins[0]
    mean = layer(m.mean, training=False)
    rank = len(m.mean.shape)
    axes = [a % rank for a in (layer.axis if isinstance(layer.axis, (list, tuple))
                               else [layer.axis])]
    shape = [1] * rank
    for a in axes:
        shape[a] = m.mean.shape[a]
    scale = 1.0 / ops.sqrt(ops.convert_to_tensor(layer.moving_variance) + layer.epsilon)
    if layer.scale:
        scale = scale * ops.convert_to_tensor(layer.gamma)
    scale = ops.reshape(scale, shape)
    return Moments(mean, m.var * scale * scale)


def layer_norm(layer, ins):
    """Normalizing statistics from the moments, treated as constants."""
    m = ins[0]
    rank = len(m.mean.shape)
    axes = [a % rank for a in (layer.axis if isinstance(layer.axis, (list, tuple))
                               else [layer.axis])]
    raw2 = m.mean * m.mean + m.var
    shape = [1] * rank
    for a in axes:
        shape[a] = m.mean.shape[a]
    if getattr(layer, "rms_scaling", False):
        center = ops.zeros_like(m.mean)
        second = ops.mean(raw2, axis=axes, keepdims=True)
    else:
        center = ops.mean(m.mean, axis=axes, keepdims=True)
        second = ops.mean(raw2, axis=axes, keepdims=True) - center * center
    inv = 1.0 / ops.sqrt(ops.maximum(second, 0.0) + layer.epsilon)
    scale = inv
    if getattr(layer, "scale", True) and getattr(layer, "gamma", None) is not None:
        scale = inv * ops.reshape(ops.convert_to_tensor(layer.gamma), shape)
    mean = (m.mean - center) * scale
    if getattr(layer, "center", True) and getattr(layer, "beta", None) is not None:
        mean = mean + ops.reshape(ops.convert_to_tensor(layer.beta), shape)
    return Moments(mean, m.var * scale * scale)


# ----------------------------------------------------------------------------
# Structure, merging, pooling
# ----------------------------------------------------------------------------
def structural(layer, ins):
    """A layer that moves, copies or zero-pads units: applied to both moments."""
    m = ins[0]
    return Moments(layer(m.mean), layer(m.var))


def add(layer, ins):
    mean = ins[0].mean
    for m in ins[1:]:
        mean = mean + m.mean
    return Moments(mean, _sum_var(ins))


def _sum_var(ins):
    var = None
    for m in ins:
        if m.var is not None:
            var = m.var if var is None else var + m.var
    if var is not None:
        var = var + ops.zeros_like(sum(m.mean for m in ins))  # broadcast
    return var


def subtract(layer, ins):
    return Moments(ins[0].mean - ins[1].mean, _sum_var(ins))


def average(layer, ins):
    n = float(len(ins))
    out = add(layer, ins)
    return Moments(out.mean / n, out.var / (n * n))


def multiply(layer, ins):
    mean, raw2 = ins[0].mean, ins[0].mean ** 2 + ins[0].variance()
    for m in ins[1:]:
        mean = mean * m.mean
        raw2 = raw2 * (m.mean ** 2 + m.variance())
    return Moments(mean, ops.maximum(raw2 - mean * mean, 0.0))


def concatenate(layer, ins):
    return Moments(layer([m.mean for m in ins]), layer([m.variance() for m in ins]))


def _pool_window_counts(layer, like):
    """Cells of each average-pooling window inside the input (padding excluded)."""
    ones = ops.ones_like(like[..., :1] if layer.data_format == "channels_last"
                         else like[:, :1])
    kernel = ops.ones(tuple(layer.pool_size) + (1, 1), like.dtype)
    return ops.conv(ones, kernel, strides=layer.strides, padding=layer.padding,
                    data_format=layer.data_format)


def average_pool(layer, ins):
    m = ins[0]
    mean = layer(m.mean)
    counts = _pool_window_counts(layer, m.mean)
    return Moments(mean, layer(m.var) / counts)


def global_average_pool(layer, ins):
    m = ins[0]
    rank = len(m.mean.shape)
    spatial = range(1, rank - 1) if layer.data_format == "channels_last" else range(2, rank)
    count = float(np.prod([m.mean.shape[a] for a in spatial]))
    return Moments(layer(m.mean), layer(m.var) / count)


def max_pool(layer, ins):
    """Clark's pairwise max over each window (strides = pool size, 'valid')."""
    m = ins[0]
    pool = tuple(layer.pool_size)
    if tuple(layer.strides) != pool or layer.padding != "valid":
        raise NoRule(f"{type(layer).__name__} {layer.name!r} has strides "
                     f"{tuple(layer.strides)} and padding {layer.padding!r}; the max "
                     "pooling rule takes strides equal to pool_size and padding='valid'")
    mean, var = m.mean, m.variance()
    if layer.data_format == "channels_first":
        perm = (0,) + tuple(range(2, len(mean.shape))) + (1,)
        mean, var = ops.transpose(mean, perm), ops.transpose(var, perm)
    spatial = tuple(mean.shape[1:-1])
    out = tuple(s // p for s, p in zip(spatial, pool))
    crop = tuple(slice(0, o * p) for o, p in zip(out, pool))
    idx = (slice(None),) + crop + (slice(None),)
    mean, var = mean[idx], var[idx]
    split = (-1,) + sum(((o, p) for o, p in zip(out, pool)), ()) + (mean.shape[-1],)
    rank = len(pool)
    order = (0,) + tuple(1 + 2 * i for i in range(rank)) + (
        2 * rank + 1,) + tuple(2 + 2 * i for i in range(rank))
    window = (-1,) + out + (mean.shape[-1], int(np.prod(pool)))

    def windows(t):
        return ops.reshape(ops.transpose(ops.reshape(t, split), order), window)

    res = _max_over_axis(Moments(windows(mean), windows(var)), -1)
    if layer.data_format == "channels_first":
        back = (0, len(res.mean.shape) - 1) + tuple(range(1, len(res.mean.shape) - 1))
        res = Moments(ops.transpose(res.mean, back), ops.transpose(res.var, back))
    return res


def global_max_pool(layer, ins):
    m = ins[0]
    mean, var = m.mean, m.variance()
    if layer.data_format == "channels_first":
        perm = (0,) + tuple(range(2, len(mean.shape))) + (1,)
        mean, var = ops.transpose(mean, perm), ops.transpose(var, perm)
    channels = mean.shape[-1]
    flat = (-1, int(np.prod(mean.shape[1:-1])), channels)
    res = _max_over_axis(Moments(ops.reshape(mean, flat), ops.reshape(var, flat)), 1)
    if getattr(layer, "keepdims", False):
        shape = ops.shape(layer(m.mean))
        res = Moments(ops.reshape(res.mean, shape), ops.reshape(res.var, shape))
    return res


# ----------------------------------------------------------------------------
# Activation layers
# ----------------------------------------------------------------------------
def activation_layer(layer, ins):
    return activate(layer.activation, ins[0])


def relu_layer(layer, ins):
    m = ins[0]
    if layer.max_value is None and not layer.threshold:
        return _leaky(m, float(layer.negative_slope))
    return quadrature(layer, m)


def leaky_relu_layer(layer, ins):
    return _leaky(ins[0], float(layer.negative_slope))


def prelu_layer(layer, ins):
    return _leaky(ins[0], ops.convert_to_tensor(layer.alpha))


def smooth_layer(layer, ins):
    return quadrature(layer, ins[0])


def softmax_layer(layer, ins):
    m = ins[0]
    axis = layer.axis if isinstance(layer.axis, int) else None
    if axis not in (-1, len(m.mean.shape) - 1):
        raise NoRule(f"Softmax {layer.name!r} normalizes over axis {layer.axis!r}; "
                     "the head rule takes the last axis")
    return Moments(m.mean, m.var, m.factor, head="softmax")


# ----------------------------------------------------------------------------
# Noise sources
# ----------------------------------------------------------------------------
def inverted_dropout(m, keep):
    """y = r x / keep, r ~ Bernoulli(keep): E[y^2] = E[x^2] / keep."""
    raw2 = m.mean * m.mean + m.variance()
    return Moments(m.mean, raw2 / keep - m.mean * m.mean)


def kreg_dropout(layer, ins):
    m, keep = ins[0], layer.keep_prob
    if layer.scaling == "inverted":
        return inverted_dropout(m, keep)
    raw2 = m.mean * m.mean + m.variance()  # y = r x: vanilla (test-time) scaling
    mean = keep * m.mean
    return Moments(mean, keep * raw2 - mean * mean)


def keras_dropout(layer, ins):
    return inverted_dropout(ins[0], 1.0 - float(layer.rate))


def gaussian_dropout(layer, ins):
    m, rate = ins[0], float(layer.rate)
    s2 = rate / (1.0 - rate)
    return Moments(m.mean, m.variance() + s2 * (m.mean * m.mean + m.variance()))


def gaussian_noise(layer, ins):
    m = ins[0]
    return Moments(m.mean, m.variance() + float(layer.stddev) ** 2)


def identity(layer, ins):
    return ins[0]


# ----------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------
_CONV = tuple(getattr(L, n) for n in ("Conv1D", "Conv2D", "Conv3D"))
_DEPTHWISE = tuple(getattr(L, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D"))
_STRUCTURAL = tuple(getattr(L, n) for n in (
    "Reshape", "Flatten", "Permute", "RepeatVector", "Cropping1D", "Cropping2D",
    "Cropping3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "UpSampling1D", "UpSampling3D"))
_AVG = (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D)
_GAVG = (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D)
_MAX = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D)
_GMAX = (L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)

#: (layer classes, rule), first match wins (subclasses before their bases).
RULES = (
    ((DropConnectDense, DropConnectConv2D), dropconnect),
    ((KregDropout,), kreg_dropout),
    ((KregGaussianDropout, L.GaussianDropout), gaussian_dropout),
    ((KregGaussianNoise, L.GaussianNoise), gaussian_noise),
    ((L.Dropout,), keras_dropout),  # SpatialDropout1D/2D/3D included
    ((L.Dense, L.EinsumDense) + _CONV + _DEPTHWISE, dense_like),
    ((L.SeparableConv1D, L.SeparableConv2D), separable),
    ((L.BatchNormalization,), batch_norm),
    ((L.LayerNormalization,), layer_norm),
    (_STRUCTURAL, structural),
    ((L.Identity, L.ActivityRegularization), identity),
    ((L.Add,), add),
    ((L.Subtract,), subtract),
    ((L.Average,), average),
    ((L.Multiply,), multiply),
    ((L.Concatenate,), concatenate),
    (_AVG, average_pool),
    (_GAVG, global_average_pool),
    (_MAX, max_pool),
    (_GMAX, global_max_pool),
    ((L.Activation,), activation_layer),
    ((L.ReLU,), relu_layer),
    ((L.LeakyReLU,), leaky_relu_layer),
    ((L.PReLU,), prelu_layer),
    ((L.ELU,), smooth_layer),
    ((L.Softmax,), softmax_layer),
)


def is_noise(layer):
    """True for a layer that draws noise at training time (rate/stddev > 0)."""
    if isinstance(layer, StochasticLayer):
        return layer.is_stochastic
    if isinstance(layer, (L.Dropout, L.GaussianDropout, L.AlphaDropout)):
        return float(layer.rate) > 0.0
    if isinstance(layer, L.GaussianNoise):
        return float(layer.stddev) > 0.0
    return False


def holds_noise(op):
    """True when `op` is or contains a noise layer."""
    if not isinstance(op, keras.layers.Layer):
        return False
    return any(is_noise(layer) for layer in _compat.flatten_layers(op))


def rule_for(op):
    """The rule of a layer (after checking its settings), or `NoRule`."""
    name = f"{type(op).__name__} {getattr(op, 'name', '')!r}"
    for classes, rule in RULES:
        if isinstance(op, classes):
            if rule in (dense_like, dropconnect, separable, activation_layer):
                check_activation(name, op.activation)
            if getattr(op, "quantization_mode", None):
                raise NoRule(f"{name} is quantized ({op.quantization_mode}); "
                             "moment propagation reads float kernels")
            return rule
    raise NoRule(f"{name} has no moment rule")
