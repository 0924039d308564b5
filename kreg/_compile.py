"""Compile a Python function of Keras layers for the active backend.

TensorFlow: `tf.function` (a plain graph; XLA is not enabled because it was
measured slower on CPU for these workloads). JAX: `jax.jit` over the model's
variables passed in through a `keras.StatelessScope`. PyTorch: eager under
`torch.no_grad()`. Inference only: the compiled function must not update any
variable.
"""

import keras


def compile_inference(fn, variables):
    """Return a compiled version of `fn(*args)` that reads `variables`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

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
