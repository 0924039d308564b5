"""EarlyStopping's atomic checkpoint (kreg/callbacks/_checkpoint.py): a failed
write, a SIGKILL during training and during a write, the file mode."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
from early_stopping_helpers import FakeModel
from early_stopping_helpers import compiled_model as _compiled_model
from early_stopping_helpers import drive

from kreg.callbacks import EarlyStopping


# ----------------------------------------------------------------------------
# Checkpoint writes.
class SavingFakeModel(FakeModel):
    def __init__(self, fail_after_bytes=None):
        super().__init__()
        self.fail_after_bytes = fail_after_bytes

    def save_weights(self, path, overwrite=True):
        data = np.asarray(self.weights[0]).tobytes() * 100
        with open(path, "wb") as f:
            if self.fail_after_bytes is not None:
                f.write(data[:self.fail_after_bytes])
                raise OSError("disk full")
            f.write(data)


def test_checkpoint_write_is_atomic_when_a_write_fails(tmp_path):
    path = tmp_path / "sub" / "best.weights.h5"
    model = SavingFakeModel()
    es = EarlyStopping(patience=5, checkpoint_path=path)
    drive(es, [1.0, 0.5], model=model, end=False)
    good = path.read_bytes()
    assert good == np.full(1, 1.0).tobytes() * 100
    model.fail_after_bytes = 10
    with pytest.raises(OSError, match="disk full"):
        drive(es, [0.1], model=model, first_epoch=2, begin=False, end=False)
    assert path.read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.weights.h5"]


KILL_SCRIPT = """
import os, sys, time
import numpy as np
import keras
import kreg

out = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 3)).astype("float32")
y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile(keras.optimizers.SGD(0.002), "mse")


class Log(keras.callbacks.Callback):
    # Listed before EarlyStopping: epoch e's weights are on disk before
    # EarlyStopping can write them as the best.
    def on_epoch_end(self, epoch, logs=None):
        tmp = os.path.join(out, "tmp.npz")
        np.savez(tmp, *self.model.get_weights(), val_loss=logs["val_loss"])
        os.replace(tmp, os.path.join(out, f"w{epoch:06d}.npz"))
        time.sleep(0.005)


es = kreg.callbacks.EarlyStopping(
    patience=1000, checkpoint_path=os.path.join(out, "best.weights.h5"))
model.fit(x, y, validation_data=(x, y), epochs=10**6, batch_size=64,
          verbose=0, callbacks=[Log(), es])
"""


def test_checkpoint_survives_sigkill(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt = tmp_path / "best.weights.h5"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("training subprocess exited early: "
                            + proc.stderr.read().decode()[-2000:])
            if ckpt.exists() and len(list(tmp_path.glob("w*.npz"))) >= 10:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint within 120 s")
        time.sleep(float(np.random.default_rng().uniform(0.0, 0.2)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    epochs = {}
    for f in sorted(tmp_path.glob("w*.npz")):
        with np.load(f) as data:
            epochs[int(f.stem[1:])] = (
                [data["arr_0"], data["arr_1"]], float(data["val_loss"]))
    running_best, best = [], math.inf
    for epoch in sorted(epochs):
        if epochs[epoch][1] < best:
            best = epochs[epoch][1]
            running_best.append(epoch)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.load_weights(ckpt)
    got = model.get_weights()
    matches = [e for e in running_best
               if all(np.array_equal(a, b) for a, b in zip(got, epochs[e][0]))]
    assert matches, "checkpoint equals no best epoch's weights"
    # It is one of the last two bests (the kill may land during a write).
    assert matches[-1] in running_best[-2:]


def test_checkpoint_file_mode_is_that_of_save_weights(tmp_path):
    model = _compiled_model()
    path = tmp_path / "best.weights.h5"
    es = EarlyStopping(patience=1, checkpoint_path=path)
    es.set_model(model)
    es.on_train_begin()
    es.on_epoch_end(0, {"val_loss": 1.0})
    model.save_weights(tmp_path / "keras.weights.h5")
    umask = os.umask(0)
    os.umask(umask)
    mode = os.stat(path).st_mode & 0o777
    assert mode == os.stat(tmp_path / "keras.weights.h5").st_mode & 0o777
    assert mode == 0o666 & ~umask


KILL_DURING_WRITE = """
import os, signal, sys
import numpy as np
import kreg


class Model:
    stop_training = False
    metrics = ()

    def get_weights(self):
        return [np.zeros(1)]

    def save_weights(self, path, overwrite=True):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)


es = kreg.callbacks.EarlyStopping(checkpoint_path=sys.argv[1])
es.set_model(Model())
es.on_train_begin()
es.on_epoch_end(0, {"val_loss": 1.0})
"""


def test_a_kill_during_a_write_leaves_a_temp_file_the_next_run_removes(
        tmp_path):
    path = tmp_path / "best.weights.h5"
    path.write_bytes(b"previous best")
    script = tmp_path / "kill.py"
    script.write_text(KILL_DURING_WRITE)
    proc = subprocess.run([sys.executable, str(script), str(path)],
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == b"previous best"
    stale = [p.name for p in tmp_path.iterdir()
             if p.name.endswith(".tmp.weights.h5")]
    assert len(stale) == 1 and stale[0].startswith(".best.")
    # Files that are not this checkpoint's temporary files are kept.
    keep = [".other.0a1b.tmp.weights.h5", ".best.x.y.tmp.weights.h5",
            "best.tmp.weights.h5", ".best.weights.h5", "notes.txt"]
    for name in keep:
        (tmp_path / name).write_bytes(b"")
    es = EarlyStopping(patience=1, checkpoint_path=path)
    es.set_model(SavingFakeModel())
    es.on_train_begin()
    names = {p.name for p in tmp_path.iterdir()}
    assert stale[0] not in names
    assert set(keep) <= names
    assert path.read_bytes() == b"previous best"
