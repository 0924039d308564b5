"""Paper claims, reproduced small: Srivastava Fig. 11 and Gal & Ghahramani Table 1."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.datasets import load_digits

import kreg
from kreg.mc.metrics import gaussian_log_likelihood

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def digits_runs():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    runs = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(x))
        tr, te = idx[:1000], idx[1000:]
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            kreg.layers.Dropout(0.5, seed=seed),
            keras.layers.Dense(128, activation="relu"),
            kreg.layers.Dropout(0.5, seed=seed + 10),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        model.fit(x[tr], y[tr], epochs=40, batch_size=64, verbose=0)
        ws_err = 1 - (model.predict(x[te], verbose=0).argmax(1) == y[te]).mean()
        pred = kreg.MCPredictor(model, samples=50, seed=seed).predict(
            x[te], verbose=0, return_samples=True)
        # Running MC averages over the first T samples of one run.
        errs = {t: 1 - (pred.samples[:t].mean(0).argmax(1) == y[te]).mean()
                for t in (1, 2, 5, 10, 50)}
        runs.append((ws_err, errs))
    return runs


def test_mc_error_approaches_weight_scaling_by_t_50(digits_runs):
    ws = np.array([r[0] for r in digits_runs])
    mc = {t: np.array([r[1][t] for r in digits_runs]) for t in (1, 2, 5, 10, 50)}
    gap = {t: abs(mc[t].mean() - ws.mean()) for t in mc}
    # One sample is a much worse predictor; the gap shrinks as T grows.
    assert mc[1].mean() > ws.mean() + 0.01
    assert gap[50] < gap[1] and gap[50] <= gap[5] + 0.005
    # By T = 50 within one standard deviation over seeds (Srivastava Fig. 11).
    sd = max(np.std(ws, ddof=1), np.std(mc[50], ddof=1))
    assert gap[50] <= sd


def test_mc_dropout_log_likelihood_beats_dropout_off_on_diabetes():
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    y = ((y - y.mean()) / y.std()).astype("float32")
    taus = np.exp(np.linspace(np.log(0.3), np.log(10), 25))
    wins = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(x))
        tr, va, te = idx[:300], idx[300:370], idx[370:]
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([
            keras.Input((10,)),
            keras.layers.Dense(50, activation="relu",
                               kernel_regularizer=kreg.regularizers.L2(1e-4)),
            kreg.layers.Dropout(0.1, seed=seed),
            keras.layers.Dense(1),
        ])
        model.compile(keras.optimizers.Adam(3e-3), "mse")
        model.fit(x[tr], y[tr], epochs=60, batch_size=32, verbose=0)
        mc = kreg.MCPredictor(model, samples=100, seed=seed, task="regression")
        s_va = mc.predict(x[va], verbose=0, return_samples=True).samples
        s_te = mc.predict(x[te], verbose=0, return_samples=True).samples
        d_va = model.predict(x[va], verbose=0)[None]
        d_te = model.predict(x[te], verbose=0)[None]
        # tau chosen on validation data for each method, as Gal & Ghahramani do.
        tau_mc = max(taus, key=lambda t: gaussian_log_likelihood(s_va, y[va], t).mean())
        tau_dt = max(taus, key=lambda t: gaussian_log_likelihood(d_va, y[va], t).mean())
        ll_mc = gaussian_log_likelihood(s_te, y[te], tau_mc).mean()
        ll_dt = gaussian_log_likelihood(d_te, y[te], tau_dt).mean()
        wins.append(ll_mc - ll_dt)
    # Directionally (Table 1): MC dropout's test log-likelihood is higher.
    assert np.mean(wins) > 0, wins
