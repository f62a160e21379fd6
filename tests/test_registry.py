"""Generic properties that every registered flow step must have."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import FlowModel
from tfp_flows.registry import REGISTRY, bijector_under_test, build_random, context_kwargs

NAMES = sorted(REGISTRY)
EVENT_SIZE = 4
# Fixed steps (TFP's Permute, a fixed affine map) have no weights to check.
WEIGHTED = [name for name in NAMES if build_random(name, EVENT_SIZE).trainable_weights]


def _points(shape, dtype, seed=1):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), dtype)


def _fresh(t):
    # A new tensor object: TFP's bijector cache must not answer for it.
    return tf.identity(t)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_round_trip_float32(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE))
    x = _points((64, EVENT_SIZE), tf.float32)
    y = bijector.forward(x)
    np.testing.assert_allclose(bijector.inverse(_fresh(y)), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        bijector.forward(_fresh(bijector.inverse(_fresh(x)))), x, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", NAMES)
def test_log_det_matches_autodiff_jacobian_float64(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE, dtype="float64"))
    x = _points((16, EVENT_SIZE), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bijector.forward(x)
    jacobian = tape.batch_jacobian(y, x)
    _, expected = tf.linalg.slogdet(jacobian)
    np.testing.assert_allclose(
        bijector.forward_log_det_jacobian(_fresh(x), event_ndims=1), expected, atol=1e-8
    )

    y = _fresh(y)
    with tf.GradientTape() as tape:
        tape.watch(y)
        x_back = bijector.inverse(y)
    _, expected_inverse = tf.linalg.slogdet(tape.batch_jacobian(x_back, y))
    np.testing.assert_allclose(
        bijector.inverse_log_det_jacobian(_fresh(y), event_ndims=1), expected_inverse, atol=1e-8
    )


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_inverse_log_dets_agree(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE, dtype="float64"))
    x = _points((32, EVENT_SIZE), tf.float64)
    y = _fresh(bijector.forward(x))
    np.testing.assert_allclose(
        bijector.forward_log_det_jacobian(_fresh(x), event_ndims=1),
        -bijector.inverse_log_det_jacobian(y, event_ndims=1),
        atol=1e-10,
    )


@pytest.mark.parametrize("name", NAMES)
def test_leading_batch_dimensions(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE))
    x = _points((2, 3, 5, EVENT_SIZE), tf.float32)
    y = bijector.forward(x)
    log_det = bijector.inverse_log_det_jacobian(_fresh(y), event_ndims=1)
    assert y.shape == x.shape
    # TFP returns a scalar log-det for constant-Jacobian bijectors: it broadcasts.
    log_det = tf.broadcast_to(log_det, (2, 3, 5))
    flat_y = bijector.forward(_fresh(tf.reshape(x, (-1, EVENT_SIZE))))
    flat_log_det = bijector.inverse_log_det_jacobian(_fresh(flat_y), event_ndims=1)
    np.testing.assert_allclose(tf.reshape(y, (-1, EVENT_SIZE)), flat_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tf.reshape(log_det, (-1,)), flat_log_det, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", WEIGHTED)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_gradients_reach_every_weight(name, direction):
    layer = build_random(name, EVENT_SIZE)
    bijector = bijector_under_test(layer)
    x = _points((32, EVENT_SIZE), tf.float32)
    with tf.GradientTape() as tape:
        if direction == "forward":
            out = bijector.forward(x)
            log_det = bijector.forward_log_det_jacobian(x, event_ndims=1)
        else:
            out = bijector.inverse(x)
            log_det = bijector.inverse_log_det_jacobian(x, event_ndims=1)
        objective = tf.reduce_sum(tf.sin(out)) + tf.reduce_sum(log_det)
    weights = layer.trainable_weights
    assert weights
    gradients = tape.gradient(objective, [w.value for w in weights])
    for weight, gradient in zip(weights, gradients):
        assert gradient is not None, f"no gradient reaches {weight.path}"
        assert float(tf.norm(gradient)) > 0, f"zero gradient for {weight.path}"


@pytest.mark.parametrize("name", WEIGHTED)
def test_bijector_follows_its_weights(name):
    layer = build_random(name, EVENT_SIZE)
    x = _points((8, EVENT_SIZE), tf.float32)
    before = bijector_under_test(layer).forward(x).numpy()
    for weight in layer.trainable_weights:
        weight.assign(weight + 0.3)
    after = bijector_under_test(layer).forward(_fresh(x)).numpy()
    assert not np.allclose(before, after), "the bijector holds a copy of the weights"


@pytest.mark.parametrize("name", NAMES)
def test_keras_save_and_load(name, tmp_path):
    model = FlowModel([build_random(name, EVENT_SIZE)], event_shape=(EVENT_SIZE,))
    x = _points((16, EVENT_SIZE), tf.float32).numpy()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    context = context_kwargs(model)
    np.testing.assert_array_equal(loaded.log_prob(x, **context), model.log_prob(x, **context))
    np.testing.assert_array_equal(
        loaded.sample(8, seed=3, **context), model.sample(8, seed=3, **context)
    )
