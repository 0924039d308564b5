"""The harness's own check: relaxing message text still checks the class.

Run by run.py with Keras's files (and left out of the relaxed-check count).
"""

import pytest
from keras.src import testing


class RelaxedAssertRaisesRegexTest(testing.TestCase):
    def test_wrong_class_still_fails(self):
        with self.assertRaises(KeyError):
            with self.assertRaisesRegex(TypeError, "x"):
                raise KeyError("x")

    def test_no_exception_still_fails(self):
        with self.assertRaises(AssertionError):
            with self.assertRaisesRegex(ValueError, "x"):
                pass

    def test_only_the_text_is_relaxed(self):
        with self.assertRaisesRegex(ValueError, "Keras's text"):
            raise ValueError("kreg's text")
        self.assertRaisesRegex(ValueError, "Keras's text", int, "kreg's text")


def test_pytest_raises_match_wrong_class_still_fails():
    with pytest.raises(KeyError):
        with pytest.raises(TypeError, match="x"):
            raise KeyError("x")


def test_pytest_raises_match_no_exception_still_fails():
    with pytest.raises(pytest.fail.Exception):
        with pytest.raises(ValueError, match="x"):
            pass


def test_pytest_raises_match_only_the_text_is_relaxed():
    with pytest.raises(ValueError, match="Keras's text"):
        raise ValueError("kreg's text")
