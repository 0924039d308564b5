"""Monte Carlo on sequences: the guide docs/mc_any_model.md runs and says what it shows.

The guide's Python blocks run in order in one namespace (the block marked
"TensorFlow backend only" on TensorFlow alone), and the values its comments
announce are checked in what the blocks print. Next to it, the claim of the
guide's recurrent-dropout section: a `Dropout` on a sequence draws a new mask
at every step, `SpatialDropout1D` one mask per sequence, tested against the
closed form of the fraction of changed mask entries.
"""

import contextlib
import io
import pathlib
import re
import warnings

import keras
import numpy as np
import pytest

import kreg

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "mc_any_model.md"
TF_ONLY_LINE = "# TensorFlow backend only"


def _blocks():
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def _run(code):
    """Run `code` in a fresh namespace; return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, str(GUIDE), "exec"), {"__name__": "guide"})
    return out.getvalue()


@pytest.fixture(scope="module")
def guide_output():
    return _run("\n".join(b for b in _blocks() if TF_ONLY_LINE not in b))


def test_guide_has_its_blocks():
    blocks = _blocks()
    assert len(blocks) >= 6
    assert sum(TF_ONLY_LINE in b for b in blocks) == 1


def test_guide_first_example_samples_the_lstm_and_the_attention(guide_output):
    names = guide_output.splitlines()[0]
    assert "lstm" in names and "dropout" in names, names
    assert "(32, 3) (32,)" in guide_output


def test_guide_mask_example_shows_per_step_and_per_sequence_masks(guide_output):
    assert "False True" in guide_output.splitlines()


def test_guide_pitfall_safety_net_and_error_print_what_the_comments_say(guide_output):
    text = guide_output
    assert re.search(r"'forced' \(Dropout\) with training=True.*predict", text)
    assert re.search(r"^0\.0 \| MCPredictor: all 8 samples are identical", text, re.M)
    assert "`if training:`" in text
    assert re.search(r"SeedGenerator.*MyNoise 'my_noise'", text)
    lines = text.splitlines()
    assert lines.count("True") >= 2  # predict's identical passes; MCPredictor samples


@pytest.mark.tf_only(reason="string inputs need TensorFlow's string tables")
def test_guide_string_example_prints_probabilities():
    [block] = [b for b in _blocks() if TF_ONLY_LINE in b]
    printed = _run("import keras\nimport numpy as np\nimport kreg\n" + block)
    rows = re.findall(r"\[\[?([0-9.e\- ]+)\]", printed)
    probs = np.array([[float(v) for v in r.split()] for r in rows[-2:]])
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("layer, changed", [
    (keras.layers.Dropout(0.5), 0.5),            # 2 p (1 - p): a new mask per step
    (keras.layers.SpatialDropout1D(0.5), 0.0),   # one mask per sequence
])
def test_sequence_masks_per_step_or_per_sequence(layer, changed):
    steps, features, rows, samples = 8, 6, 4, 50
    inp = keras.Input((steps, features))
    model = keras.Model(inp, layer(inp))
    s = kreg.MCPredictor(model, samples=samples, seed=1, task="regression").predict(
        np.ones((rows, steps, features), "float32"), verbose=0,
        return_samples=True).samples             # (T, N, steps, features)
    kept = s > 0
    assert abs(kept.mean() - 0.5) < 5 * np.sqrt(0.25 / kept.size)
    differs = kept[:, :, 1:] != kept[:, :, :1]  # each step against step 0
    if changed == 0.0:
        assert not differs.any()
    else:
        # the pairs (step 0, step t) share step 0, so they are correlated: bound
        # the standard error by one of T * N * features independent draws
        se = np.sqrt(changed * (1 - changed) / (samples * rows * features))
        assert abs(differs.mean() - changed) < 5 * se, differs.mean()
    # masks differ across rows of a sample (independent mode)
    assert (kept[:, 0] != kept[:, 1]).mean() > 0.3
