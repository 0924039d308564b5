"""Every public callable of MCPredictor, MCPrediction and kreg.acquisition
against every class of bad value that applies: a clear error in kreg's one
wording, never a silent result.

Classes: wrong type, None, NaN, inf, negative, zero, out of range, unknown
string, wrong shape, wrong rank, 0 rows, wrong label range.
"""

import re

import keras
import numpy as np
import pytest

import kreg
from kreg import acquisition as acq

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    cls = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                            kreg.layers.Dropout(0.5),
                            keras.layers.Dense(3, activation="softmax")])
    reg = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                            kreg.layers.Dropout(0.5), keras.layers.Dense(1)])
    sig = keras.Sequential([keras.Input((4,)), kreg.layers.Dropout(0.5),
                            keras.layers.Dense(1, activation="sigmoid")])
    inp = keras.Input((4,), name="features")
    h = kreg.layers.Dropout(0.5)(keras.layers.Dense(8)(inp))
    two = keras.Model(inp, {"label": keras.layers.Dense(3, activation="softmax")(h),
                            "value": keras.layers.Dense(1)(h)})
    return {"cls": cls, "reg": reg, "sig": sig, "two": two}


X = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
Y = np.array([0, 1, 2, 0, 1, 2])
P = np.random.default_rng(1).dirichlet(np.ones(3), size=(5, 6))  # (T, N, C)


def _mcp(m, **kw):
    return kreg.MCPredictor(m, samples=3, seed=0, **kw)


def _pred(m):
    return _mcp(m).predict(X, verbose=0, return_samples=True)


def _calling(fn, value):
    return lambda models: fn(value)


# (id, call(models), exception, argument, owner)
CASES = [
    # -- MCPredictor(...) -------------------------------------------------------
    ("ctor model None", lambda m: kreg.MCPredictor(None), TypeError, "model", "MCPredictor"),
    ("ctor model str", lambda m: kreg.MCPredictor("model.keras"), TypeError, "model",
     "MCPredictor"),
    ("ctor samples None", lambda m: _mcp(m["cls"]).__class__(m["cls"], samples=None),
     TypeError, "samples", "MCPredictor"),
    ("ctor samples nan", lambda m: kreg.MCPredictor(m["cls"], NAN), TypeError, "samples",
     "MCPredictor"),
    ("ctor samples inf", lambda m: kreg.MCPredictor(m["cls"], INF), TypeError, "samples",
     "MCPredictor"),
    ("ctor samples negative", lambda m: kreg.MCPredictor(m["cls"], -5), ValueError,
     "samples", "MCPredictor"),
    ("ctor samples zero", lambda m: kreg.MCPredictor(m["cls"], 0), ValueError, "samples",
     "MCPredictor"),
    ("ctor samples str", lambda m: kreg.MCPredictor(m["cls"], "50"), TypeError, "samples",
     "MCPredictor"),
    ("ctor seed negative", lambda m: kreg.MCPredictor(m["cls"], seed=-1), ValueError,
     "seed", "MCPredictor"),
    ("ctor seed out of range", lambda m: kreg.MCPredictor(m["cls"], seed=2**32),
     ValueError, "seed", "MCPredictor"),
    ("ctor seed float", lambda m: kreg.MCPredictor(m["cls"], seed=1.5), TypeError, "seed",
     "MCPredictor"),
    ("ctor seed nan", lambda m: kreg.MCPredictor(m["cls"], seed=NAN), TypeError, "seed",
     "MCPredictor"),
    ("ctor max_batch zero", lambda m: kreg.MCPredictor(m["cls"], max_batch=0), ValueError,
     "max_batch", "MCPredictor"),
    ("ctor max_batch negative", lambda m: kreg.MCPredictor(m["cls"], max_batch=-64),
     ValueError, "max_batch", "MCPredictor"),
    ("ctor max_batch inf", lambda m: kreg.MCPredictor(m["cls"], max_batch=INF), TypeError,
     "max_batch", "MCPredictor"),
    ("ctor task unknown", lambda m: kreg.MCPredictor(m["cls"], task="classify"), ValueError,
     "task", "MCPredictor"),
    ("ctor task None", lambda m: kreg.MCPredictor(m["cls"], task=None), TypeError, "task",
     "MCPredictor"),
    ("ctor task list wrong length",
     lambda m: kreg.MCPredictor(m["two"], task=["auto"]), ValueError, "task", "MCPredictor"),
    ("ctor task dict unknown output",
     lambda m: kreg.MCPredictor(m["two"], task={"label": "auto", "valu": "auto"}),
     ValueError, "task", "MCPredictor"),
    ("ctor from_logits str", lambda m: kreg.MCPredictor(m["reg"], from_logits="yes"),
     TypeError, "from_logits", "MCPredictor"),
    ("ctor from_logits on softmax", lambda m: kreg.MCPredictor(m["cls"], from_logits=True),
     ValueError, "from_logits", "MCPredictor"),
    ("ctor from_logits with regression",
     lambda m: kreg.MCPredictor(m["reg"], from_logits=True, task="regression"),
     ValueError, "task", "MCPredictor"),
    ("ctor joint int", lambda m: kreg.MCPredictor(m["cls"], joint=1), TypeError, "joint",
     "MCPredictor"),
    ("ctor joint None", lambda m: kreg.MCPredictor(m["cls"], joint=None), TypeError,
     "joint", "MCPredictor"),
    # -- MCPredictor.predict -----------------------------------------------------
    ("predict x None", lambda m: _mcp(m["cls"]).predict(None), TypeError, "x",
     "MCPredictor.predict"),
    ("predict x str", lambda m: _mcp(m["cls"]).predict("data.csv"), TypeError, "x",
     "MCPredictor.predict"),
    ("predict x nan", lambda m: _mcp(m["cls"]).predict(np.full((2, 4), np.nan)),
     ValueError, "x", "MCPredictor.predict"),
    ("predict x inf", lambda m: _mcp(m["cls"]).predict(np.full((2, 4), np.inf)),
     ValueError, "x", "MCPredictor.predict"),
    ("predict x 0 rows", lambda m: _mcp(m["cls"]).predict(np.zeros((0, 4))), ValueError,
     "x", "MCPredictor.predict"),
    ("predict x wrong features", lambda m: _mcp(m["cls"]).predict(np.zeros((3, 5))),
     ValueError, "x", "MCPredictor.predict"),
    ("predict x wrong rank", lambda m: _mcp(m["cls"]).predict(np.zeros((3, 4, 1))),
     ValueError, "x", "MCPredictor.predict"),
    ("predict x scalar", lambda m: _mcp(m["cls"]).predict(np.float32(1.0)), ValueError,
     "x", "MCPredictor.predict"),
    ("predict x rank 1", lambda m: _mcp(m["cls"]).predict(np.zeros(4)), ValueError, "x",
     "MCPredictor.predict"),
    ("predict x strings", lambda m: _mcp(m["cls"]).predict(np.array([["a"] * 4])),
     TypeError, "x", "MCPredictor.predict"),
    ("predict x ragged rows", lambda m: _mcp(m["cls"]).predict([[1.0] * 4, [1.0] * 3]),
     TypeError, "x", "MCPredictor.predict"),
    ("predict x dict wrong keys", lambda m: _mcp(m["two"]).predict({"feature": X}),
     ValueError, "x", "MCPredictor.predict"),
    ("predict x list too long", lambda m: _mcp(m["two"]).predict([X, X]), ValueError, "x",
     "MCPredictor.predict"),
    ("predict batch_size zero", lambda m: _mcp(m["cls"]).predict(X, batch_size=0),
     ValueError, "batch_size", "MCPredictor.predict"),
    ("predict batch_size negative", lambda m: _mcp(m["cls"]).predict(X, batch_size=-1),
     ValueError, "batch_size", "MCPredictor.predict"),
    ("predict batch_size nan", lambda m: _mcp(m["cls"]).predict(X, batch_size=NAN),
     TypeError, "batch_size", "MCPredictor.predict"),
    ("predict verbose 2", lambda m: _mcp(m["cls"]).predict(X, verbose=2), ValueError,
     "verbose", "MCPredictor.predict"),
    ("predict verbose str", lambda m: _mcp(m["cls"]).predict(X, verbose="loud"),
     ValueError, "verbose", "MCPredictor.predict"),
    ("predict return_samples None",
     lambda m: _mcp(m["cls"]).predict(X, return_samples=None), TypeError,
     "return_samples", "MCPredictor.predict"),
    ("predict empty generator", lambda m: _mcp(m["cls"]).predict(x for x in []),
     ValueError, "x", "MCPredictor.predict"),
    # -- MCPredictor.evaluate ----------------------------------------------------
    ("evaluate x 0 rows",
     lambda m: _mcp(m["cls"]).evaluate(np.zeros((0, 4)), np.zeros(0)), ValueError, "x",
     "MCPredictor.evaluate"),
    ("evaluate x None", lambda m: _mcp(m["cls"]).evaluate(None, Y), TypeError, "x",
     "MCPredictor.evaluate"),
    ("evaluate y None", lambda m: _mcp(m["cls"]).evaluate(X, None), TypeError, "y",
     "MCPredictor.evaluate"),
    ("evaluate y str", lambda m: _mcp(m["cls"]).evaluate(X, "labels"), TypeError, "y",
     "MCPredictor.evaluate"),
    ("evaluate label -1", lambda m: _mcp(m["cls"]).evaluate(X, np.array([-1, 0, 1, 2, 0, 1])),
     ValueError, "y", "MCPredictor.evaluate"),
    ("evaluate label 0.5", lambda m: _mcp(m["cls"]).evaluate(X, np.array([0.5, 0, 1, 2, 0, 1])),
     ValueError, "y", "MCPredictor.evaluate"),
    ("evaluate label 7 of 3 classes",
     lambda m: _mcp(m["cls"]).evaluate(X, np.array([7, 0, 1, 2, 0, 1])), ValueError, "y",
     "MCPredictor.evaluate"),
    ("evaluate y wrong length", lambda m: _mcp(m["cls"]).evaluate(X, Y[:4]), ValueError,
     "y", "MCPredictor.evaluate"),
    ("evaluate y nan", lambda m: _mcp(m["reg"]).evaluate(X, np.full(6, np.nan)),
     ValueError, "y", "MCPredictor.evaluate"),
    ("evaluate y inf", lambda m: _mcp(m["reg"]).evaluate(X, np.full(6, np.inf)),
     ValueError, "y", "MCPredictor.evaluate"),
    ("evaluate regression y wrong shape",
     lambda m: _mcp(m["reg"]).evaluate(X, np.zeros((6, 2))), ValueError, "y",
     "MCPredictor.evaluate"),
    ("evaluate one-hot wrong width",
     lambda m: _mcp(m["cls"]).evaluate(X, np.eye(5)[[0, 1, 2, 3, 4, 0]]), ValueError, "y",
     "MCPredictor.evaluate"),
    ("evaluate one-hot rows not summing to 1",
     lambda m: _mcp(m["cls"]).evaluate(X, np.ones((6, 3))), ValueError, "y",
     "MCPredictor.evaluate"),
    ("evaluate sigmoid label 2",
     lambda m: _mcp(m["sig"]).evaluate(X, np.array([0, 1, 2, 0, 1, 0])), ValueError, "y",
     "MCPredictor.evaluate"),
    ("evaluate sigmoid label -1",
     lambda m: _mcp(m["sig"]).evaluate(X, np.array([0, 1, -1, 0, 1, 0])), ValueError, "y",
     "MCPredictor.evaluate"),
    ("evaluate two outputs, one y", lambda m: _mcp(m["two"]).evaluate(X, Y), ValueError,
     "y", "MCPredictor.evaluate"),
    ("evaluate two outputs, unknown name",
     lambda m: _mcp(m["two"]).evaluate(X, {"label": Y, "valu": np.zeros(6)}), ValueError,
     "y", "MCPredictor.evaluate"),
    ("evaluate two outputs, bad label in one",
     lambda m: _mcp(m["two"]).evaluate(X, {"label": Y + 1, "value": np.zeros(6)}),
     ValueError, "y['label']", "MCPredictor.evaluate"),
    ("evaluate tau zero", lambda m: _mcp(m["reg"]).evaluate(X, np.zeros(6), tau=0.0),
     ValueError, "tau", "MCPredictor.evaluate"),
    ("evaluate tau negative", lambda m: _mcp(m["reg"]).evaluate(X, np.zeros(6), tau=-1.0),
     ValueError, "tau", "MCPredictor.evaluate"),
    ("evaluate tau nan", lambda m: _mcp(m["reg"]).evaluate(X, np.zeros(6), tau=NAN),
     ValueError, "tau", "MCPredictor.evaluate"),
    ("evaluate tau str", lambda m: _mcp(m["reg"]).evaluate(X, np.zeros(6), tau="1"),
     TypeError, "tau", "MCPredictor.evaluate"),
    ("evaluate bins zero", lambda m: _mcp(m["cls"]).evaluate(X, Y, bins=0), ValueError,
     "bins", "MCPredictor.evaluate"),
    ("evaluate batch_size zero", lambda m: _mcp(m["cls"]).evaluate(X, Y, batch_size=0),
     ValueError, "batch_size", "MCPredictor.evaluate"),
    ("evaluate y with a generator",
     lambda m: _mcp(m["cls"]).evaluate(((X, Y) for _ in range(1)), Y), ValueError, "y",
     "MCPredictor.evaluate"),
    ("evaluate generator without y",
     lambda m: _mcp(m["cls"]).evaluate(X for _ in range(1)), ValueError, "x",
     "MCPredictor.evaluate"),
    # -- MCPrediction --------------------------------------------------------------
    ("prediction samples None", lambda m: kreg.MCPrediction(None), TypeError, "samples",
     "MCPrediction"),
    ("prediction samples str", lambda m: kreg.MCPrediction("abc"), TypeError, "samples",
     "MCPrediction"),
    ("prediction samples wrong rank", lambda m: kreg.MCPrediction(np.ones(3)), ValueError,
     "samples", "MCPrediction"),
    ("prediction samples 0 rows", lambda m: kreg.MCPrediction(np.ones((4, 0, 2))),
     ValueError, "samples", "MCPrediction"),
    ("prediction samples 0 samples", lambda m: kreg.MCPrediction(np.ones((0, 3, 2))),
     ValueError, "samples", "MCPrediction"),
    ("prediction samples nan", lambda m: kreg.MCPrediction(np.full((2, 3), np.nan)),
     ValueError, "samples", "MCPrediction"),
    ("prediction samples inf", lambda m: kreg.MCPrediction(np.full((2, 3), np.inf)),
     ValueError, "samples", "MCPrediction"),
    ("prediction logits as probabilities",
     lambda m: kreg.MCPrediction(np.log(P), "classification"), ValueError, "samples",
     "MCPrediction"),
    ("prediction negative probabilities",
     lambda m: kreg.MCPrediction(P - 0.5, "classification", activation="sigmoid"),
     ValueError, "samples", "MCPrediction"),
    ("prediction task unknown", lambda m: kreg.MCPrediction(P, "classify"), ValueError,
     "task", "MCPrediction"),
    ("prediction activation unknown",
     lambda m: kreg.MCPrediction(P, "classification", activation="relu"), ValueError,
     "activation", "MCPrediction"),
    ("prediction joint None", lambda m: kreg.MCPrediction(P, joint=None), TypeError,
     "joint", "MCPrediction"),
    ("prediction keep_samples str", lambda m: kreg.MCPrediction(P, keep_samples="yes"),
     TypeError, "keep_samples", "MCPrediction"),
    ("predictive_variance tau zero",
     lambda m: kreg.MCPrediction(P).predictive_variance(0.0), ValueError, "tau",
     "MCPrediction.predictive_variance"),
    ("predictive_variance tau negative",
     lambda m: kreg.MCPrediction(P).predictive_variance(-2.0), ValueError, "tau",
     "MCPrediction.predictive_variance"),
    ("predictive_variance tau inf",
     lambda m: kreg.MCPrediction(P).predictive_variance(INF), ValueError, "tau",
     "MCPrediction.predictive_variance"),
    ("predictive_variance tau None",
     lambda m: kreg.MCPrediction(P).predictive_variance(None), TypeError, "tau",
     "MCPrediction.predictive_variance"),
    ("covariance of independent samples",
     lambda m: kreg.MCPrediction(P).covariance(), ValueError, "joint",
     "MCPrediction.covariance"),
    ("covariance index out of range",
     lambda m: kreg.MCPrediction(P, joint=True).covariance([0, 6]), ValueError, "indices",
     "MCPrediction.covariance"),
    ("covariance index negative",
     lambda m: kreg.MCPrediction(P, joint=True).covariance([-1]), ValueError, "indices",
     "MCPrediction.covariance"),
    ("covariance index float",
     lambda m: kreg.MCPrediction(P, joint=True).covariance([0.5]), TypeError, "indices",
     "MCPrediction.covariance"),
    ("covariance indices empty",
     lambda m: kreg.MCPrediction(P, joint=True).covariance([]), ValueError, "indices",
     "MCPrediction.covariance"),
    ("covariance indices wrong rank",
     lambda m: kreg.MCPrediction(P, joint=True).covariance([[0, 1]]), ValueError,
     "indices", "MCPrediction.covariance"),
    # -- kreg.acquisition -----------------------------------------------------------
    *[(f"{name} pred {what}", _calling(fn, val), exc, "pred", name)
      for name, fn in [("max_entropy", acq.max_entropy), ("bald", acq.bald),
                       ("variation_ratio", acq.variation_ratio)]
      for what, val, exc in [
          ("None", None, TypeError), ("str", "probs", TypeError),
          ("nan", np.full((2, 3, 2), np.nan), ValueError),
          ("inf", np.full((2, 3, 2), np.inf), ValueError),
          ("negative", P - 1.0, ValueError), ("logits", np.log(P) * 3, ValueError),
          ("wrong rank", P[0], ValueError), ("0 rows", P[:, :0], ValueError),
          ("rows not summing to 1", P * 0.5, ValueError),
          ("regression prediction", kreg.MCPrediction(P, "regression"), ValueError),
          ("a list of outputs", [kreg.MCPrediction(P, "classification")] * 2, TypeError),
      ]],
    ("top_k k zero", lambda m: acq.top_k([1.0, 2.0], 0), ValueError, "k", "top_k"),
    ("top_k k out of range", lambda m: acq.top_k([1.0, 2.0], 3), ValueError, "k", "top_k"),
    ("top_k k float", lambda m: acq.top_k([1.0, 2.0], 1.0), TypeError, "k", "top_k"),
    ("top_k scores None", lambda m: acq.top_k(None, 1), TypeError, "scores", "top_k"),
    ("top_k scores nan", lambda m: acq.top_k([np.nan, 1.0], 1), ValueError, "scores",
     "top_k"),
    # top_k([-inf, 1, inf]) is a well-defined ranking (test_acquisition pins it).
    ("top_k scores wrong rank", lambda m: acq.top_k([[1.0, 2.0]], 1), ValueError,
     "scores", "top_k"),
    ("top_k scores empty", lambda m: acq.top_k([], 1), ValueError, "scores", "top_k"),
    ("jmi indices out of range",
     lambda m: acq.joint_mutual_information(P, [6], joint=True), ValueError, "indices",
     "joint_mutual_information"),
    ("jmi indices negative",
     lambda m: acq.joint_mutual_information(P, [-1], joint=True), ValueError, "indices",
     "joint_mutual_information"),
    ("jmi indices None",
     lambda m: acq.joint_mutual_information(P, None, joint=True), TypeError, "indices",
     "joint_mutual_information"),
    ("jmi num_samples zero",
     lambda m: acq.joint_mutual_information(P, [0], joint=True, num_samples=0), ValueError,
     "num_samples", "joint_mutual_information"),
    ("jmi seed negative",
     lambda m: acq.joint_mutual_information(P, [0], joint=True, seed=-1), ValueError,
     "seed", "joint_mutual_information"),
    ("jmi joint str",
     lambda m: acq.joint_mutual_information(P, [0], joint="yes"), TypeError, "joint",
     "joint_mutual_information"),
    ("jmi structure of outputs",
     lambda m: acq.joint_mutual_information(
         {"a": kreg.MCPrediction(P, "classification", joint=True)}, [0]), TypeError,
     "pred", "joint_mutual_information"),
    ("batch_bald k zero", lambda m: acq.batch_bald(P, 0, joint=True), ValueError, "k",
     "batch_bald"),
    ("batch_bald k out of range", lambda m: acq.batch_bald(P, 7, joint=True), ValueError,
     "k", "batch_bald"),
    ("batch_bald k None", lambda m: acq.batch_bald(P, None, joint=True), TypeError, "k",
     "batch_bald"),
    ("batch_bald num_samples negative",
     lambda m: acq.batch_bald(P, 1, joint=True, num_samples=-3), ValueError,
     "num_samples", "batch_bald"),
    ("batch_bald return_scores int",
     lambda m: acq.batch_bald(P, 1, joint=True, return_scores=1), TypeError,
     "return_scores", "batch_bald"),
    ("batch_bald independent samples",
     lambda m: acq.batch_bald(kreg.MCPrediction(P, "classification"), 1), ValueError,
     "pred", "batch_bald"),
]


@pytest.mark.parametrize("call, exc, arg, owner", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_value_is_a_clear_error(models, call, exc, arg, owner):
    pattern = (rf"^Invalid value for argument `{re.escape(arg)}` of {re.escape(owner)}: "
               r"expected .+\. Received: ")
    with pytest.raises(exc, match=pattern):
        call(models)


def test_structure_error_names_the_outputs(models):
    preds = _mcp(models["two"]).predict(X, verbose=0)
    assert sorted(preds) == ["label", "value"]
    with pytest.raises(TypeError, match=r"pass one of pred\['label'\], pred\['value'\]"):
        acq.bald(preds)
    assert acq.bald(preds["label"]).shape == (6,)
    with pytest.raises(ValueError, match=r"`pred` of bald: expected a classification"):
        acq.bald(preds["value"])


def test_labels_from_python_lists_and_floats_that_are_integers(models):
    p = _mcp(models["cls"])
    a = p.evaluate(X, Y)
    b = p.evaluate(X.tolist(), [float(v) for v in Y])
    assert a["mc"] == b["mc"] and a["deterministic"] == b["deterministic"]
