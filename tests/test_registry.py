"""Generic properties that every registered flow step must have, at its event shape.

Each entry is tested at `event_shape(name, EVENT_SIZE)`: (EVENT_SIZE,) for a vector
step, the entry's small image shape for an image step. Log-dets reduce over all of the
event's axes, and the autodiff Jacobian of an event of D values is flattened to [D, D].
Made-up points on the data side (inputs of `inverse`, data of `log_prob`) lie in the
entry's `data_range` when it declares one.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import FlowModel
from tfp_flows.testing.registry import (
    REGISTRY,
    bijector_under_test,
    build_random,
    context_kwargs,
    event_shape,
)

NAMES = sorted(REGISTRY)
EVENT_SIZE = 4
# Fixed steps (TFP's Permute, a fixed affine map, the logit) have no weights to check.
WEIGHTED = [name for name in NAMES if build_random(name, EVENT_SIZE).trainable_weights]


def _shape(name):
    return event_shape(name, EVENT_SIZE)


def _points(batch_shape, name, dtype, seed=1):
    """Base-side points [*batch_shape, *event shape]: standard normal."""
    shape = (*batch_shape, *_shape(name))
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), dtype)


def _data_points(batch_shape, name, dtype, seed=1):
    """Data-side points: uniform in the entry's data_range, else standard normal."""
    data_range = REGISTRY[name].data_range
    if data_range is None:
        return _points(batch_shape, name, dtype, seed)
    shape = (*batch_shape, *_shape(name))
    return tf.constant(np.random.default_rng(seed).uniform(*data_range, shape), dtype)


def _fresh(t):
    # A new tensor object: TFP's bijector cache must not answer for it.
    return tf.identity(t)


def _tolerance(name, dtype, exact):
    """`exact` (rounding's tolerance), or the entry's solver tolerance if it has one."""
    solver_tolerance = REGISTRY[name].solver_tolerance
    return exact if solver_tolerance is None else solver_tolerance[dtype]


def _autodiff_log_det(transform, x, name):
    """(transform(x), log|det J| per event), J the autodiff Jacobian flattened to [D, D]."""
    # pfor would vectorise a solver's whole while loop, anew for each call: loop instead.
    pfor = REGISTRY[name].solver_tolerance is None
    with tf.GradientTape(persistent=not pfor) as tape:
        tape.watch(x)
        y = transform(x)
    size = math.prod(x.shape[1:])
    jacobian = tape.batch_jacobian(y, x, experimental_use_pfor=pfor)
    jacobian = tf.reshape(jacobian, (x.shape[0], size, size))
    return y, tf.linalg.slogdet(jacobian)[1]


@pytest.mark.parametrize("name", NAMES)
def test_inverse_round_trip_float32(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE))
    z = _points((64,), name, tf.float32)
    tolerance = _tolerance(name, "float32", 1e-5)
    np.testing.assert_allclose(
        bijector.inverse(_fresh(bijector.forward(z))), z, rtol=tolerance, atol=tolerance
    )
    x = _data_points((64,), name, tf.float32)
    np.testing.assert_allclose(
        bijector.forward(_fresh(bijector.inverse(_fresh(x)))), x, rtol=tolerance, atol=tolerance
    )


@pytest.mark.parametrize("name", NAMES)
def test_log_det_matches_autodiff_jacobian_float64(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE, dtype="float64"))
    event_ndims = len(_shape(name))
    x = _points((16,), name, tf.float64)
    tolerance = _tolerance(name, "float64", 1e-8)
    y, expected = _autodiff_log_det(bijector.forward, x, name)
    np.testing.assert_allclose(
        bijector.forward_log_det_jacobian(_fresh(x), event_ndims=event_ndims),
        expected,
        atol=tolerance,
    )

    y = _fresh(y)
    _, expected_inverse = _autodiff_log_det(bijector.inverse, y, name)
    np.testing.assert_allclose(
        bijector.inverse_log_det_jacobian(_fresh(y), event_ndims=event_ndims),
        expected_inverse,
        atol=tolerance,
    )


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_inverse_log_dets_agree(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE, dtype="float64"))
    event_ndims = len(_shape(name))
    x = _points((32,), name, tf.float64)
    y = _fresh(bijector.forward(x))
    np.testing.assert_allclose(
        bijector.forward_log_det_jacobian(_fresh(x), event_ndims=event_ndims),
        -bijector.inverse_log_det_jacobian(y, event_ndims=event_ndims),
        atol=_tolerance(name, "float64", 1e-10),
    )


@pytest.mark.parametrize("name", NAMES)
def test_leading_batch_dimensions(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE))
    shape = _shape(name)
    x = _points((2, 3, 5), name, tf.float32)
    y = bijector.forward(x)
    log_det = bijector.inverse_log_det_jacobian(_fresh(y), event_ndims=len(shape))
    assert y.shape == x.shape
    # TFP returns a scalar log-det for constant-Jacobian bijectors: it broadcasts.
    log_det = tf.broadcast_to(log_det, (2, 3, 5))
    flat_y = bijector.forward(_fresh(tf.reshape(x, (-1, *shape))))
    flat_log_det = bijector.inverse_log_det_jacobian(_fresh(flat_y), event_ndims=len(shape))
    np.testing.assert_allclose(tf.reshape(y, (-1, *shape)), flat_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tf.reshape(log_det, (-1,)), flat_log_det, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", WEIGHTED)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_gradients_reach_every_weight(name, direction):
    layer = build_random(name, EVENT_SIZE)
    bijector = bijector_under_test(layer)
    event_ndims = len(_shape(name))
    points = _points if direction == "forward" else _data_points
    x = points((32,), name, tf.float32)
    with tf.GradientTape() as tape:
        if direction == "forward":
            out = bijector.forward(x)
            log_det = bijector.forward_log_det_jacobian(x, event_ndims=event_ndims)
        else:
            out = bijector.inverse(x)
            log_det = bijector.inverse_log_det_jacobian(x, event_ndims=event_ndims)
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
    x = _points((8,), name, tf.float32)
    before = bijector_under_test(layer).forward(x).numpy()
    for weight in layer.trainable_weights:
        weight.assign(weight + 0.3)
    after = bijector_under_test(layer).forward(_fresh(x)).numpy()
    assert not np.allclose(before, after), "the bijector holds a copy of the weights"


@pytest.mark.parametrize("name", NAMES)
def test_keras_save_and_load(name, tmp_path):
    model = FlowModel([build_random(name, EVENT_SIZE)], event_shape=_shape(name))
    x = _data_points((16,), name, tf.float32).numpy()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    context = context_kwargs(model)
    np.testing.assert_array_equal(loaded.log_prob(x, **context), model.log_prob(x, **context))
    np.testing.assert_array_equal(
        loaded.sample(8, seed=3, **context), model.sample(8, seed=3, **context)
    )


def _far_points(name, dtype):
    """Points far beyond any data, with mixed signs: up to the dtype's largest values for
    vector steps, up to 1e30 for image steps, which in a flow sit behind the logit step
    (whose support is bounded: beyond it log_prob is -inf, see test_image_flows.py)."""
    shape = _shape(name)
    size = math.prod(shape)
    largest = float(np.finfo(dtype).max)
    signs = np.where(np.arange(size) % 2 == 0, 1.0, -1.0)
    scales = [1e3, 1e10, 1e19, 1e30]
    if REGISTRY[name].image_shape is None:
        scales += [0.1 * largest, largest]
    rows = [scale * signs for scale in scales]
    rows.append(np.full(size, 1e30))
    return np.stack(rows).reshape(-1, *shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_far_away_is_a_number_or_minus_inf_never_nan(name, dtype):
    model = FlowModel(
        [build_random(name, EVENT_SIZE, dtype=dtype)], event_shape=_shape(name), dtype=dtype
    )
    log_prob = model.log_prob(_far_points(name, dtype), **context_kwargs(model)).numpy()
    assert not np.isnan(log_prob).any(), log_prob
    assert not np.isposinf(log_prob).any(), log_prob


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_of_its_own_samples(name):
    # Every sample lies where the flow has density: log_prob takes it and is finite.
    model = FlowModel([build_random(name, EVENT_SIZE)], event_shape=_shape(name))
    context = context_kwargs(model)
    samples = model.sample(512, seed=7, **context)
    log_prob = model.log_prob(samples, **context).numpy()
    assert np.isfinite(log_prob).all(), log_prob[~np.isfinite(log_prob)]


# --- TFP-native details: what TFP's own code expects of a bijector -----------------------


@pytest.mark.parametrize("name", NAMES)
def test_tfp_sees_every_weight_and_only_the_layers(name):
    # `tfp.math.minimize(..., trainable_variables=dist.trainable_variables)` and
    # `tfp.vi.fit_surrogate_posterior` train what TFP finds there.
    layer = build_random(name, EVENT_SIZE)
    bijector = bijector_under_test(layer)
    found = {id(v) for v in bijector.trainable_variables}
    assert found == {id(w.value) for w in layer.trainable_weights}
    assert {id(v) for v in bijector.variables} == {id(w.value) for w in layer.weights}


@pytest.mark.parametrize("name", WEIGHTED)
def test_tfp_minimize_trains_every_weight(name):
    import tensorflow_probability as tfp
    import tf_keras

    layer = build_random(name, EVENT_SIZE)
    bijector = bijector_under_test(layer)
    x = _data_points((16,), name, tf.float32)
    event_ndims = len(_shape(name))
    before = [w.numpy().copy() for w in layer.trainable_weights]

    def loss():
        z = bijector.inverse(x)
        log_det = bijector.inverse_log_det_jacobian(x, event_ndims=event_ndims)
        squares = tf.reduce_sum(tf.square(z), axis=list(range(1, 1 + event_ndims)))
        return tf.reduce_mean(0.5 * squares - log_det)  # the NLL up to a constant

    tfp.math.minimize(
        loss,
        num_steps=2,
        optimizer=tf_keras.optimizers.Adam(1e-2),
        trainable_variables=bijector.trainable_variables,
    )
    for weight, old in zip(layer.trainable_weights, before):
        assert not np.array_equal(weight.numpy(), old), f"{weight.path} did not train"


@pytest.mark.parametrize("name", WEIGHTED)
def test_gradients_survive_a_cached_forward_pass(name):
    # forward (as sample does) outside a tape, then the density of its output inside one:
    # TFP's cache must not hand back values no tape recorded.
    layer = build_random(name, EVENT_SIZE)
    bijector = bijector_under_test(layer)
    y = bijector.forward(_points((8,), name, tf.float32))
    with tf.GradientTape() as tape:
        z = bijector.inverse(y)
        log_det = bijector.inverse_log_det_jacobian(y, event_ndims=len(_shape(name)))
        objective = tf.reduce_sum(tf.sin(z)) + tf.reduce_sum(log_det)
    gradients = tape.gradient(objective, [w.value for w in layer.trainable_weights])
    for weight, gradient in zip(layer.trainable_weights, gradients):
        assert gradient is not None, f"no gradient reaches {weight.path} after a cached forward"


@pytest.mark.parametrize("name", NAMES)
def test_shape_functions_take_unknown_dimensions(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE))
    shape = _shape(name)
    for known in (tf.TensorShape([5, *shape]), tf.TensorShape([None, *shape])):
        assert bijector.forward_event_shape(known).is_compatible_with(known)
        assert bijector.inverse_event_shape(known).is_compatible_with(known)
    for unknown in (tf.TensorShape([None] * (len(shape) + 1)), tf.TensorShape(None)):
        assert bijector.forward_event_shape(unknown).is_compatible_with(unknown)
        assert bijector.inverse_event_shape(unknown).is_compatible_with(unknown)


@pytest.mark.parametrize("name", NAMES)
def test_is_constant_jacobian_where_true(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE))
    assert bijector.is_constant_jacobian == REGISTRY[name].constant_jacobian
    if bijector.is_constant_jacobian:
        event_ndims = len(_shape(name))
        first = bijector.forward_log_det_jacobian(_points((4,), name, tf.float32), event_ndims)
        second = bijector.forward_log_det_jacobian(
            _points((4,), name, tf.float32, seed=9), event_ndims
        )
        np.testing.assert_allclose(first, second, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_saves_as_a_tf_module(name, tmp_path):
    # A tf.Module holding only the bijector (no Keras model) saves and serves it.
    bijector = bijector_under_test(build_random(name, EVENT_SIZE))
    shape = _shape(name)
    module = tf.Module()
    module.bijector = bijector
    module.forward = tf.function(
        lambda x: module.bijector.forward(x),
        input_signature=[tf.TensorSpec([None, *shape], tf.float32)],
    )
    tf.saved_model.save(module, str(tmp_path / name))
    loaded = tf.saved_model.load(str(tmp_path / name))
    z = _points((6,), name, tf.float32)
    np.testing.assert_allclose(loaded.forward(z), bijector.forward(_fresh(z)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_vectorized_map_equals_direct_calls(name):
    bijector = bijector_under_test(build_random(name, EVENT_SIZE))
    z = _points((6,), name, tf.float32)
    mapped = tf.vectorized_map(lambda one: bijector.forward(one[tf.newaxis])[0], z)
    np.testing.assert_allclose(mapped, bijector.forward(_fresh(z)), rtol=1e-5, atol=1e-5)
