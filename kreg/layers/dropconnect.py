"""DropConnect (Wan et al. 2013): Dense and Conv2D layers that drop weights.

Where Dropout zeroes activations, DropConnect zeroes individual *weights*: each
entry of the kernel (and of the bias, with `drop_bias=True`) is kept with
probability `keep_prob = 1 - rate` and scaled by `1 / keep_prob` (inverted
scaling, so the expected weight is the stored weight W).

Backend-neutral: only `keras.ops` and `keras.random`.
"""

import keras
from keras import ops

from kreg import _validation as v
from kreg.layers._bernoulli import dropped
from kreg.layers._bernoulli import fused_on_tensorflow
from kreg.layers._bernoulli import keep_words
from kreg.layers._bernoulli import scale_by_words
from kreg.layers._seeds import TensorSeed
from kreg.layers.base import DEFAULT_RATE
from kreg.layers.base import StochasticLayer

MASKS = ("batch", "example")
INFERENCES = ("mean", "gaussian", "sample")

#: Default size of the masked float32 kernels of one chunk (mask="example"):
#: 4 MiB (2 examples of a 784 x 512 kernel) stays in cache; 8 MiB was slower.
EXAMPLE_CHUNK_BYTES = 2**22
#: Gaussian inference evaluates the activation on this many draws at a time.
GAUSSIAN_BLOCK = 32

_SEED_SPAN = 2**30  # derived seeds stay below 2**31 after adding an index
_GAUSSIAN_SALT = 2_000_000_011  # second seed word of the fixed Gaussian stream


# ----------------------------------------------------------------------------
# Seeds and masks
# ----------------------------------------------------------------------------
class _SeedSplitter:
    """Independent seeds, indexed by int, from one draw of a seed.

    One draw of `seed` (a `SeedGenerator` or a `TensorSeed`) is hashed (by a
    Philox draw) to a fresh base pair; seed `i` is that base plus `(0, i)`.
    The index may be a tensor (a chunk or sample index inside a loop). The
    base is random, so derived seeds stay apart from the generator's own
    `(s, counter)` stream and from other draws' seeds (up to a collision of
    two random 30-bit pairs).
    """

    def __init__(self, seed):
        base = seed.next()
        self._dtype = keras.backend.standardize_dtype(base.dtype)
        self._base = keras.random.randint(
            (2,), 0, _SEED_SPAN, seed=TensorSeed(base), dtype="int32"
        )

    def __call__(self, index):
        index = ops.cast(index, "int32")
        offset = ops.stack([ops.zeros((), "int32"), index])
        return TensorSeed(ops.cast(ops.add(self._base, offset), self._dtype))


def _chunks(size, chunk):
    """`(c, n)`: `n >= 1` chunks of `c >= 1` items covering `size` items.

    `c` is a Python int whenever `chunk` is (`chunk` itself when `size` is
    a tensor), so that chunks have a static shape.
    """
    if isinstance(chunk, int):
        if isinstance(size, int):
            c = max(1, min(chunk, size))
            return c, max(1, -(-size // c))
        c = max(1, chunk)
    else:
        c = ops.maximum(ops.minimum(chunk, size), 1)
    return c, ops.maximum((size + c - 1) // c, 1)


def _split(x, c, n):
    """`x` (size, ...) padded with zeros to `n * c` rows, as (n, c, ...)."""
    pad = [[0, n * c - ops.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return ops.reshape(ops.pad(x, pad), (n, c) + tuple(ops.shape(x)[1:]))


def _example_matmul(x3, kernel, seed, keep_prob, chunk):
    """`y[b] = x3[b] @ (kernel * M_b / keep_prob)`, one mask M_b per example.

    `x3` is (batch, S, in). All the masks are drawn at once from `seed`, as
    packed bits (`keep_words`: `batch x in x ceil(out / 32)` words; Wan et
    al. kept theirs as bits too), and kept for the backward pass, which
    unpacks them again rather than drawing them again. The products run
    `chunk` examples at a time, so the float32 temporaries are a few
    `chunk x in x out` tensors; with one position per example (S = 1) the
    backward pass runs over chunks of input units instead (both gradients
    are then batched matrix products of one masked tensor). On TensorFlow,
    inside a traced function, the forward pass and the backward pass are one
    XLA program each (`fused_on_tensorflow`), loops included; eagerly they
    run op by op.
    """
    in_dim, out_dim = kernel.shape
    width = -(-out_dim // 32)  # mask words per kernel row
    batch = ops.shape(x3)[0]
    packed = keep_words(batch * in_dim * width, keep_prob, seed)
    packed = ops.reshape(packed, (batch, in_dim, width))
    scale = 1.0 / keep_prob

    @ops.custom_gradient
    def masked_matmul(x3, kernel):
        # No gradient inside: a TensorFlow tape would otherwise make the
        # compiled program return its loop's intermediates.
        x3, kernel = ops.stop_gradient(x3), ops.stop_gradient(kernel)
        y = fused_on_tensorflow(_example_forward)(x3, kernel, packed, scale,
                                                  chunk)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return fused_on_tensorflow(_example_backward)(
                x3, kernel, packed, ops.stop_gradient(upstream), scale, chunk)

        return y, grad

    # A tensor, not the variable itself: tf.custom_gradient must not see a
    # variable read inside the function (the gradient reaches it through this).
    return masked_matmul(x3, ops.copy(kernel))


def _example_forward(x3, kernel, packed, scale, chunk):
    """`_example_matmul`'s product, `chunk` examples at a time."""
    out_dim = kernel.shape[1]
    shape = ops.shape(x3)
    batch, length = shape[0], shape[1]
    # A static chunk also when the batch size is not (a traced `fit`): the
    # padded rows cost at most `chunk - 1` examples of work. At least one
    # chunk (of padding when the batch is empty), so that a batch of 0 rows
    # gives 0 rows.
    c, n = _chunks(batch, chunk)

    def forward(args):
        xk, pk = args
        return ops.matmul(xk, scale_by_words(pk, kernel, scale))

    ys = ops.map(forward, (_split(x3, c, n), _split(packed, c, n)))
    return ops.reshape(ys, (n * c, length, out_dim))[:batch]


def _example_backward(x3, kernel, packed, upstream, scale, chunk):
    """`_example_matmul`'s gradients `(d x3, d kernel)`."""
    in_dim = kernel.shape[0]
    shape = ops.shape(x3)
    batch, length = shape[0], shape[1]
    if isinstance(length, int) and length == 1:
        units = chunk * in_dim  # as many mask elements as a chunk
        units = (max(1, units // max(1, batch)) if isinstance(batch, int) else
                 ops.maximum(1, units // ops.maximum(1, batch)))
        return _grad_by_unit(x3, kernel, packed, upstream, scale, units)
    c, n = _chunks(batch, chunk)
    return _grad_by_example(_split(x3, c, n), kernel, _split(packed, c, n),
                            upstream, scale, c, n)


def _grad_by_unit(x3, kernel, packed, upstream, scale, chunk):
    """Gradients with one position per example, `chunk` input units at a time.

    With Q[i, b, :] = M_b[i, :] / p * g[b, :] (one unpacked chunk of masks
    times the upstream gradient), `dW[i] = x[:, i] @ Q[i]` and
    `dx[:, i] = Q[i] @ W[i]`: two batched products of Q, no outer products.
    """
    in_dim, out_dim = kernel.shape
    batch = ops.shape(x3)[0]
    g = ops.reshape(upstream, (batch, out_dim))
    c, n = _chunks(in_dim, chunk)
    xt = _split(ops.transpose(ops.reshape(x3, (batch, in_dim))), c, n)
    pt = _split(ops.transpose(packed, (1, 0, 2)), c, n)
    ws = _split(kernel, c, n)

    def unit(args):
        xk, pk, wk = args  # (c, batch), (c, batch, width), (c, out)
        q = scale_by_words(pk, g, scale)  # (c, batch, out)
        dw = ops.matmul(xk[:, None, :], q)[:, 0]
        dx = ops.matmul(q, wk[:, :, None])[:, :, 0]
        return dw, dx

    dws, dxs = ops.map(unit, (xt, pt, ws))
    dkernel = ops.reshape(dws, (n * c, out_dim))[:in_dim]
    dx = ops.transpose(ops.reshape(dxs, (n * c, batch))[:in_dim])
    return ops.reshape(dx, (batch, 1, in_dim)), dkernel


def _grad_by_example(xs, kernel, ps, upstream, scale, c, n):
    """Gradients with several positions per example, `c` examples at a time."""
    in_dim, out_dim = kernel.shape
    batch, length = ops.shape(upstream)[0], ops.shape(upstream)[1]
    gs = _split(upstream, c, n)

    def body(k, carry):
        dkernel, dxs = carry
        xk, gk = ops.take(xs, k, axis=0), ops.take(gs, k, axis=0)
        pk = ops.take(ps, k, axis=0)  # (c, in, width)
        # Transposed products through einsum: no transposed copies.
        dx = ops.einsum("clo,cio->cli", gk, scale_by_words(pk, kernel, scale))
        outer = ops.einsum("cli,clo->cio", xk, gk)
        dw = ops.sum(scale_by_words(pk, outer, scale), axis=0)
        dxs = ops.slice_update(dxs, (k, 0, 0, 0), dx[None])
        return dkernel + dw, dxs

    dkernel, dxs = ops.fori_loop(
        0, n, body, (ops.zeros_like(kernel), ops.zeros_like(xs))
    )
    dx = ops.reshape(dxs, (n * c, length, in_dim))[:batch]
    return dx, dkernel


# ----------------------------------------------------------------------------
# Shared behaviour
# ----------------------------------------------------------------------------
class _DropConnect(StochasticLayer):
    """What DropConnectDense and DropConnectConv2D share (not public)."""

    def _init_dropconnect(self, rate, keep_prob, mask, inference,
                          inference_samples, drop_bias, seed):
        owner = type(self).__name__
        self._init_stochastic(rate, keep_prob, seed)
        self.mask = mask
        self.inference = v.check_option(owner, "inference", inference, INFERENCES)
        self.inference_samples = v.check_int(
            owner, "inference_samples", inference_samples, low=1
        )
        self.drop_bias = v.check_bool(owner, "drop_bias", drop_bias)

    # -- hooks of the concrete layers --------------------------------------
    def _apply_kernel(self, inputs, kernel):
        """`inputs @ kernel` (Dense) or `conv(inputs, kernel)` (Conv2D)."""
        raise NotImplementedError

    def _add_bias(self, x, bias):
        """Add a bias of shape (units,) along the channel axis."""
        raise NotImplementedError

    def _linear(self, inputs, kernel, bias):
        """The pre-activation for a given kernel and bias (bias may be None)."""
        x = self._apply_kernel(inputs, kernel)
        return x if bias is None else self._add_bias(x, bias)

    def _masked(self, inputs, seed):
        """The pre-activation with masks drawn from `seed`."""
        return self._batch_masked(inputs, _SeedSplitter(seed), 0)

    def _tiled(self, inputs, ctx):
        return self._per_sample(inputs, ctx)

    @property
    def _units(self):
        raise NotImplementedError

    @property
    def _channel_axis(self):
        return -1

    # -- common machinery --------------------------------------------------
    def _sample(self, inputs, ctx):
        return self._activate(self._tiled(inputs, ctx))

    def _train(self, inputs):
        return self._activate(self._masked(inputs, self.training_seed()))

    def _infer(self, inputs):
        if self.is_stochastic and self.inference == "sample":
            return self._activate(self._masked(inputs, self.seed_generator))
        if self.is_stochastic and self.inference == "gaussian":
            return self._gaussian(inputs)
        return self._activate(self._linear(inputs, self.kernel, self.bias))

    def _activate(self, x):
        return x if self.activation is None else self.activation(x)

    def _dropped_bias(self, seed):
        if self.bias is None or not self.drop_bias:
            return self.bias
        return dropped(ops.convert_to_tensor(self.bias), self.keep_prob, seed)

    def _batch_masked(self, inputs, seeds, index):
        """One kernel (and bias) mask, from seeds `2 * index` (+1 for bias)."""
        kernel = dropped(ops.convert_to_tensor(self.kernel), self.keep_prob,
                         seeds(2 * index))
        return self._linear(inputs, kernel, self._dropped_bias(seeds(2 * index + 1)))

    def _per_sample(self, inputs, ctx):
        """One mask per Monte Carlo sample of a tiled batch."""
        seeds = _SeedSplitter(ctx.seed_for(self))
        shape = ops.shape(inputs)
        x = ops.reshape(inputs, (ctx.tiles, -1) + tuple(shape[1:]))
        index = ops.arange(ctx.tiles, dtype="int32")
        if ctx.joint:
            index = index + ops.cast(ctx.sample_offset, "int32")

        def one_sample(args):
            xt, s = args
            return self._batch_masked(xt, seeds, s)

        y = ops.map(one_sample, (x, index))
        return ops.reshape(y, (-1,) + tuple(ops.shape(y)[2:]))

    def _gaussian_seed(self):
        """A fixed seed: the generator's first word (the layer seed) + a salt."""
        state = ops.convert_to_tensor(self.seed_generator.state)
        salt = ops.convert_to_tensor(_GAUSSIAN_SALT, dtype=state.dtype)
        return TensorSeed(ops.stack([state[0], salt]))

    def preactivation_moments(self, inputs):
        """Mean and variance of the pre-activation over the weight masks.

        With inverted scaling, `mean = x @ W + b` and
        `variance = (rate / keep_prob) (x*x) @ (W*W)`, plus
        `(rate / keep_prob) b^2` when the bias is dropped (for Conv2D the
        products are convolutions). These are the moments that
        `inference="gaussian"` matches.

        Args:
            inputs: a tensor, as for `call`.

        Returns:
            A tuple `(mean, variance)` of tensors shaped like the layer's
            pre-activation output.
        """
        kernel = ops.convert_to_tensor(self.kernel)
        mean = self._linear(inputs, kernel, self.bias)
        var = self._apply_kernel(inputs * inputs, kernel * kernel)
        if self.bias is not None and self.drop_bias:
            bias = ops.convert_to_tensor(self.bias)
            var = self._add_bias(var, bias * bias)
        return mean, var * ops.cast(self.rate / self.keep_prob, var.dtype)

    def _gaussian(self, inputs):
        """Wan et al.'s Algorithm 2: moment matching plus sampling."""
        if self.activation in (None, keras.activations.linear):
            # The average of u ~ N(mu, sigma^2) is exactly mu.
            return self._linear(inputs, self.kernel, self.bias)
        mu, var = self.preactivation_moments(inputs)
        std = ops.sqrt(ops.maximum(var, 0.0))

        z = self.inference_samples
        block = min(z, GAUSSIAN_BLOCK)
        blocks = -(-z // block)
        eps = keras.random.normal((z, self._units), seed=self._gaussian_seed(),
                                  dtype="float32")
        eps = ops.cast(eps, mu.dtype)
        weight = ops.ones((z,), mu.dtype)
        if blocks * block > z:
            extra = blocks * block - z
            eps = ops.pad(eps, [[0, extra], [0, 0]])
            weight = ops.pad(weight, [[0, extra]])
        eps = ops.reshape(eps, (blocks, block, self._units))
        weight = ops.reshape(weight, (blocks, block))
        rank = len(mu.shape)
        axis = self._channel_axis % rank
        eps_shape = [block] + [1] * rank
        eps_shape[1 + axis] = self._units
        mu_shape = tuple(ops.shape(mu))

        def block_sum(i):
            e = ops.reshape(ops.take(eps, i, axis=0), eps_shape)
            u = ops.reshape(mu[None] + std[None] * e, (-1,) + mu_shape[1:])
            a = ops.reshape(self.activation(u), (block,) + mu_shape)
            w = ops.reshape(ops.take(weight, i, axis=0), [block] + [1] * rank)
            return ops.sum(a * w, axis=0)

        if blocks == 1:
            total = block_sum(0)
        else:
            total = ops.fori_loop(
                1, blocks, lambda i, acc: acc + block_sum(i), block_sum(0)
            )
        return total / ops.cast(z, total.dtype)

    def _dropconnect_config(self):
        return {
            "rate": self.rate,
            "keep_prob": None,
            "mask": self.mask,
            "inference": self.inference,
            "inference_samples": self.inference_samples,
            "drop_bias": self.drop_bias,
            "seed": self.seed,
        }


# ----------------------------------------------------------------------------
# Dense
# ----------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="kreg")
class DropConnectDense(_DropConnect, keras.layers.Dense):
    """A `keras.layers.Dense` with DropConnect (Wan et al. 2013) on its weights.

    While training, every kernel entry (and bias entry, with `drop_bias=True`)
    is kept with probability `keep_prob = 1 - rate` and multiplied by
    `1 / keep_prob` when kept (inverted scaling: the expected weight is W), so
    the layer computes `activation(x @ (M * W) / keep_prob + b')`. Every
    argument of `keras.layers.Dense` works and is saved with the layer, and
    `get_weights()` is `[kernel, bias]` as for Dense. The random generator's
    state is saved with the model.

    Masks (`mask`):
      * `"batch"`: one kernel mask per call, shared by the whole batch (the
        common, cheap variant: one `in x out` mask per step).
      * `"example"`: an independent kernel mask for every example, the paper's
        definition. It needs `batch x in x out` mask elements per call,
        which costs far more than the matmul itself (see the README's
        benchmark). The masks are drawn once per call as packed bits
        (`kreg.layers._bernoulli.keep_words`: 32 per random word at
        `keep_prob = 0.5`, the same `2**-16` quantization as every kreg
        mask) and kept, as bits, for the backward pass
        (`batch x in x out / 8` bytes while a training step runs); the
        masked products are computed `example_chunk` examples (backward:
        as many input units) at a time, so the float temporaries are a few
        4 MiB tensors per loop iteration, not the whole batch's. On
        TensorFlow, in `fit`, `predict` or any `tf.function`, the forward
        pass and the backward pass are one XLA-compiled program each (the
        chunk loop, the unpacking of the bits and the products; compiled
        once per batch shape); eager calls run op by op. On JAX the
        model's `jit` compiles them.

    Inference (`inference`, when `training` is falsy):
      * `"mean"`: deterministic, `activation(x @ W + b)`.
      * `"gaussian"`: the paper's Algorithm 2. The pre-activation u of each
        unit is matched by a Gaussian with `mu = x @ W + b` and
        `sigma^2 = (rate / keep_prob) (x*x) @ (W*W)` (plus
        `(rate / keep_prob) b^2` when the bias is dropped); the output is the
        average of `activation(u)` over `inference_samples` draws of u. The
        draws use a fixed seed (the layer's seed), so the output is
        deterministic, and the same standard-normal draws serve every example,
        so an example's output does not depend on the rest of its batch. For
        a linear activation the exact mean `mu` is returned. Cost: the
        activation is evaluated `inference_samples x batch x ... x units`
        times, 32 draws at a time, so memory holds
        `min(inference_samples, 32) x batch x ... x units` values.
      * `"sample"`: draw a fresh mask at every call (from the layer's
        generator), for Monte Carlo averaging.

    Inside kreg's Monte Carlo sampling scope (`kreg.layers.base.sampling_scope`)
    the layer samples whatever `training` says: with Monte Carlo samples tiled
    along the batch, every sample gets its own kernel mask (`mask="batch"`) or
    every row its own (`mask="example"`); in joint mode each sample's mask is
    shared by all of its inputs and depends only on the seed, the layer and the
    sample index. Samples are a loop over the tiles: trace the call (a
    `tf.function`, `predict`) for speed, eagerly each one runs op by op.

    Args:
        units: int >= 1. Dimensionality of the output space.
        rate: float in [0, 1), default 0.5. The probability of dropping a
            weight. Mutually exclusive with `keep_prob`.
        keep_prob: float in (0, 1] or None, default None. The probability p of
            keeping a weight; `rate = 1 - keep_prob`.
        mask: `"batch"` (default) or `"example"`.
        inference: `"mean"` (default), `"gaussian"` or `"sample"`.
        inference_samples: int >= 1, default 256. Z, the number of Gaussian
            draws per unit of `inference="gaussian"`.
        drop_bias: bool, default True. Whether the bias is dropped too.
        example_chunk: int >= 1 or None, default None. Examples per chunk for
            `mask="example"`; None picks the largest chunk whose masks take at
            most 4 MiB (`example_chunk * in * out * 4` bytes).
        seed: int or None, default None. Seed of the layer's random stream.
        **dense_kwargs: every other `keras.layers.Dense` argument
            (`activation`, `use_bias`, initializers, regularizers,
            constraints, `lora_rank`, ...) and base layer arguments (`name`,
            `dtype`, ...).

    Call arguments:
        inputs: a tensor of shape `(batch, ..., input_dim)`.
        training: bool, default None (False). Whether to drop weights.

    Returns:
        A tensor of shape `(batch, ..., units)`.

    Example:

    >>> import keras, numpy as np, kreg
    >>> to_np = keras.ops.convert_to_numpy
    >>> layer = kreg.layers.DropConnectDense(3, rate=0.5, seed=1,
    ...                                      kernel_initializer="ones")
    >>> x = np.ones((2, 4), "float32")
    >>> to_np(layer(x)).tolist()  # mean inference: x @ W
    [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
    >>> y = to_np(layer(x, training=True))  # 2 x (number of kept weights)
    >>> bool(np.all(y % 2 == 0)) and bool(np.all(y[0] == y[1]))  # one mask
    True
    >>> per_example = kreg.layers.DropConnectDense(
    ...     64, mask="example", seed=2, kernel_initializer="ones")
    >>> y = to_np(per_example(np.ones((2, 100), "float32"), training=True))
    >>> bool(np.all(y[0] == y[1]))  # a different mask for every example
    False
    >>> relu = kreg.layers.DropConnectDense(
    ...     1, inference="gaussian", inference_samples=4096, seed=3,
    ...     activation="relu", kernel_initializer="ones", use_bias=False)
    >>> x = np.array([[1.0, -1.0]], "float32")  # mu = 0, sigma = sqrt(2)
    >>> out = float(to_np(relu(x))[0, 0])  # E relu(u) = sigma / sqrt(2 pi) = 0.564
    >>> abs(out - 0.564) < 0.05  # 4096 draws: standard error 0.013
    True

    References:
        Wan, Zeiler, Zhang, LeCun and Fergus, "Regularization of Neural
        Networks using DropConnect", ICML 2013: section 2 (the model),
        section 3 and Algorithm 2 (inference by moment matching).
    """

    def __init__(self, units, rate=DEFAULT_RATE, *, keep_prob=None,
                 mask="batch", inference="mean", inference_samples=256,
                 drop_bias=True, example_chunk=None, seed=None,
                 **dense_kwargs):
        owner = type(self).__name__
        units = v.check_int(owner, "units", units, low=1)
        mask = v.check_option(owner, "mask", mask, MASKS)
        example_chunk = v.check_int(owner, "example_chunk", example_chunk,
                                    low=1, allow_none=True)
        # Keras's Dense takes any truthy `use_bias`; a bias switch is a bool.
        v.check_bool(owner, "use_bias", dense_kwargs.get("use_bias", True))
        super().__init__(units, **dense_kwargs)
        self._init_dropconnect(rate, keep_prob, mask, inference,
                               inference_samples, drop_bias, seed)
        self.example_chunk = example_chunk

    @property
    def _units(self):
        return self.units

    def _apply_kernel(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def _add_bias(self, x, bias):
        return ops.add(x, bias)

    def _chunk(self, in_dim):
        if self.example_chunk is not None:
            return self.example_chunk
        return max(1, EXAMPLE_CHUNK_BYTES // (4 * in_dim * self.units))

    def _masked(self, inputs, seed):
        if self.mask == "batch":
            return super()._masked(inputs, seed)
        return self._per_example(inputs, _SeedSplitter(seed))

    def _tiled(self, inputs, ctx):
        if self.mask == "example" and not ctx.joint:
            return self._per_example(inputs, _SeedSplitter(ctx.seed_for(self)))
        return self._per_sample(inputs, ctx)

    def _per_example(self, inputs, seeds):
        """Independent masks per example (first axis); bias mask from seed 0."""
        kernel = ops.convert_to_tensor(self.kernel)
        in_dim = kernel.shape[0]
        shape = tuple(ops.shape(inputs))
        batch = shape[0]
        length = 1  # positions per example (no -1: the batch may be empty)
        for size in shape[1:-1]:
            length = length * size
        x3 = ops.reshape(inputs, (batch, length, in_dim))
        y = _example_matmul(x3, kernel, seeds(1), self.keep_prob,
                            self._chunk(in_dim))
        y = ops.reshape(y, shape[:-1] + (self.units,))
        if self.bias is None:
            return y
        bias = ops.convert_to_tensor(self.bias)
        if not self.drop_bias:
            return y + bias
        bias = dropped(ops.broadcast_to(bias, (batch, self.units)),
                       self.keep_prob, seeds(0))
        bias = ops.reshape(bias, (batch,) + (1,) * (len(shape) - 2)
                           + (self.units,))
        return y + bias

    def get_config(self):
        config = super().get_config()
        config.update(self._dropconnect_config())
        config["example_chunk"] = self.example_chunk
        return config


# ----------------------------------------------------------------------------
# Conv2D
# ----------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="kreg")
class DropConnectConv2D(_DropConnect, keras.layers.Conv2D):
    """A `keras.layers.Conv2D` with DropConnect (Wan et al. 2013) on its kernel.

    While training, every kernel entry (and bias entry, with `drop_bias=True`)
    is kept with probability `keep_prob = 1 - rate` and scaled by
    `1 / keep_prob` when kept; one mask is drawn per call (`mask="batch"`,
    the only mask of this layer: a mask per example would need a separate
    convolution per example). Every argument of `keras.layers.Conv2D` works
    and is saved with the layer; `get_weights()` is `[kernel, bias]`. The
    random generator's state is saved with the model.

    Inference (`inference`, when `training` is falsy): `"mean"` uses W;
    `"gaussian"` is the paper's Algorithm 2 with the moments computed by two
    convolutions, `mu = conv(x, W) + b` and
    `sigma^2 = (rate / keep_prob) conv(x*x, W*W)` (plus
    `(rate / keep_prob) b^2` when the bias is dropped), averaging the
    activation over `inference_samples` Gaussian draws per filter taken with a
    fixed seed (memory: `min(inference_samples, 32)` times the output size);
    `"sample"` draws a fresh mask at every call. Inside kreg's Monte Carlo
    sampling scope every tiled sample gets its own kernel mask (joint mode: a
    function of the seed, the layer and the sample index only).

    Args:
        filters: int >= 1. The number of output channels.
        kernel_size: int or tuple of 2 ints. The size of the convolution window.
        rate: float in [0, 1), default 0.5. The probability of dropping a
            weight. Mutually exclusive with `keep_prob`.
        keep_prob: float in (0, 1] or None, default None. The probability of
            keeping a weight; `rate = 1 - keep_prob`.
        mask: `"batch"` (default and only accepted value).
        inference: `"mean"` (default), `"gaussian"` or `"sample"`.
        inference_samples: int >= 1, default 256. Gaussian draws per unit.
        drop_bias: bool, default True. Whether the bias is dropped too.
        seed: int or None, default None. Seed of the layer's random stream.
        **conv_kwargs: every other `keras.layers.Conv2D` argument (`strides`,
            `padding`, `data_format`, `dilation_rate`, `groups`, `activation`,
            `use_bias`, initializers, regularizers, constraints, ...) and base
            layer arguments.

    Call arguments:
        inputs: a 4D tensor, `(batch, rows, cols, channels)` for
            `data_format="channels_last"`.
        training: bool, default None (False). Whether to drop weights.

    Returns:
        A 4D tensor, as `keras.layers.Conv2D` returns.

    Example:

    >>> import keras, numpy as np, kreg
    >>> to_np = keras.ops.convert_to_numpy
    >>> conv = kreg.layers.DropConnectConv2D(2, 3, rate=0.5, seed=1,
    ...                                      kernel_initializer="ones")
    >>> x = np.ones((1, 5, 5, 1), "float32")
    >>> tuple(conv(x).shape)
    (1, 3, 3, 2)
    >>> float(to_np(conv(x))[0, 0, 0, 0])  # mean inference: 9 ones
    9.0
    >>> y = to_np(conv(x, training=True))  # 2 x (kept weights) per filter
    >>> bool(np.all(y % 2 == 0)) and bool(np.all(y == y[:, :1, :1]))
    True

    References:
        Wan, Zeiler, Zhang, LeCun and Fergus, "Regularization of Neural
        Networks using DropConnect", ICML 2013: sections 2-3, Algorithm 2.
    """

    def __init__(self, filters, kernel_size, rate=DEFAULT_RATE, *,
                 keep_prob=None, mask="batch", inference="mean",
                 inference_samples=256, drop_bias=True, seed=None,
                 **conv_kwargs):
        owner = type(self).__name__
        filters = v.check_int(owner, "filters", filters, low=1)
        if not isinstance(mask, str):
            raise v.invalid_type(owner, "mask", "'batch'", mask)
        if mask != "batch":
            raise v.invalid_value(
                owner, "mask",
                "'batch' (DropConnectConv2D draws one kernel mask per call; "
                "per-example masks, mask='example', are only implemented for "
                "DropConnectDense)",
                mask,
            )
        v.check_bool(owner, "use_bias", conv_kwargs.get("use_bias", True))
        super().__init__(filters, kernel_size, **conv_kwargs)
        self._init_dropconnect(rate, keep_prob, mask, inference,
                               inference_samples, drop_bias, seed)

    @property
    def _units(self):
        return self.filters

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _apply_kernel(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)

    def _add_bias(self, x, bias):
        if self.data_format == "channels_last":
            shape = (1,) * (self.rank + 1) + (self.filters,)
        else:
            shape = (1, self.filters) + (1,) * self.rank
        return ops.add(x, ops.reshape(bias, shape))

    def get_config(self):
        config = super().get_config()
        config.update(self._dropconnect_config())
        return config

