"""Conditional flows p(x | context): per-example contexts, training, sampling, TFP interop.

The generic bijector properties of a conditional coupling at one fixed context run with
every other registry entry (tests/test_registry.py); here the context varies.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import FlowModel, layers
from tfp_flows.bijectors import half_mask
from tfp_flows.testing.registry import build_random

tfb, tfd = tfp.bijectors, tfp.distributions

CONTEXT_SIZE = 3


def _conditional_model(dtype="float32", hidden_units=(16,), num_layers=2, seed=0):
    steps = [
        layers.AffineCouplingLayer(
            half_mask(4, flip=i % 2 == 1),
            hidden_units,
            context_size=CONTEXT_SIZE,
            dtype=dtype,
            name=f"coupling_{i}",
        )
        for i in range(num_layers)
    ]
    model = FlowModel(steps, event_shape=(4,), dtype=dtype)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(0.4 * rng.standard_normal(weight.shape))
    return model


def _points(shape, dtype="float32", seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_the_context_changes_the_map_and_the_cache_keeps_contexts_apart():
    bijector = build_random("affine_coupling_conditional", 4).bijector
    x = tf.constant(_points((5, 4)))
    first, second = tf.constant(_points((5, 3), seed=2)), tf.constant(_points((5, 3), seed=3))
    y_first = bijector.forward(x, context=first)
    y_second = bijector.forward(x, context=second)
    assert not np.allclose(y_first, y_second)
    # The same x with another context must not be answered from TFP's bijector cache
    # (and the inverse is computed afresh, from a new tensor).
    np.testing.assert_allclose(
        bijector.inverse(tf.identity(y_second), context=second), x, atol=1e-5
    )
    assert bijector.inverse(y_second, context=second) is x  # the cache, keyed on the context
    log_det_first = bijector.forward_log_det_jacobian(x, event_ndims=1, context=first)
    log_det_second = bijector.forward_log_det_jacobian(x, event_ndims=1, context=second)
    assert not np.allclose(log_det_first, log_det_second)


def test_per_example_contexts_match_one_example_at_a_time():
    model = _conditional_model()
    x, context = _points((6, 4)), _points((6, CONTEXT_SIZE), seed=2)
    batched = model.log_prob(x, context=context).numpy()
    one_by_one = [float(model.log_prob(x[i], context=context[i])) for i in range(6)]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)
    # One context for the whole batch broadcasts.
    shared = model.log_prob(x, context=context[0]).numpy()
    np.testing.assert_allclose(shared[0], batched[0], rtol=1e-6)
    assert not np.allclose(shared[1:], batched[1:])


def test_log_prob_is_the_change_of_variables_with_per_example_contexts_float64():
    model = _conditional_model("float64")
    x = tf.constant(_points((8, 4), "float64"))
    context = tf.constant(_points((8, CONTEXT_SIZE), "float64", seed=2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = model.inverse(x, context=context)
    _, log_det = tf.linalg.slogdet(tape.batch_jacobian(z, x))
    base = tfd.MultivariateNormalDiag(tf.zeros(4, tf.float64)).log_prob(z)
    np.testing.assert_allclose(model.log_prob(x, context=context), base + log_det, atol=1e-10)
    np.testing.assert_allclose(model.forward(z, context=context), x, atol=1e-10)


def test_tfp_distribution_takes_the_context_through_bijector_kwargs():
    model = _conditional_model()
    x, context = _points((5, 4)), _points((5, CONTEXT_SIZE), seed=2)
    log_prob = model.distribution.log_prob(x, bijector_kwargs=model.bijector_kwargs(context))
    np.testing.assert_allclose(log_prob, model.log_prob(x, context=context), rtol=1e-5)


def test_gradients_reach_the_context_weights():
    model = _conditional_model()
    x, context = _points((32, 4)), _points((32, CONTEXT_SIZE), seed=2)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model((tf.constant(x), tf.constant(context))))
    kernels = [step.network.hidden_layers[0].kernel for step in model.flow_layers]
    for gradient in tape.gradient(loss, [kernel.value for kernel in kernels]):
        # The last CONTEXT_SIZE rows of the first kernel read the context.
        assert float(tf.norm(gradient[-CONTEXT_SIZE:])) > 0


def test_sample_shapes_and_seeds():
    model = _conditional_model()
    one = np.ones(CONTEXT_SIZE, np.float32)
    assert model.sample(7, context=one, seed=1).shape == (7, 4)
    several = _points((2, 5, CONTEXT_SIZE), seed=2)
    samples = model.sample(7, context=several, seed=1)
    assert samples.shape == (7, 2, 5, 4)
    np.testing.assert_array_equal(samples, model.sample(7, context=several, seed=1))
    # Each sample scores finite under its own context.
    assert np.isfinite(model.log_prob(samples, context=several)).all()


def test_fit_learns_a_conditional_gaussian():
    # x | c ~ N(A c, 0.5² I): the flow must learn the mean as a function of the context.
    rng = np.random.default_rng(0)
    a = np.array([[2.0, 0.0], [0.0, -1.0]])

    def draw(n):
        context = rng.standard_normal((n, 2)).astype(np.float32)
        return (context @ a.T + 0.5 * rng.standard_normal((n, 2))).astype(np.float32), context

    (x, context), (x_test, context_test) = draw(4000), draw(2000)
    keras.utils.set_random_seed(0)
    model = FlowModel(
        [
            layers.AffineCouplingLayer(half_mask(2, flip=i % 2 == 1), (32, 32), context_size=2)
            for i in range(4)
        ],
        event_shape=(2,),
    )
    model.compile(keras.optimizers.Adam(3e-3))
    model.fit(x, context, batch_size=256, epochs=40, verbose=0)

    exact = tfd.MultivariateNormalDiag(context_test @ a.T, [0.5, 0.5]).log_prob(x_test)
    flow = model.log_prob(x_test, context=context_test)
    assert abs(float(np.mean(flow)) - float(np.mean(exact))) < 0.05
    samples = model.sample(4000, context=np.array([1.0, 1.0], np.float32), seed=0).numpy()
    np.testing.assert_allclose(samples.mean(0), [2.0, -1.0], atol=0.1)
    np.testing.assert_allclose(samples.std(0), [0.5, 0.5], atol=0.05)


def test_datasets_of_pairs_weights_predict_and_evaluate():
    model = _conditional_model()
    model.compile("adam")
    x, context = _points((64, 4)), _points((64, CONTEXT_SIZE), seed=2)
    weights = np.linspace(0.2, 3.0, 64).astype(np.float32)  # Σw ≠ N: the mean is over Σw
    expected = -float(np.mean(model.log_prob(x, context=context)))
    pairs = tf.data.Dataset.from_tensor_slices((x, context)).batch(16)
    assert model.evaluate(pairs, verbose=0, return_dict=True)["loss"] == pytest.approx(
        expected, rel=1e-5
    )
    assert model.evaluate(x, context, verbose=0, return_dict=True)["loss"] == pytest.approx(
        expected, rel=1e-5
    )
    weighted = tf.data.Dataset.from_tensor_slices((x, context, weights)).batch(16)
    expected_weighted = -float(np.sum(weights * model.log_prob(x, context=context))) / float(
        np.sum(weights)
    )
    assert model.evaluate(weighted, verbose=0, return_dict=True)["loss"] == pytest.approx(
        expected_weighted, rel=1e-5
    )
    np.testing.assert_allclose(
        model.predict((x, context), verbose=0), model.log_prob(x, context=context), rtol=1e-6
    )
    # A dataset of (x, context) pairs predicts too (Keras would drop the second item).
    np.testing.assert_allclose(
        model.predict(pairs, verbose=0), model.log_prob(x, context=context), rtol=1e-6
    )
    history = model.fit(
        pairs, validation_data=(x[:8], context[:8]), epochs=2, shuffle=False, verbose=0
    ).history
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["val_loss"]).all()


def test_unconditional_steps_and_tfp_bijectors_mix_with_conditional_ones():
    model = FlowModel(
        [
            layers.AffineCouplingLayer(half_mask(4), (8,), context_size=2, name="conditional"),
            layers.PlanarLayer(),
            tfb.Shift([1.0, 0.0, 0.0, 0.0]),
        ],
        event_shape=(4,),
    )
    x = _points((5, 4))
    context = _points((5, 2), seed=2)
    z = model.inverse(x, context=context)
    np.testing.assert_allclose(model.forward(z, context=context), x, atol=1e-4)
    assert list(model.bijector_kwargs(context)) == ["conditional"]


def test_validation_data_from_a_py_dataset():
    model = _conditional_model()
    model.compile("adam")
    x, context = _points((32, 4)), _points((32, CONTEXT_SIZE), seed=2)

    class Pairs(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return x[16 * i : 16 * (i + 1)], context[16 * i : 16 * (i + 1)]

    history = model.fit(x, context, validation_data=Pairs(), epochs=1, verbose=0).history
    assert np.isfinite(history["val_loss"]).all()


def test_a_context_whose_batch_does_not_fit_is_named():
    model = _conditional_model()
    with pytest.raises(ValueError, match=r"context's batch shape \(4,\) does not broadcast"):
        model.log_prob(_points((5, 4)), context=_points((4, CONTEXT_SIZE)))
    # Two rows of x in a list are x, not an (x, context) pair.
    with pytest.raises(ValueError, match="none was given|pass it as fit"):
        model.compile("adam")
        model.fit([[0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
