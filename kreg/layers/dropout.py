"""Dropout with inverted or vanilla (test-time) scaling."""

import keras
import numpy as np
from keras import ops

from kreg import _compat
from kreg import _validation as v
from kreg.layers._bernoulli import dropped
from kreg.layers._bernoulli import where_kept
from kreg.layers.base import DEFAULT_RATE
from kreg.layers.base import StochasticLayer

SCALINGS = ("inverted", "test_time")


def validate_noise_shape(owner, noise_shape):
    """Validate `noise_shape` as Keras's Dropout does; return a tuple or None."""
    if noise_shape is None:
        return None
    expected = "None or a tuple/list of positive integers or None"
    if isinstance(noise_shape, (str, bytes)):
        raise v.invalid_type(owner, "noise_shape", expected, noise_shape)
    try:
        shape = tuple(noise_shape)
    except TypeError:
        raise v.invalid_type(owner, "noise_shape", expected, noise_shape) from None
    out = []
    for dim in shape:
        if dim is None:
            out.append(None)
            continue
        if isinstance(dim, bool) or not hasattr(dim, "__index__"):
            raise v.invalid_type(owner, "noise_shape", expected, noise_shape,
                                 element=dim)
        if int(dim) <= 0:
            raise v.invalid_value(owner, "noise_shape", expected, noise_shape)
        out.append(int(dim))
    return tuple(out)


_SCALABLE = (
    "a floating-point tensor (dropout scales its input by 1/keep_prob while "
    "training, and by keep_prob at inference with scaling='test_time'; an "
    "integer tensor cannot hold that)"
)


def validate_call(layer, inputs, training, ctx):
    """Check `call`'s arguments in kreg's wording before anything is drawn.

    `inputs` must be a tensor; a floating one wherever the layer scales it
    (drawing a mask, or `scaling="test_time"` at inference). `training` is
    None, a bool (0/1 too, as old Keras code passes) or a scalar tensor.
    When a mask is drawn, `noise_shape` must have the rank of `inputs` and
    each fixed size must be 1 or the input's size: Keras's `dropout` would
    otherwise broadcast the output to another shape without an error. The
    batch size is not compared while Monte Carlo sampling (the batch is then
    the tiled samples).
    """
    owner = type(layer).__name__
    if not (hasattr(inputs, "dtype") and hasattr(inputs, "shape")):
        raise v.invalid_type(owner, "inputs", "a tensor", inputs)
    if not (training is None or isinstance(training, (bool, np.bool_))
            or (isinstance(training, int) and training in (0, 1))
            or (hasattr(training, "dtype") and tuple(training.shape) == ())):
        raise v.invalid_type(
            owner, "training", "None, a bool or a scalar boolean tensor", training)
    if layer.rate == 0.0:
        return
    # A tensor `training` may take either branch: check as if it draws.
    draws = ctx is not None or hasattr(training, "dtype") or bool(training)
    if draws or layer.scaling == "test_time":
        v.check_float_tensor(owner, "inputs", inputs, _SCALABLE)
    if draws and layer.noise_shape is not None:
        check_noise_shape_fits(owner, layer.noise_shape, tuple(inputs.shape),
                               skip_batch=ctx is not None)


def check_noise_shape_fits(owner, noise_shape, input_shape, skip_batch=False):
    """Refuse a `noise_shape` that does not broadcast to `input_shape`."""
    fits = len(noise_shape) == len(input_shape) and all(
        d is None or d == 1 or n is None or d == n
        for i, (d, n) in enumerate(zip(noise_shape, input_shape))
        if not (skip_batch and i == 0)
    )
    if not fits:
        raise ValueError(v.error_message(
            owner, "noise_shape",
            f"a shape of the inputs' rank {len(input_shape)} whose fixed sizes "
            f"are 1 or the inputs' sizes {input_shape}", noise_shape,
            received=f"noise_shape={noise_shape} for inputs of shape {input_shape}"))


def _covers(noise_shape, input_shape):
    """Whether a mask of `noise_shape` has the full (static) `input_shape`."""
    return noise_shape is None or all(
        d is None or d == n for d, n in zip(noise_shape, input_shape))


def concrete_noise_shape(noise_shape, inputs):
    """Fill the `None` entries of `noise_shape` from the shape of `inputs`."""
    shape = ops.shape(inputs)
    if noise_shape is None:
        return tuple(shape)
    return tuple(shape[i] if d is None else d for i, d in enumerate(noise_shape))


@keras.saving.register_keras_serializable(package="kreg")
class Dropout(StochasticLayer):
    """Dropout (Srivastava et al. 2014) with inverted or test-time scaling.

    During training each unit is kept with probability `keep_prob = 1 - rate`
    (a Bernoulli mask, broadcast over `noise_shape`) and dropped otherwise.
    With `scaling="inverted"` (the default, and what Keras does) kept units are
    multiplied by `1 / keep_prob` while training and the layer is the identity
    at inference. With `scaling="test_time"` (the paper's vanilla dropout)
    nothing is scaled while training and the outputs are multiplied by
    `keep_prob` at inference. Both give `E[training output] = inference
    output`. Unlike `keras.layers.Dropout`, the random generator's state is
    saved with the model, so training resumed from a saved model draws the
    same masks the original would have.

    The positional order is Keras's, `Dropout(rate, noise_shape, seed)`, so
    `kreg.layers.Dropout(0.2, (None, 1, 8), 3)` means what it means for
    `keras.layers.Dropout`; kreg's own arguments (`keep_prob`, `scaling`) are
    keyword-only.

    Args:
        rate: float in [0, 1), default 0.5. The probability of dropping a
            unit. Mutually exclusive with `keep_prob`.
        noise_shape: tuple of ints or None, default None. The shape of the
            mask, broadcast against the input; `None` entries take the input's
            size, e.g. `(None, 1, C)` keeps or drops whole channels across
            time steps.
        seed: int or None, default None. Seed of the layer's random stream.
        keep_prob: float in (0, 1] or None, default None, keyword-only. The
            textbook's p, the probability of keeping a unit;
            `rate = 1 - keep_prob`.
        scaling: `"inverted"` (default) or `"test_time"`, keyword-only.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of any rank. A floating-point tensor wherever the
            layer scales it: while training or sampling, and at inference
            with `scaling="test_time"`. An integer or bool tensor there is an
            `ArgumentTypeError` (a scaled integer cannot hold `x / keep_prob`
            or `keep_prob * x`; Keras also refuses it while training). Where
            the layer is the identity (inference with inverted scaling,
            `rate=0`) any dtype passes through unchanged, as in Keras.
        training: bool, default None (False). Whether to drop units.

    Returns:
        A tensor of the same shape and dtype as `inputs`.

    Example:

    >>> import numpy as np, kreg
    >>> layer = kreg.layers.Dropout(0.5, seed=1)
    >>> x = np.ones((2, 4), "float32")
    >>> sorted(set(np.asarray(layer(x, training=True)).ravel().tolist()))
    [0.0, 2.0]
    >>> np.asarray(layer(x, training=False)).tolist()
    [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    >>> vanilla = kreg.layers.Dropout(keep_prob=0.8, scaling="test_time")
    >>> np.asarray(vanilla(x)).astype("float64").round(3).tolist()[0]
    [0.8, 0.8, 0.8, 0.8]

    References:
        Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks
        from Overfitting", JMLR 15, 2014, sections 2-4 and 10.
    """

    def __init__(self, rate=DEFAULT_RATE, noise_shape=None, seed=None, *,
                 keep_prob=None, scaling="inverted", **kwargs):
        super().__init__(**kwargs)
        self._init_stochastic(rate, keep_prob, seed)
        self.scaling = v.check_option("Dropout", "scaling", scaling, SCALINGS)
        self.noise_shape = validate_noise_shape("Dropout", noise_shape)
        self.supports_masking = True
        _compat.build_at_init(self)

    # ------------------------------------------------------------------
    def _check_call(self, inputs, training, ctx):
        validate_call(self, inputs, training, ctx)

    def _train(self, inputs):
        return self._drop(inputs, self.noise_shape, self.training_seed())

    def _infer(self, inputs):
        if self.scaling == "test_time" and self.rate > 0.0:
            return inputs * ops.cast(self.keep_prob, inputs.dtype)
        return inputs

    def _drop(self, inputs, noise_shape, seed):
        """Drop units of `inputs` with one mask of `noise_shape` from `seed`."""
        if _covers(noise_shape, inputs.shape):
            # A mask of the inputs' shape: the same mask and product as
            # below, fused where the backend allows.
            return dropped(inputs, self.keep_prob, seed,
                           divide=self.scaling == "inverted")
        noise = concrete_noise_shape(noise_shape, inputs)
        return self._apply(inputs, self.keep_mask(noise, seed))

    def _apply(self, inputs, keep):
        """`inputs` where `keep` (broadcast), else 0; scaled as `scaling` says."""
        # As Keras: kept units are `inputs / keep_prob` with inverted scaling.
        return where_kept(keep, inputs, self.keep_prob,
                          divide=self.scaling == "inverted")

    def _sample(self, inputs, ctx):
        """One Monte Carlo draw per tiled sample (see `SamplingContext`)."""
        if not ctx.joint and (self.noise_shape is None or self.noise_shape[0] != 1):
            # Per-row masks: rows of different samples are independent already.
            # A fixed batch size other than 1 in noise_shape means one mask per
            # row too; it is read as None because the predictor may pad the
            # rows of a chunk (to reuse compiled functions).
            noise_shape = self.noise_shape
            if noise_shape is not None:
                noise_shape = (None,) + tuple(noise_shape[1:])
            return self._drop(inputs, noise_shape, ctx.seed_for(self))
        t = ctx.tiles
        shape = ops.shape(inputs)
        per_sample = (-1,) + tuple(shape[1:])
        x = ops.reshape(inputs, (t,) + per_sample)
        noise = concrete_noise_shape(self.noise_shape, inputs)
        seed = ctx.seed_for(self)
        if ctx.joint:
            # One network per sample: a mask over the feature axes, shared by
            # every input of the sample, a function of (seed, layer, t) only.
            full = (ctx.total_samples, 1) + tuple(noise[1:])
            keep = self.keep_mask(full, seed)
            keep = ops.slice(keep, (ctx.sample_offset,) + (0,) * (len(full) - 1),
                             (t,) + full[1:])
        else:
            # A mask shared by the inputs of a sample (noise_shape[0] fixed):
            # one per sample, so samples stay independent.
            keep = self.keep_mask((t,) + tuple(noise), seed)
        return ops.reshape(self._apply(x, keep), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            rate=self.rate,
            keep_prob=None,
            scaling=self.scaling,
            noise_shape=self.noise_shape,
            seed=self.seed,
        )
        return config
