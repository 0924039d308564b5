"""Compile a Python function of Keras layers for the active backend.

TensorFlow: `tf.function` (a plain graph; XLA is not enabled because it was
measured slower on CPU for these workloads). JAX: `jax.jit` over the model's
variables passed in through a `keras.StatelessScope`. PyTorch: eager under
`torch.no_grad()`. Inference only: the compiled function must not update any
variable.

On TensorFlow every compiled function gets a code object of its own
(`_own_code`): TensorFlow's "N out of the last M calls to <function>
triggered tf.function retracing" warning counts the traces of every
`tf.function` made from the same Python code, so the distinct functions kreg
compiles on purpose (one per model, per number of samples in a pass, per
output setting) would read as one function retraced again and again. Each
of them is traced once per argument structure (see `batch_args`), and a
real retrace of one of them still warns.
"""

import itertools

import keras

_COMPILED = itertools.count()


def compile_inference(fn, variables, batch_args=()):
    """Return a compiled version of `fn(*args)` that reads `variables`.

    Args:
        fn: the function; its arguments are tensors or nested structures of
            tensors.
        variables: the variables it reads.
        batch_args: tuple of ints, default (). The positions of the arguments
            whose tensors have a leading batch axis of varying size. On
            TensorFlow these are traced once with that axis unknown, so calls
            with other batch sizes reuse the trace (no retracing, and no
            TensorFlow retracing warning); other backends compile per shape.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        fn = _own_code(fn)
        if batch_args:
            return _tensorflow_batch_polymorphic(fn, batch_args)
        return tf.function(fn, reduce_retracing=True, jit_compile=False)
    if backend == "jax":
        import jax

        variables = list(variables)

        def pure(values, *args):
            mapping = list(zip(variables, values))
            with keras.StatelessScope(state_mapping=mapping):
                return fn(*args)

        jitted = jax.jit(pure)
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "torch":
        import torch

        def run(*args):
            with torch.no_grad():
                return fn(*args)

        return run
    return fn


def _tensorflow_batch_polymorphic(fn, batch_args):
    """`tf.function(fn)` traced once per argument structure, batch axes unknown."""
    import tensorflow as tf

    functions = {}

    def spec(tensor, relax):
        shape = tensor.shape
        if relax and shape.rank:
            shape = tf.TensorShape([None]).concatenate(shape[1:])
        return tf.TensorSpec(shape, tensor.dtype)

    def call(*args):
        args = tf.nest.map_structure(tf.convert_to_tensor, args)
        specs = tuple(tf.nest.map_structure(lambda t, i=i: spec(t, i in batch_args), a)
                      for i, a in enumerate(args))
        key = (repr(tf.nest.map_structure(lambda _: 0, args)),
               tuple(tf.nest.flatten(specs)))
        function = functions.get(key)
        if function is None:
            function = functions[key] = tf.function(fn, input_signature=specs,
                                                    jit_compile=False)
        return function(*args)

    return call


def _own_code(fn):
    """`fn` behind a function whose code object is this compilation's own."""
    def compiled(*args):
        return fn(*args)

    compiled.__code__ = compiled.__code__.replace(
        co_name=f"kreg_compiled_{next(_COMPILED)}")
    return compiled
