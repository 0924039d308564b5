"""kreg's public exception classes.

kreg reports a bad argument in one wording (see the message of any error
below): a wrong *value* raises a plain `ValueError`, a wrong *type* raises
`ArgumentTypeError`.

`ArgumentTypeError` derives from `TypeError` and from `ValueError`. kreg's
convention is a `TypeError` for a wrong type, while Keras raises `ValueError`
for several of the same arguments (for example `keras.layers.Dropout(0.5,
noise_shape="abc")`); deriving from both keeps kreg's convention and keeps
scripts written against Keras, which catch `ValueError`, working with kreg's
drop-in classes. NumPy does the same for the same reason
(`numpy.exceptions.AxisError` derives from `ValueError` and `IndexError`).

Example:

>>> import kreg
>>> try:
...     kreg.layers.Dropout(0.5, noise_shape="abc")
... except ValueError as err:
...     print(type(err).__name__, isinstance(err, TypeError))
ArgumentTypeError True
"""

from kreg._validation import ArgumentTypeError

__all__ = ["ArgumentTypeError"]
