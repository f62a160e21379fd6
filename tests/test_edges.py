"""Trust at the edges: every input a user can plausibly pass gets the right answer or a named
refusal (the refusals themselves are rows of test_bad_input.py)."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import FlowModel, flows
from tfp_flows.layers.image import LogitLayer

F32 = "float32"


def _moved(model, scale=0.2, seed=0):
    """The model with every weight moved off its initial value (no training needed)."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(weight + scale * rng.standard_normal(weight.shape).astype(weight.dtype))
    return model


def _data(n=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2)).astype(F32)


# --- Sample weights ------------------------------------------------------------


def test_evaluate_honours_sample_weights():
    model = _moved(flows.realnvp(2, num_layers=2))
    model.compile("adam")
    x = _data()
    nll = -model.log_prob(x).numpy().astype(np.float64)
    weights = np.random.default_rng(1).uniform(0, 2, len(x))
    loss = model.evaluate(x, sample_weight=weights, batch_size=16, verbose=0)[0]
    assert loss == pytest.approx(np.sum(weights * nll) / weights.sum(), rel=1e-5)
    half = np.r_[np.ones(32), np.zeros(32)]
    loss = model.evaluate(x, sample_weight=half, batch_size=16, verbose=0)[0]
    assert loss == pytest.approx(nll[:32].mean(), rel=1e-5)


def test_fit_with_zero_weights_trains_on_the_weighted_rows_only():
    # Full-batch steps: zero-weight rows contribute nothing, so training on x with
    # weights [1]*32 + [0]*32 takes the very steps that training on x[:32] takes.
    x = _data()
    results = []
    for data, weight in ((x, np.r_[np.ones(32), np.zeros(32)]), (x[:32], None)):
        keras.utils.set_random_seed(0)
        model = flows.realnvp(2, num_layers=2)
        model.compile(keras.optimizers.Adam(1e-2))
        model.fit(data, sample_weight=weight, batch_size=64, epochs=3, shuffle=False, verbose=0)
        results.append(model.get_weights())
    for weighted, plain in zip(*results):
        np.testing.assert_allclose(weighted, plain, rtol=1e-5, atol=1e-6)


def test_weights_change_the_fit():
    x = _data()
    losses = []
    for weight in (np.ones(64), np.r_[np.ones(32), 3 * np.ones(32)]):
        keras.utils.set_random_seed(0)
        model = flows.realnvp(2, num_layers=2)
        model.compile(keras.optimizers.Adam(1e-2))
        model.fit(x, sample_weight=weight, batch_size=64, epochs=2, shuffle=False, verbose=0)
        losses.append(model.get_weights()[0])
    assert not np.allclose(*losses)


# --- Datasets: a bad batch stops training with the last good weights -------------


def test_a_nan_batch_stops_training_with_the_last_good_weights():
    x = _data(48)
    bad = x.copy()
    bad[40, 1] = np.nan  # in the third batch of 16
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2)
    model.compile(keras.optimizers.Adam(1e-2))
    with pytest.raises(
        ValueError, match="a batch of x has NaN or Inf values in epoch 1, one of batches 1-3"
    ):
        model.fit(tf.data.Dataset.from_tensor_slices(bad).batch(16), verbose=0)
    keras.utils.set_random_seed(0)
    reference = flows.realnvp(2, num_layers=2)
    reference.compile(keras.optimizers.Adam(1e-2))
    reference.fit(tf.data.Dataset.from_tensor_slices(x[:32]).batch(16), verbose=0)
    for got, expected in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_dataframes_train_like_arrays():
    import pandas as pd

    x = _data()
    weights = []
    for data in (x, pd.DataFrame(x, columns=["a", "b"])):
        keras.utils.set_random_seed(0)
        model = flows.realnvp(2, num_layers=2)
        model.compile(keras.optimizers.Adam(1e-2))
        model.fit(data, batch_size=32, epochs=1, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_a_dataset_of_weighted_examples():
    # (x, placeholder, w) elements: the form fit(x, sample_weight=w) takes inside Keras.
    x, w = _data(), np.r_[np.ones(32), np.zeros(32)].astype(F32)
    model = _moved(flows.realnvp(2, num_layers=2))
    model.compile("adam")
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros((64, 0), F32), w)).batch(16)
    loss = model.evaluate(dataset, verbose=0)[0]
    assert loss == pytest.approx(-model.log_prob(x[:32]).numpy().mean(), rel=1e-5)


# --- Answers for every input ---------------------------------------------------


def test_nan_rows_give_nan_and_infinite_rows_minus_inf():
    model = _moved(flows.realnvp(2, num_layers=2))
    x = np.array([[0.1, 0.2], [np.nan, 0.0], [np.inf, 0.0], [0.0, -np.inf], [np.nan, np.inf]], F32)
    log_prob = model.log_prob(x).numpy()
    assert np.isfinite(log_prob[0])
    assert np.isnan(log_prob[1]) and np.isnan(log_prob[4])
    assert np.isneginf(log_prob[2]) and np.isneginf(log_prob[3])
    np.testing.assert_allclose(log_prob[0], model.log_prob(x[:1])[0], rtol=1e-6)


def test_logit_flow_support_is_its_image_and_minus_inf_beyond():
    # A logit step over a standard normal base has log p(x) in closed form on its
    # image (−αK, K(1 − α))/(1 − 2α), which is wider than [0, K), and -inf beyond.
    value_range, alpha = 17.0, 0.05
    model = FlowModel([LogitLayer(value_range, alpha)], event_shape=(1,))
    stretch = value_range / (1 - 2 * alpha)
    x = np.array([[-0.5], [8.0], [17.5], [-0.95], [18.0], [-100.0]], np.float64)
    log_prob = model.log_prob(x.astype(F32)).numpy()
    inside = (x[:, 0] > -alpha * stretch) & (x[:, 0] < (1 - alpha) * stretch)
    s = x[inside, 0] / stretch + alpha  # sigmoid(y)
    y = np.log(s / (1 - s))
    expected = -0.5 * y**2 - 0.5 * math.log(2 * math.pi) - np.log(stretch * s * (1 - s))
    np.testing.assert_allclose(log_prob[inside], expected, rtol=1e-4)
    assert np.isneginf(log_prob[~inside]).all() and (~inside).sum() == 3
    assert np.isnan(model.inverse(x[~inside].astype(F32)).numpy()).all()


def test_image_flow_scores_its_own_samples():
    model = _moved(
        flows.glow((4, 4, 1), levels=1, steps_per_level=2, hidden_channels=8, value_range=17.0),
        scale=0.05,
    )
    samples = model.sample(256, seed=3).numpy()
    assert (samples < 0).any() or (samples >= 17).any()  # the margins of the support are used
    assert np.isfinite(model.log_prob(samples).numpy()).all()


def test_glow_far_away_is_minus_inf():
    model = flows.glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=8, value_range=17)
    far = np.full((3, 4, 4, 1), 1e30, F32) * np.array([1, -1, 1e8], F32)[:, None, None, None]
    assert np.isneginf(model.log_prob(far).numpy()).all()


# --- Integers and seeds --------------------------------------------------------


def test_distinct_int_seeds_give_distinct_samples():
    model = flows.planar(2, num_layers=2)
    seeds = [1, 2**31, 2**32 + 1, 2**33, 2**34, 2**40, 2**64 - 1]
    samples = [model.sample(2, seed=s).numpy() for s in seeds]
    for i in range(len(seeds)):
        for j in range(i):
            assert not np.allclose(samples[i], samples[j]), (seeds[i], seeds[j])
    # Below 2**31 an int seed s is the stateless seed [0, s] (unchanged meaning).
    np.testing.assert_array_equal(model.sample(3, seed=42), model.sample(3, seed=[0, 42]))


def test_large_inputs_run_in_chunks_with_the_same_answers():
    model = _moved(flows.realnvp(2, num_layers=2))
    x = _data(1000, seed=4)
    direct = model.log_prob(x).numpy()
    model.chunk_size = 64
    np.testing.assert_allclose(model.log_prob(x), direct, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.log_prob(x.reshape(10, 100, 2)), direct.reshape(10, 100))
    z, log_det = model.inverse_and_log_det(x)
    assert z.shape == (1000, 2) and log_det.shape == (1000,)
    samples = model.sample(300, seed=5)
    assert samples.shape == (300, 2)
    np.testing.assert_array_equal(samples, model.sample(300, seed=5))
    assert len(np.unique(samples.numpy()[:, 0])) == 300  # chunks drew from distinct seeds


def test_conditional_chunks_broadcast_one_context():
    model = _moved(flows.realnvp(2, num_layers=2, context_size=3))
    x, context = _data(200, seed=6), np.array([0.5, -1.0, 2.0], F32)
    direct = model.log_prob(x, context=context).numpy()
    model.chunk_size = 32
    np.testing.assert_allclose(model.log_prob(x, context=context), direct, rtol=1e-6, atol=1e-6)
    assert model.sample(70, context=np.eye(3, dtype=F32), seed=1).shape == (70, 3, 2)


# --- Scale ---------------------------------------------------------------------


@pytest.mark.parametrize("unit", [1e-6, 1e3])
def test_standardisation_is_relative_to_the_data(unit):
    # The same data in other units: the standardised flow is the same function, and
    # the densities differ by exactly the change of units, log p_unit = log p − D·log(unit).
    x = (_data(500, seed=2) * [1.0, 3.0] + [2.0, -1.0]).astype(np.float64)
    densities = []
    for scale in (1.0, unit):
        keras.utils.set_random_seed(0)
        model = _moved(flows.realnvp(2, num_layers=2, standardize=x * scale))
        densities.append(model.log_prob((x * scale).astype(F32)).numpy().astype(np.float64))
    np.testing.assert_allclose(densities[1], densities[0] - 2 * math.log(unit), atol=2e-3)


def test_fit_warns_about_constant_and_discrete_columns():
    model = flows.realnvp(2, num_layers=2)
    model.compile("adam")
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match=r"constant columns \[1\]"):
        model.fit(np.c_[rng.standard_normal(64), np.ones(64)].astype(F32), verbose=0)
    with pytest.warns(UserWarning, match=r"columns \[0\] that take few distinct values"):
        model.fit(np.c_[rng.integers(0, 3, 500), rng.standard_normal(500)].astype(F32), verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(rng.standard_normal((500, 2)).astype(F32), verbose=0)
