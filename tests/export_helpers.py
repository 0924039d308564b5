"""A check shared by the tests that export a model (TensorFlow only)."""


def serve_mc_like_predictor(model, x, path, mc_samples=16, seed=7):
    """Export `model` to `path`, and check its signatures against Keras and kreg.

    `serve` must give `model.predict`, and `serve_mc_seeded` with `seed` the
    mean and std of `MCPredictor(model, mc_samples, seed=seed)` (TensorFlow).

    Returns:
        `(served, out, ref)`: the loaded SavedModel (it owns the variables:
        keep it while using `out`), the seeded signature's outputs and the
        predictor's `MCPrediction`.
    """
    import numpy as np
    import tensorflow as tf

    import kreg

    kreg.export(model, path, mc_samples=mc_samples)
    served = tf.saved_model.load(str(path))
    np.testing.assert_allclose(served.serve(x).numpy(), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    out = served.serve_mc_seeded(x, tf.constant(seed, tf.int64))
    ref = kreg.MCPredictor(model, mc_samples, seed=seed).predict(
        x, batch_size=len(x), verbose=0)
    np.testing.assert_allclose(out["mean"].numpy(), ref.mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["std"].numpy(), ref.std, rtol=1e-4, atol=1e-6)
    return served, out, ref
