"""Every public callable of Dropout, DropConnectDense (constructor), the
regularizers and the initializers, against every class of bad value that
applies: a clear error in kreg's one wording, or the documented right result.

Each probe is one row: (callable, bad value) -> expectation. A probe that was
expected to fail and returns silently fails the test with "silent result";
a probe with a documented right result checks that result. The wrong-type
error is `kreg.errors.ArgumentTypeError`, which is a `TypeError` (kreg's
convention) and a `ValueError` (what Keras raises for the same arguments).
"""

import math
import pickle
import re

import keras
import numpy as np
import pytest

import kreg
from kreg.errors import ArgumentTypeError

NAN = float("nan")
INF = float("inf")
X = np.ones((4, 6), "float32")
W = np.array([[1.0, -2.0], [0.5, 0.0]], "float32")


class Type:
    """A wrong type: ArgumentTypeError naming `arg` of `owner`."""

    def __init__(self, owner, arg):
        self.owner, self.arg = owner, arg


class Value(Type):
    """A wrong value: ValueError (not a type error) naming `arg` of `owner`."""


class Ok:
    """The documented right result, checked by `check(result)`."""

    def __init__(self, check, what):
        self.check, self.what = check, what


class KerasError:
    """An argument kreg forwards to Keras: Keras's own error for it."""

    def __init__(self, exc, match):
        self.exc, self.match = exc, match


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _zero_penalty(reg):
    return float(_np(reg(W))) == 0.0


def _built_model(*layers):
    return keras.Sequential([keras.Input((3,)), *layers])


PROBES = []


def probe(name, thunk, expect):
    PROBES.append(pytest.param(thunk, expect, id=name))


# ---------------------------------------------------------------------------
# kreg.layers.Dropout: constructor
# ---------------------------------------------------------------------------
D = kreg.layers.Dropout
for value, expect in [
    ("0.5", Type), (None, Type), (True, Type), (NAN, Value), (INF, Value),
    (-0.1, Value), (1.0, Value), (1.5, Value),
]:
    probe(f"Dropout-rate={value!r}", lambda value=value: D(rate=value),
          expect("Dropout", "rate"))
probe("Dropout-rate=0-identity", lambda: D(0.0)(X, training=True),
      Ok(lambda out: np.array_equal(_np(out), X), "rate 0 is the identity"))
for value, expect in [
    ("0.5", Type), (NAN, Value), (INF, Value), (-0.1, Value), (0.0, Value),
    (1.5, Value),
]:
    probe(f"Dropout-keep_prob={value!r}", lambda value=value: D(keep_prob=value),
          expect("Dropout", "keep_prob"))
probe("Dropout-rate-and-keep_prob", lambda: D(0.2, keep_prob=0.8),
      Value("Dropout", "keep_prob"))
for value, expect in [
    ("abc", Type), (5, Type), ((20, 1.5, 10), Type), ((NAN, 2), Type),
    ((True, 2), Type), ((-1, 2), Value), ((0, 2), Value),
]:
    probe(f"Dropout-noise_shape={value!r}",
          lambda value=value: D(0.5, noise_shape=value),
          expect("Dropout", "noise_shape"))
for value, expect in [("1", Type), (1.5, Type), (NAN, Type), (-1, Value)]:
    probe(f"Dropout-seed={value!r}", lambda value=value: D(0.5, seed=value),
          expect("Dropout", "seed"))
for value, expect in [("vanilla", Value), ("", Value), (None, Type), (3, Type)]:
    probe(f"Dropout-scaling={value!r}", lambda value=value: D(scaling=value),
          expect("Dropout", "scaling"))
probe("Dropout-keras-positional-order", lambda: D(0.2, (None, 1, 8), 3),
      Ok(lambda d: (d.rate, d.noise_shape, d.seed) == (0.2, (None, 1, 8), 3),
         "Keras's order: rate, noise_shape, seed"))

# ---------------------------------------------------------------------------
# kreg.layers.Dropout: call
# ---------------------------------------------------------------------------
INTS = np.ones((4, 6), "int32")
probe("Dropout.call-inputs=None", lambda: D(0.5)(None, training=True),
      Type("Dropout", "inputs"))
probe("Dropout.call-inputs=None-inference", lambda: D(0.5)(None),
      Type("Dropout", "inputs"))
probe("Dropout.call-int-training", lambda: D(0.5)(INTS, training=True),
      Type("Dropout", "inputs"))
probe("Dropout.call-int-test_time-inference",
      lambda: D(0.5, scaling="test_time")(INTS, training=False),
      Type("Dropout", "inputs"))
probe("Dropout.call-int-test_time-training",
      lambda: D(0.5, scaling="test_time")(INTS, training=True),
      Type("Dropout", "inputs"))
probe("Dropout.call-int-inverted-inference", lambda: D(0.5)(INTS, training=False),
      Ok(lambda out: np.array_equal(_np(out), INTS) and _np(out).dtype == np.int32,
         "the identity, as Keras's Dropout"))
probe("Dropout.call-bool-training", lambda: D(0.5)(INTS > 0, training=True),
      Type("Dropout", "inputs"))
probe("Dropout.call-training='yes'", lambda: D(0.5)(X, training="yes"),
      Type("Dropout", "training"))
probe("Dropout.call-training=2", lambda: D(0.5)(X, training=2),
      Type("Dropout", "training"))
probe("Dropout.call-noise_shape-wrong-rank",
      lambda: D(0.5, noise_shape=(None, 1, 6))(X, training=True),
      Value("Dropout", "noise_shape"))
probe("Dropout.call-noise_shape-lower-rank",
      lambda: D(0.5, noise_shape=(1,))(np.ones((4, 6, 2), "float32"), training=True),
      Value("Dropout", "noise_shape"))
probe("Dropout.call-noise_shape-wrong-size",
      lambda: D(0.5, noise_shape=(None, 5))(X, training=True),
      Value("Dropout", "noise_shape"))
probe("Dropout.call-noise_shape-wrong-batch",
      lambda: D(0.5, noise_shape=(20, 1))(X, training=True),
      Value("Dropout", "noise_shape"))
probe("Dropout.call-0-rows",
      lambda: D(0.5, seed=1)(np.ones((0, 6), "float32"), training=True),
      Ok(lambda out: _np(out).shape == (0, 6), "an empty output of the same shape"))
probe("Dropout.call-nan-inputs",
      lambda: D(0.5, seed=1)(np.full((50, 6), NAN, "float32"), training=True),
      Ok(lambda out: np.isnan(_np(out)).any() and (_np(out) == 0).any(),
         "NaN where kept (NaN / keep_prob), exact 0 where dropped"))
probe("Dropout.call-inf-inputs",
      lambda: D(0.5, seed=1)(np.full((50, 6), INF, "float32"), training=True),
      Ok(lambda out: set(np.unique(_np(out))) == {0.0, INF}, "inf where kept, 0 where dropped"))

# ---------------------------------------------------------------------------
# kreg.regularizers: constructors, aliases, calls, from_ratio
# ---------------------------------------------------------------------------
R = kreg.regularizers
COEFS = [  # (public name, owner in the message, argument)
    ("L1", "L1", "l1"), ("l1", "L1", "l1"), ("L2", "L2", "l2"), ("l2", "L2", "l2"),
    ("ElasticNet", "ElasticNet", "l1"), ("ElasticNet", "ElasticNet", "l2"),
    ("L1L2", "L1L2", "l1"), ("l1_l2", "L1L2", "l2"),
]
for public, owner, arg in COEFS:
    cls = getattr(R, public)
    for value, expect in [
        ("0.1", Type), (None, Type), ([0.1], Type), (NAN, Value), (INF, Value),
        (-INF, Value), (-1.0, Value),
    ]:
        probe(f"{public}-{arg}={value!r}",
              lambda cls=cls, arg=arg, value=value: cls(**{arg: value}),
              expect(owner, arg))
    zero = {"l1": 0.0, "l2": 0.0} if owner in ("ElasticNet", "L1L2") else {arg: 0.0}
    probe(f"{public}-{arg}=0-zero-penalty", lambda cls=cls, zero=zero: cls(**zero),
          Ok(_zero_penalty, "a zero penalty"))
for cls, owner in [(R.L1, "L1"), (R.L2, "L2"), (R.ElasticNet, "ElasticNet"),
                   (R.L1L2, "L1L2")]:
    for label, value in [("list", [[1.0]]), ("None", None), ("str", "abc"),
                         ("int-tensor", np.ones((2, 2), "int32")),
                         ("bool-tensor", np.ones((2, 2), bool))]:
        probe(f"{owner}.__call__-x={label}", lambda cls=cls, value=value: cls()(value),
              Type(f"{owner}.__call__", "x"))
    probe(f"{owner}.__call__-0-rows",
          lambda cls=cls: cls(0.1)(np.ones((0, 3), "float32")),
          Ok(lambda out: float(_np(out)) == 0.0, "the penalty of no weights is 0"))
    probe(f"{owner}.__call__-nan-weights",
          lambda cls=cls: cls(0.1)(np.full((2, 2), NAN, "float32")),
          Ok(lambda out: math.isnan(float(_np(out))), "NaN weights give a NaN penalty"))
for arg, value, expect in [
    ("alpha", "1", Type), ("alpha", None, Type), ("alpha", NAN, Value),
    ("alpha", INF, Value), ("alpha", -1.0, Value), ("l1_ratio", None, Type),
    ("l1_ratio", NAN, Value), ("l1_ratio", -0.1, Value), ("l1_ratio", 1.5, Value),
]:
    kwargs = {"alpha": 0.1, "l1_ratio": 0.5, arg: value}
    probe(f"ElasticNet.from_ratio-{arg}={value!r}",
          lambda kwargs=kwargs: R.ElasticNet.from_ratio(**kwargs),
          expect("ElasticNet.from_ratio", arg))
probe("ElasticNet.from_ratio-alpha=0", lambda: R.ElasticNet.from_ratio(0.0),
      Ok(_zero_penalty, "a zero penalty"))
probe("L1L2.from_ratio-l1_ratio=2", lambda: R.L1L2.from_ratio(0.1, 2.0),
      Value("L1L2.from_ratio", "l1_ratio"))

# ---------------------------------------------------------------------------
# kreg.regularizers.get
# ---------------------------------------------------------------------------
GET = ("kreg.regularizers.get", "identifier")
for label, value, expect in [
    ("int", 3, Type), ("float", 1.5, Type), ("nan", NAN, Type), ("list", ["l2"], Type),
    ("object", object(), Type), ("empty-string", "", Value), ("unknown", "l3", Value),
    ("typo", "typo", Value), ("kreg>Dropout", "kreg>Dropout", Type),
    ("kreg>EarlyStopping", "kreg>EarlyStopping", Type),
    ("kreg>HeNormal", "kreg>HeNormal", Type),
    ("layer-class", kreg.layers.Dropout, Type),
    ("layer", kreg.layers.Dropout(0.5), Type),
    ("initializer", kreg.initializers.HeNormal(), Type),
    ("callback", kreg.callbacks.EarlyStopping(), Type),
    ("bad-dict", {"bad": "dict"}, Value),
    ("empty-dict", {}, Value),
    ("unknown-class-dict", {"class_name": "Nope", "config": {}}, Type),
    ("layer-dict", {"class_name": "kreg>Dropout", "config": {"rate": 0.1}}, Type),
    ("bad-config-dict", {"class_name": "kreg>L2", "config": {"l2": -1.0}}, Value),
]:
    probe(f"get-{label}", lambda value=value: R.get(value), expect(*GET))
for label, value, check in [
    ("None", None, lambda r: r is None),
    ("L2-class", R.L2, lambda r: type(r) is R.L2 and r.l2 == 0.01),
    ("l1_l2-alias-class", R.l1_l2, lambda r: type(r) is R.L1L2 and (r.l1, r.l2) == (0, 0)),
    ("keras-L1L2-class", keras.regularizers.L1L2,
     lambda r: isinstance(r, keras.regularizers.L1L2)),
    ("name-l1l2", "l1l2", lambda r: type(r) is R.L1L2 and (r.l1, r.l2) == (0, 0)),
    ("name-L1L2", "L1L2", lambda r: type(r) is R.L1L2),
    ("function", np.sum, lambda r: r is np.sum),
]:
    probe(f"get-{label}", lambda value=value: R.get(value), Ok(check, "as Keras's get"))

# ---------------------------------------------------------------------------
# kreg.regularizers.apply and penalty
# ---------------------------------------------------------------------------
APPLY = "kreg.regularizers.apply"
for label, thunk, expect in [
    ("model=str", lambda: R.apply("x", kernel="l2"), Type(APPLY, "model")),
    ("model=None", lambda: R.apply(None, kernel="l2"), Type(APPLY, "model")),
    ("model=unbuilt", lambda: R.apply(keras.Sequential([keras.layers.Dense(2)]),
                                      kernel="l2"), Value(APPLY, "model")),
    ("model-without-kernels", lambda: R.apply(_built_model(D(0.5)), kernel="l2"),
     Value(APPLY, "model")),
    ("bias-without-biases",
     lambda: R.apply(_built_model(keras.layers.Dense(2, use_bias=False)), bias="l1"),
     Value(APPLY, "model")),
    ("kernel=kreg>Dropout",
     lambda: R.apply(_built_model(keras.layers.Dense(2)), kernel="kreg>Dropout"),
     Type(APPLY, "kernel")),
    ("kernel=int", lambda: R.apply(_built_model(keras.layers.Dense(2)), kernel=3),
     Type(APPLY, "kernel")),
    ("kernel=unknown", lambda: R.apply(_built_model(keras.layers.Dense(2)), kernel="l3"),
     Value(APPLY, "kernel")),
    ("bias=bad-dict",
     lambda: R.apply(_built_model(keras.layers.Dense(2)), bias={"bad": "dict"}),
     Value(APPLY, "bias")),
]:
    probe(f"apply-{label}", thunk, expect)
probe("apply-kernel=L2-class",
      lambda: R.apply(_built_model(keras.layers.Dense(2)), kernel=R.L2),
      Ok(lambda layers: type(layers[0].kernel_regularizer) is R.L2
         and layers[0].kernel_regularizer.l2 == 0.01, "the class, instantiated"))
PENALTY = "kreg.regularizers.penalty"
for label, value, expect in [
    ("str", "x", Type), ("None", None, Type), ("int", 3, Type),
    ("unbuilt", keras.Sequential([keras.layers.Dense(2)]), Value),
]:
    probe(f"penalty-model={label}", lambda value=value: R.penalty(value),
          expect(PENALTY, "model"))
probe("penalty-no-penalties", lambda: R.penalty(_built_model(keras.layers.Dense(2))),
      Ok(lambda r: r == (0.0, {}), "no penalty: (0.0, {})"))

# ---------------------------------------------------------------------------
# kreg.initializers.HeNormal: constructor, call, variance
# ---------------------------------------------------------------------------
H = kreg.initializers.HeNormal
for arg, value, expect in [
    ("seed", "1", Type), ("seed", 1.5, Type), ("seed", NAN, Type), ("seed", -1, Value),
    ("mode", "fan_x", Value), ("mode", None, Type), ("mode", "", Value),
    ("negative_slope", "0", Type), ("negative_slope", None, Type),
    ("negative_slope", NAN, Value), ("negative_slope", INF, Value),
    ("negative_slope", -0.1, Value),
    ("distribution", "gauss", Value), ("distribution", None, Type),
    ("keep_prob", "1", Type), ("keep_prob", None, Type), ("keep_prob", NAN, Value),
    ("keep_prob", 0.0, Value), ("keep_prob", -0.5, Value), ("keep_prob", 1.5, Value),
]:
    probe(f"HeNormal-{arg}={value!r}", lambda arg=arg, value=value: H(**{arg: value}),
          expect("HeNormal", arg))
for label, args, expect in [
    ("shape=str", ("abc",), Type("HeNormal", "shape")),
    ("shape=None", (None,), Type("HeNormal", "shape")),
    ("shape-negative", ((2, -3),), Value("HeNormal", "shape")),
    ("shape-float", ((2.5, 3),), Type("HeNormal", "shape")),
    ("shape-nan", ((NAN, 3),), Type("HeNormal", "shape")),
    ("dtype=int32", ((2, 3), "int32"), Value("HeNormal", "dtype")),
    ("dtype=unknown", ((2, 3), "nope"), Value("HeNormal", "dtype")),
]:
    probe(f"HeNormal.__call__-{label}", lambda args=args: H(seed=1)(*args), expect)
probe("HeNormal.__call__-0-rows", lambda: H(seed=1)((0, 3)),
      Ok(lambda w: _np(w).shape == (0, 3), "an empty kernel, as Keras's"))
for value, expect in [("a", Type), (None, Type), (NAN, Value), (INF, Value),
                      (-5, Value)]:
    probe(f"HeNormal.variance-n={value!r}", lambda value=value: H().variance(value),
          expect("HeNormal.variance", "n"))
probe("HeNormal.variance-n=0", lambda: H().variance(0),
      Ok(lambda var: var == 2.0, "a fan below 1 counts as 1, as in Keras"))

# ---------------------------------------------------------------------------
# kreg.layers.DropConnectDense: constructor (its call has its own tests)
# ---------------------------------------------------------------------------
DC = kreg.layers.DropConnectDense
for arg, value, expect in [
    ("units", "4", Type), ("units", None, Type), ("units", 1.5, Type),
    ("units", NAN, Type), ("units", 0, Value), ("units", -1, Value),
    ("rate", "0.5", Type), ("rate", None, Type), ("rate", NAN, Value),
    ("rate", -0.1, Value), ("rate", 1.0, Value),
    ("keep_prob", 0.0, Value), ("keep_prob", 1.5, Value), ("keep_prob", "1", Type),
    ("mask", "row", Value), ("mask", None, Type),
    ("inference", "mode", Value), ("inference", None, Type),
    ("inference_samples", 0, Value), ("inference_samples", -1, Value),
    ("inference_samples", 1.5, Type), ("inference_samples", None, Type),
    ("drop_bias", "yes", Type), ("drop_bias", None, Type),
    ("example_chunk", 0, Value), ("example_chunk", -1, Value),
    ("example_chunk", 1.5, Type),
    ("seed", -1, Value), ("seed", "1", Type),
    ("use_bias", "x", Type), ("use_bias", None, Type),
]:
    kwargs = {"units": 4, arg: value}
    probe(f"DropConnectDense-{arg}={value!r}", lambda kwargs=kwargs: DC(**kwargs),
          expect("DropConnectDense", arg))
probe("DropConnectDense-keras-positional-activation", lambda: DC(4, "relu"),
      Type("DropConnectDense", "rate"))
probe("DropConnectDense-activation=unknown", lambda: DC(4, activation="nope"),
      KerasError(ValueError, "Could not interpret activation function identifier"))
probe("DropConnectDense-unknown-keyword", lambda: DC(4, bogus=1),
      KerasError(ValueError, "Unrecognized keyword arguments"))


def _kreg_wording(owner, arg):
    return (rf"Invalid value for argument `{re.escape(arg)}` of {re.escape(owner)}: "
            rf"expected .+\. Received: ")


@pytest.mark.parametrize("thunk, expect", PROBES)
def test_bad_input(thunk, expect):
    try:
        result = thunk()
    except Exception as err:  # noqa: BLE001 - the class is asserted below
        if isinstance(expect, Ok):
            raise AssertionError(f"expected {expect.what}, got an error") from err
        if isinstance(expect, KerasError):
            assert isinstance(err, expect.exc), repr(err)
            assert re.search(expect.match, str(err)), str(err)
            return
        message = str(err)
        assert re.search(_kreg_wording(expect.owner, expect.arg), message), message
        if isinstance(expect, Value):
            assert isinstance(err, ValueError) and not isinstance(err, TypeError), \
                repr(err)
        else:
            assert isinstance(err, ArgumentTypeError), repr(err)
        return
    if not isinstance(expect, Ok):
        pytest.fail(f"silent result: expected an error, got {result!r}")
    assert expect.check(result), f"expected {expect.what}, got {result!r}"


def test_the_table_is_wide():
    assert len(PROBES) >= 200


def test_argument_type_error_is_a_type_error_and_a_value_error():
    assert issubclass(ArgumentTypeError, TypeError)
    assert issubclass(ArgumentTypeError, ValueError)
    assert kreg.errors.__all__ == ["ArgumentTypeError"]
    # What Keras's own tests catch, and what kreg's convention promises.
    for catch in (TypeError, ValueError):
        with pytest.raises(catch, match=r"`noise_shape` of Dropout"):
            kreg.layers.Dropout(0.5, noise_shape="Invalid")
        with pytest.raises(catch, match=r"element 1.5 of type float"):
            kreg.layers.Dropout(0.5, noise_shape=(20, 1.5, 10))
    err = ArgumentTypeError("Invalid value for argument `x` of f: expected y. Received: x=1")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ArgumentTypeError and str(again) == str(err)
    assert repr(ArgumentTypeError).startswith("<class 'kreg.errors.")
