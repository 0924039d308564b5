"""Replica-aware seeds for training-time draws.

Under `tf.distribute.MirroredStrategy` every replica of a Keras layer advances
the same (mirrored) seed state in step, so every replica would draw the same
mask. When TensorFlow is the backend and more than one replica is in sync, the
replica id is folded into the per-call seed. This module is the only place in
kreg's layers that looks at TensorFlow, and only when it is the backend
(imported lazily there, so the layers import on JAX and PyTorch alone).
"""

import keras
import numpy as np
from keras import ops

from kreg.layers._seeds import TensorSeed

_REPLICA_STRIDE = 1_000_003  # keeps replica streams apart in seed[0]


def replica_seed(seed_generator):
    """Return a seed for one draw: the generator's, replica-distinct if needed."""
    if keras.backend.backend() != "tensorflow":
        return seed_generator
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return seed_generator
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return seed_generator
    seed = seed_generator.next()
    replica = tf.cast(ctx.replica_id_in_sync_group, seed.dtype)
    stride = ops.convert_to_tensor(np.array([_REPLICA_STRIDE, 0]), seed.dtype)
    return TensorSeed(seed + replica * stride)
