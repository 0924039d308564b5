"""A kreg model (Monte Carlo averaged) behind the scikit-learn interface."""

import keras
import numpy as np

from kreg import _validation as v
from kreg.conformal.split_conformal import select_output
from kreg.mc.predictor import MCPredictor

OWNER = "SklearnAdapter"
TASKS = ("classification", "regression")


class SklearnAdapter:
    """A kreg model with the scikit-learn estimator interface, for MAPIE and crepes.

    Wraps a trained Keras model (or a `kreg.MCPredictor`) so that conformal
    libraries written for scikit-learn run on it: `predict_proba` is the
    Monte Carlo mean of the class probabilities, `predict` the most probable
    class (classification) or the MC mean (regression), and
    `predict_std` the MC standard deviation, the difficulty estimate that
    crepes takes as `sigmas=` (normalized intervals). The model is trained
    in Keras: `fit` does nothing (a "prefit" estimator: MAPIE's
    `SplitConformalClassifier(..., prefit=True)` and
    `SplitConformalRegressor(..., prefit=True)`, crepes's `WrapClassifier`
    and `WrapRegressor` without calling their `fit`).

    Args:
        model: a trained Keras model with kreg stochastic layers, or a
            `kreg.MCPredictor` (then `samples` and `seed` stay None).
        task: `"classification"` or `"regression"`.
        samples: int >= 1 or None, default None (50). Monte Carlo samples.
        seed: int or None, default None. `MCPredictor`'s seed: with one,
            every call returns the same samples for the same inputs.
        output: None (default), str or int. The output to use for a model
            with several outputs (a key or index of what
            `MCPredictor.predict` returns).
        classes: None (default: 0, ..., K - 1 with K read from the model's
            output) or a sequence of the class labels, in the order of the
            model's probability columns.
        batch_size: int or None, default None. Passed to
            `MCPredictor.predict`.

    Attributes:
        classes_: the class labels (classification).
        fitted_: True (the model is trained; what MAPIE looks for in a
            prefit regressor). There is no `n_features_in_`: MAPIE would
            probe the model with a row of zeros.
        predictor: the `kreg.MCPredictor` used.

    Example:

    >>> import keras, numpy as np, kreg
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     kreg.layers.Dropout(0.5), keras.layers.Dense(3, activation="softmax")])
    >>> clf = kreg.conformal.SklearnAdapter(model, "classification", samples=10,
    ...                                     seed=0)
    >>> x = np.ones((5, 4), "float32")
    >>> clf.predict_proba(x).shape, clf.classes_.tolist(), clf.predict(x).shape
    ((5, 3), [0, 1, 2], (5,))
    """

    def __init__(self, model, task, *, samples=None, seed=None, output=None,
                 classes=None, batch_size=None):
        self.task = v.check_option(OWNER, "task", task, TASKS)
        if isinstance(model, MCPredictor):
            for name, value in (("samples", samples), ("seed", seed)):
                if value is not None:
                    raise v.invalid_value(
                        OWNER, name, "None when `model` is an MCPredictor (it has "
                        "its own)", value)
            self.predictor = model
        elif isinstance(model, keras.Model):
            samples = 50 if samples is None else samples
            # The task of a one-output model is known: say it (an uncompiled
            # linear output would otherwise be guessed, with a warning).
            one = len(getattr(model, "outputs", None) or ()) == 1
            self.predictor = MCPredictor(model, samples, seed=seed,
                                         task=self.task if one else "auto")
        else:
            raise v.invalid_type(OWNER, "model", "a Keras model or a kreg.MCPredictor",
                                 model)
        self.model = model
        self.samples = samples
        self.seed = seed
        self.output = output
        self.classes = None if classes is None else list(classes)
        if self.classes is not None and len(self.classes) < 2:
            raise v.invalid_value(OWNER, "classes", "None or at least 2 labels",
                                  classes)
        self.batch_size = v.check_int(OWNER, "batch_size", batch_size, low=1,
                                      allow_none=True)

    # -- scikit-learn's estimator protocol -------------------------------------
    def get_params(self, deep=True):
        """The constructor arguments (scikit-learn's `get_params`)."""
        return {"model": self.model, "task": self.task, "samples": self.samples,
                "seed": self.seed, "output": self.output, "classes": self.classes,
                "batch_size": self.batch_size}

    def set_params(self, **params):
        """A new configuration (scikit-learn's `set_params`); returns self."""
        args = self.get_params()
        unknown = sorted(set(params) - set(args))
        if unknown:
            raise v.invalid_value(f"{OWNER}.set_params", "params",
                                  "names of constructor arguments: " + ", ".join(args),
                                  unknown)
        args.update(params)
        self.__init__(**args)
        return self

    fitted_ = True

    def __sklearn_is_fitted__(self):
        return True

    @property
    def _estimator_type(self):
        return "classifier" if self.task == "classification" else "regressor"

    def fit(self, X=None, y=None, **kwargs):
        """Nothing to do: the model is trained in Keras (a prefit estimator)."""
        return self

    # -- predictions -----------------------------------------------------------
    def predict_mc(self, X):
        """The `kreg.MCPrediction` of the chosen output for inputs X."""
        pred = self.predictor.predict(X, batch_size=self.batch_size, verbose=0)
        pred = select_output(f"{OWNER}.predict_mc", pred, self.output, who=OWNER)
        if pred.task != self.task:
            raise v.invalid_value(OWNER, "task", f"the task of the model's output "
                                  f"({pred.task!r})", self.task)
        return pred

    def predict_proba(self, X):
        """The MC mean of the class probabilities, (N, K)."""
        self._need("classification", "predict_proba")
        mean = self.predict_mc(X).mean
        mean = mean.reshape(len(mean), -1)
        if mean.shape[1] == 1:  # one sigmoid unit: [1 - p, p]
            mean = np.concatenate([1.0 - mean, mean], axis=1)
        return mean

    def predict(self, X):
        """The most probable class (classification) or the MC mean (regression)."""
        if self.task == "classification":
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return self.predict_mc(X).mean.reshape(-1)

    def predict_std(self, X):
        """The MC standard deviation (N,) of a regression (crepes's `sigmas`)."""
        self._need("regression", "predict_std")
        return self.predict_mc(X).std.reshape(-1)

    def _need(self, task, method):
        if self.task != task:
            raise v.invalid_value(f"{OWNER}.{method}", "task", repr(task), self.task)

    @property
    def classes_(self):
        if self.task != "classification":
            raise AttributeError(f"{OWNER}(task='regression') has no classes_")
        if self.classes is not None:
            return np.asarray(self.classes)
        units = self._output_units()
        if units is None:
            raise AttributeError(
                f"{OWNER}: the model's number of classes is unknown (a subclassed "
                "model): pass classes=[...]")
        return np.arange(max(units, 2))

    def _output_units(self):
        try:
            outputs = self.predictor.model.outputs
        except (AttributeError, ValueError):
            return None
        if not outputs:
            return None
        if len(outputs) > 1:
            names = list(self.predictor.model.output_names)
            index = names.index(self.output) if self.output in names else self.output
            if not isinstance(index, int) or not 0 <= index < len(outputs):
                return None
            outputs = [outputs[index]]
        return outputs[0].shape[-1]

    def __repr__(self):
        return f"SklearnAdapter(task={self.task!r}, samples={self.predictor.samples})"
