"""Training under any `tf.distribute` strategy (TensorFlow backend only).

This is kreg's only TensorFlow-only public module. Its functions raise a clear
error on the JAX and PyTorch backends; TensorFlow is imported when they are
called, not when kreg is imported.

Why it exists: with Keras 3.15 / TensorFlow 2.21, `model.fit` works under
`tf.distribute.MirroredStrategy` (kreg's layers, penalties, initializers and
callbacks are correct there) but fails under
`tf.distribute.MultiWorkerMirroredStrategy` (a `PerReplica` value reaches
`Trainer._maybe_symbolic_build`, then a scalar reduce along axis 0 fails).
`train` is a small custom training loop built only on public APIs
(`strategy.run`, `strategy.reduce`, `tf.nn.compute_average_loss`,
`tf.nn.scale_regularization_loss`, `keras.callbacks.CallbackList`) that works
under every strategy, the default (no) strategy included, and runs Keras and
kreg callbacks as `fit` does.

What it guarantees under multi-worker training:

- The loss of each replica is its share of the global-batch mean:
  `tf.nn.compute_average_loss` for the data term and
  `tf.nn.scale_regularization_loss` for the penalties (`model.losses`), so
  the summed gradient equals the single-device gradient of mean loss +
  penalty (penalties are not counted once per replica).
- Epoch logs (`loss`, `val_loss`) are reduced over all replicas of all
  workers, so every worker's callbacks see the same numbers; and the stop
  flag is OR-reduced over the workers after each epoch, so `EarlyStopping`
  (or any callback setting `model.stop_training`) stops every worker at the
  same epoch. `restore_best_weights` restores identical weights everywhere.
- kreg's stochastic layers draw different masks on each replica (the global
  replica id is folded into their seed; see `kreg.layers.Dropout`).

Limits: single-output models compiled with one loss; the logs hold `loss`
and `val_loss` only (compiled metrics are not computed). Batch the dataset
with the *global* batch size and `drop_remainder=True`: every worker must run
the same number of steps. Give `EarlyStopping(checkpoint_path=...)` a path of
its own on each worker (workers writing one file race).
"""

import warnings

import keras

from kreg import _validation as v
from kreg._extras import require_tensorflow_backend

__all__ = ["replica_loss", "train"]


def _tensorflow(owner):
    require_tensorflow_backend(
        owner, "it is built on tf.distribute; on another backend, train with "
        "model.fit")
    import tensorflow as tf

    return tf


def _per_example_loss(model, owner):
    if not isinstance(model, keras.Model):
        raise v.invalid_type(owner, "model", "a compiled Keras model", model)
    loss = getattr(model, "loss", None)
    if loss is None or getattr(model, "optimizer", None) is None:
        raise v.invalid_value(
            owner, "model", "a model compiled with a loss and an optimizer "
            "(model.compile(optimizer, loss) inside strategy.scope())", model.name)
    if isinstance(loss, (list, tuple, dict)):
        raise v.invalid_value(owner, "model",
                              "a model compiled with a single loss", model.name)
    fn = keras.losses.get(loss) if not callable(loss) else loss
    # A Loss object's `call` gives the unreduced, per-example values.
    return fn.call if isinstance(fn, keras.losses.Loss) else fn


def _check_batches(model, data, name, tf):
    """Batches of `(x, y)` or `(x, y, sample_weight)`, x of the model's shape."""
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise v.invalid_value(
            "train", name, "a tf.data.Dataset of (x, y) or (x, y, sample_weight) "
            "batches", f"a dataset of {spec}")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a subclassed model: no static inputs
        return
    x_spec = spec[0]
    if not inputs or len(inputs) != 1 or not isinstance(x_spec, tf.TensorSpec):
        return
    expected = tf.TensorShape(inputs[0].shape)
    if not x_spec.shape.is_compatible_with(expected):
        raise v.invalid_value(
            "train", name, f"batches whose x has the model's input shape "
            f"{tuple(expected.as_list())}", f"x of shape {tuple(x_spec.shape.as_list())}")


def replica_loss(model, y, y_pred, sample_weight=None):
    """The loss one replica minimises: its share of the global-batch loss.

    `tf.nn.compute_average_loss(per_example_loss)` (the sum over the
    replica's examples divided by the global batch size) plus
    `tf.nn.scale_regularization_loss(sum(model.losses))` (the penalties
    divided by the number of replicas in sync). Summed over the replicas (as
    the optimizer does with the gradients) this is the single-device
    `mean loss + penalty`. Call it inside `strategy.run`.

    Args:
        model: a compiled Keras model (its `loss` is used, unreduced).
        y: the targets of the replica's batch.
        y_pred: the model's output on the replica's batch.
        sample_weight: per-example weights or None, default None.

    Returns:
        A scalar float32 tensor.

    Example:

    >>> import keras, numpy as np, kreg
    >>> if keras.backend.backend() == "tensorflow":
    ...     m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...         1, kernel_initializer="ones",
    ...         kernel_regularizer=kreg.regularizers.L2(0.5))])
    ...     m.compile("sgd", "mse")
    ...     x = np.ones((4, 2), "float32")
    ...     loss = kreg.distribute.replica_loss(m, np.zeros((4, 1)), m(x))
    ...     print(round(float(loss), 4))  # mse 4 + penalty 0.5 * 2
    ... else:
    ...     print(5.0)
    5.0

    References:
        TensorFlow guide "Custom training with tf.distribute.Strategy" (loss
        scaling with `compute_average_loss` / `scale_regularization_loss`).
    """
    tf = _tensorflow("kreg.distribute.replica_loss")
    fn = _per_example_loss(model, "replica_loss")
    per_example = fn(y, y_pred)
    if len(per_example.shape) > 1:
        # E.g. a loss with an output per time step: average the extra axes.
        per_example = tf.reduce_mean(
            tf.reshape(per_example, (tf.shape(per_example)[0], -1)), axis=-1)
    per_example = tf.cast(per_example, "float32")
    if sample_weight is not None:
        sample_weight = tf.cast(tf.reshape(sample_weight, (-1,)), "float32")
    loss = tf.nn.compute_average_loss(per_example, sample_weight=sample_weight)
    penalties = [tf.cast(p, "float32") for p in model.losses]
    if penalties:
        loss += tf.nn.scale_regularization_loss(tf.add_n(penalties))
    return loss


def train(model, dataset, *, epochs=1, validation_data=None, callbacks=None,
          strategy=None, verbose=0, initial_epoch=0):
    """Train `model` on a `tf.data` dataset under any `tf.distribute` strategy.

    A custom training loop that does what `model.fit` does for the loss and
    the callbacks, and also works under `MultiWorkerMirroredStrategy`, where
    Keras 3.15's `fit` fails (see the module docstring). Create and compile
    the model inside `strategy.scope()`; then call this on every worker with
    the same arguments.

    Args:
        model: a Keras model created and compiled (single loss, an optimizer)
            inside the strategy's scope.
        dataset: a `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)`
            batched with the global batch size (`drop_remainder=True` under
            multi-worker training). It is distributed with
            `strategy.experimental_distribute_dataset`.
        epochs: int >= 1, default 1. The index of the last epoch + 1, as in
            `fit`.
        validation_data: a dataset like `dataset`, or None (default). Gives
            `val_loss` in the epoch logs.
        callbacks: list of Keras callbacks (kreg's included) or None.
        strategy: a `tf.distribute.Strategy` or None (default: the strategy
            the model was created under, `model.distribute_strategy`).
        verbose: 0 (default) or 1 (a progress bar; on the chief only when
            several workers train).
        initial_epoch: int >= 0, default 0. The epoch to start from.

    Returns:
        The `keras.callbacks.History` of the run (`history.history["loss"]`).

    Example:

    >>> import keras, numpy as np, kreg
    >>> if keras.backend.backend() == "tensorflow":
    ...     import tensorflow as tf
    ...     strategy = tf.distribute.get_strategy()  # or MultiWorkerMirrored...
    ...     with strategy.scope():
    ...         m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
    ...                               kreg.layers.Dropout(0.5, seed=1),
    ...                               keras.layers.Dense(1)])
    ...         m.compile(keras.optimizers.SGD(0.01), "mse")
    ...     ds = tf.data.Dataset.from_tensor_slices(
    ...         (np.ones((32, 3), "float32"), np.ones((32, 1), "float32"))
    ...     ).batch(8, drop_remainder=True)
    ...     history = kreg.distribute.train(m, ds, epochs=2, callbacks=[
    ...         kreg.callbacks.EarlyStopping("loss", patience=1)])
    ...     print(len(history.history["loss"]))
    ... else:
    ...     print(2)
    2

    References:
        TensorFlow guides "Custom training with tf.distribute.Strategy" and
        "Multi-worker training with Keras".
    """
    owner = "kreg.distribute.train"
    tf = _tensorflow(owner)
    _per_example_loss(model, "train")  # a compiled Keras model
    epochs = v.check_int("train", "epochs", epochs, low=1)
    initial_epoch = v.check_int("train", "initial_epoch", initial_epoch, low=0)
    if verbose not in (0, 1, True, False):
        raise v.invalid_value("train", "verbose", "0 or 1", verbose)
    if not isinstance(dataset, tf.data.Dataset):
        raise v.invalid_type("train", "dataset", "a tf.data.Dataset", dataset)
    if validation_data is not None and not isinstance(validation_data,
                                                      tf.data.Dataset):
        raise v.invalid_type("train", "validation_data",
                             "a tf.data.Dataset or None", validation_data)
    _check_batches(model, dataset, "dataset", tf)
    if validation_data is not None:
        _check_batches(model, validation_data, "validation_data", tf)
    if callbacks is not None and not (
            isinstance(callbacks, (list, tuple))
            and all(isinstance(c, keras.callbacks.Callback) for c in callbacks)):
        raise v.invalid_type("train", "callbacks",
                             "a list of Keras callbacks or None", callbacks)
    if strategy is None:
        strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.Strategy):
        raise v.invalid_type("train", "strategy",
                             "a tf.distribute.Strategy or None", strategy)
    if model.distribute_strategy is not strategy:
        raise v.invalid_value(
            "train", "strategy",
            "the strategy the model was created under (create and compile the "
            "model inside strategy.scope())", type(strategy).__name__)
    resolver = getattr(strategy, "cluster_resolver", None)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
        and resolver is not None and bool(resolver.cluster_spec().as_dict())
    if multi_worker:
        first = tf.nest.flatten(dataset.element_spec)[0]
        if first.shape.rank and first.shape[0] is None:
            warnings.warn(
                "kreg.distribute.train: the dataset's batch size is not static; "
                "under multi-worker training batch it with "
                "drop_remainder=True so that every worker runs the same number "
                "of steps (otherwise training can hang).", stacklevel=2)

    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    def sum_over_replicas(value):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

    def loss_and_count(batch, training):
        x, y, sw = keras.utils.unpack_x_y_sample_weight(batch)
        y_pred = model(x, training=training)
        count = tf.cast(tf.shape(tf.nest.flatten(y_pred)[0])[0], "float32")
        return replica_loss(model, y, y_pred, sw), count

    @tf.function
    def train_step(batch):
        def step(batch):
            with tf.GradientTape() as tape:
                loss, count = loss_and_count(batch, True)
            variables = model.trainable_variables
            grads = tape.gradient(loss, variables)
            model.optimizer.apply_gradients(zip(grads, variables))
            return loss * count, count

        loss, count = strategy.run(step, args=(batch,))
        return sum_over_replicas(loss), sum_over_replicas(count)

    @tf.function
    def test_step(batch):
        def step(batch):
            loss, count = loss_and_count(batch, False)
            return loss * count, count

        loss, count = strategy.run(step, args=(batch,))
        return sum_over_replicas(loss), sum_over_replicas(count)

    @tf.function
    def any_worker(flag):
        value = strategy.run(lambda: tf.cast(flag, "int32"))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) > 0

    replicas = float(strategy.num_replicas_in_sync)

    def run_epoch(step_fn, data):
        """The epoch's mean loss; None (with Keras's warning) without a batch."""
        total, count, steps = 0.0, 0.0, 0
        for step, batch in enumerate(data):
            if step_fn is train_step:
                cbks.on_train_batch_begin(step)
            loss_sum, n = step_fn(batch)
            total += float(loss_sum)
            count += float(n)
            steps += 1
            if step_fn is train_step:
                cbks.on_train_batch_end(step, {"loss": _mean_loss(total, count)})
        if not steps:
            # As Keras's fit: a warning, and no loss in the epoch's logs (not NaN).
            which = "dataset" if step_fn is train_step else "validation_data"
            warnings.warn(
                f"kreg.distribute.train: `{which}` gave no batch in epoch "
                f"{epoch + 1}, so its loss is not in the logs. Your input ran "
                "out of data: make sure the dataset is not empty (and repeats "
                "if you need several epochs of it).", stacklevel=3)
            return None
        return _mean_loss(total, count)

    def _mean_loss(total, count):
        # A replica's loss is its share of the global mean, sum(l_i) / (n_r R)
        # + penalty / R; summed over replicas and steps, loss * n_r gives
        # (sum of l_i + N penalty) / R.
        return total * replicas / count if count else float("nan")

    train_data = strategy.experimental_distribute_dataset(dataset)
    val_data = None if validation_data is None else \
        strategy.experimental_distribute_dataset(validation_data)
    chief = not multi_worker or resolver.task_id == 0
    cbks = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=bool(verbose) and chief,
        model=model, verbose=int(bool(verbose)), epochs=epochs, steps=None)
    model.stop_training = False
    cbks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        cbks.on_epoch_begin(epoch)
        logs = {}
        loss = run_epoch(train_step, train_data)
        if loss is not None:
            logs["loss"] = loss
        if val_data is not None:
            val_loss = run_epoch(test_step, val_data)
            if val_loss is not None:
                logs["val_loss"] = val_loss
        cbks.on_epoch_end(epoch, logs)
        # One decision for all workers: stop if any worker's callbacks say so.
        model.stop_training = bool(any_worker(bool(model.stop_training)))
        if model.stop_training:
            break
    cbks.on_train_end()
    return model.history
