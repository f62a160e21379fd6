"""Image flows: multi-scale Glow/RealNVP, ActNorm's data-dependent init, the logit step."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import FlowModel
from tfp_flows.bijectors.squeeze import Squeeze
from tfp_flows.export import export_saved_model
from tfp_flows.layers.image import (
    InvertibleConv1x1Layer,
    LogitLayer,
    MultiScaleLayer,
)

tfd = tfp.distributions
SHAPE = (8, 8, 2)


def _images(n, shape=SHAPE, seed=0, dtype="float32"):
    return np.random.default_rng(seed).uniform(0.0, 17.0, (n, *shape)).astype(dtype)


def _model(step="glow", dtype="float32", context_size=None, seed=0, noise=0.05):
    keras.utils.set_random_seed(seed)
    model = FlowModel(
        [
            MultiScaleLayer(
                levels=2,
                steps_per_level=2,
                step=step,
                hidden_channels=8,
                context_size=context_size,
                dtype=dtype,
            ),
            LogitLayer(17.0, dtype=dtype),
        ],
        event_shape=SHAPE,
        dtype=dtype,
    )
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:  # away from the identity
        weight.assign(weight + noise * rng.standard_normal(weight.shape))
    return model


def _jacobian_log_det(bijector, z, **kwargs):
    with tf.GradientTape() as tape:
        tape.watch(z)
        x = bijector.forward(z, **kwargs)
    size = math.prod(z.shape[1:])
    jacobian = tf.reshape(tape.batch_jacobian(x, z), (z.shape[0], size, size))
    return tf.linalg.slogdet(jacobian)[1]


@pytest.mark.parametrize("step", ["glow", "realnvp"])
def test_multiscale_inverse_and_log_det_float64(step):
    model = _model(step, "float64")
    x = tf.constant(_images(3, dtype="float64"))
    z = model.inverse(x)
    np.testing.assert_allclose(model.forward(tf.identity(z)), x, atol=1e-10)
    z = tf.constant(z.numpy())  # a new tensor: no cached answer
    expected = _jacobian_log_det(model.bijector, z)
    np.testing.assert_allclose(
        model.bijector.forward_log_det_jacobian(tf.identity(z), event_ndims=3), expected, atol=1e-8
    )
    # log p(x) is the change of variables through the whole flow.
    base = tfd.Normal(np.float64(0), np.float64(1)).log_prob(z)
    np.testing.assert_allclose(
        model.log_prob(x), tf.reduce_sum(base, [1, 2, 3]) - expected, atol=1e-8
    )


def test_conv_1x1_starts_as_a_rotation_with_its_lu_factors_fixed_in_the_weights():
    layer = InvertibleConv1x1Layer(dtype="float64")
    layer.build((None, 2, 2, 6))
    permutation, lower, upper = layer.bijector._factors(tf.float64)
    weight = (permutation @ lower @ upper).numpy()
    np.testing.assert_allclose(weight @ weight.T, np.eye(6), atol=1e-12)
    assert {w.name for w in layer.non_trainable_weights} == {"permutation", "sign"}


def test_squeeze_is_space_to_depth_and_odd_sizes_are_named():
    x = tf.reshape(tf.range(2 * 4 * 4 * 1, dtype=tf.float32), (2, 4, 4, 1))
    y = Squeeze().forward(x)
    assert y.shape == (2, 2, 2, 4)
    np.testing.assert_array_equal(y[0, 0, 0], [0, 1, 4, 5])  # the top-left 2×2 patch
    np.testing.assert_array_equal(Squeeze().inverse(y), x)
    with pytest.raises(ValueError, match=r"divisible by 8; the image is 28×28, level 3 gets 7×7"):
        FlowModel([MultiScaleLayer(levels=3)], event_shape=(28, 28, 1))
    with pytest.raises(ValueError, match=r"need at least 2 pixels .* level 2 of 2 is 1×1"):
        FlowModel([MultiScaleLayer(levels=2, step="realnvp")], event_shape=(4, 4, 2))


def test_act_norm_initialises_from_the_first_batch_inside_fit_and_survives_saving(tmp_path):
    model = _model(noise=0.0)
    model.compile(keras.optimizers.Adam(0.0))  # init only: training does not move weights
    x = _images(64, seed=3)
    assert model.needs_data_initialization
    model.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert not model.needs_data_initialization
    # On the first batch, the ActNorm nearest the data (in the normalizing direction)
    # returns zero-mean, unit-variance channels.
    layer = model.flow_layers[0]
    first_act_norm = [s for s in layer.steps if "level_0_step_0_act_norm" in s.name][0]
    h = model.flow_layers[1].bijector.inverse(tf.constant(x[:32]))
    h = Squeeze().forward(h)
    normalized = first_act_norm.bijector.inverse(h).numpy()
    np.testing.assert_allclose(normalized.mean((0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalized.std((0, 1, 2)), 1.0, atol=1e-3)

    path = tmp_path / "glow.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert not loaded.needs_data_initialization
    before = [w.numpy().copy() for w in loaded.weights]
    loaded.initialize_from_data(_images(16, seed=9))  # already initialised: no change
    for weight, old in zip(loaded.weights, before):
        np.testing.assert_array_equal(weight.numpy(), old)
    np.testing.assert_allclose(loaded.log_prob(x[:4]), model.log_prob(x[:4]), rtol=1e-6)


def test_initialisation_from_a_dataset_of_pairs_for_a_conditional_flow():
    model = _model(context_size=3, noise=0.0)
    model.compile(keras.optimizers.Adam(1e-3))
    x, context = _images(32, seed=4), np.eye(3, dtype=np.float32)[np.arange(32) % 3]
    pairs = tf.data.Dataset.from_tensor_slices((x, context)).batch(16)
    history = model.fit(pairs, epochs=2, shuffle=False, verbose=0).history
    assert not model.needs_data_initialization and np.isfinite(history["loss"]).all()
    first, second = (model.log_prob(x[:4], context=context[k]) for k in (0, 1))
    assert not np.allclose(first, second)  # the context reaches the couplings
    assert model.sample(5, seed=1, context=context[:2]).shape == (5, 2, *SHAPE)


def test_logit_step_gives_the_known_density_of_uniform_pixels():
    # With a standard logistic base, σ(y) is uniform on (0, 1), so the flow is the
    # uniform density on the stretched range [−Kα, K(1−α)]/(1−2α): log p = −D·log(K/(1−2α)).
    size, value_range, alpha = 12, 256.0, 0.05
    base = tfd.Sample(tfd.Logistic(np.float32(0), np.float32(1)), size)
    model = FlowModel([LogitLayer(value_range, alpha)], base_distribution=base)
    x = np.random.default_rng(0).uniform(0, value_range, (5, size)).astype(np.float32)
    expected = -size * math.log(value_range / (1 - 2 * alpha))
    np.testing.assert_allclose(model.log_prob(x), expected, rtol=1e-5)
    np.testing.assert_allclose(
        model.bits_per_dim(x), math.log2(value_range / (1 - 2 * alpha)), rtol=1e-5
    )


def test_bad_images_are_named():
    model = _model()
    model.compile("adam")
    with pytest.raises(ValueError, match=r"x has event shape \(8, 8, 1\)"):
        model.log_prob(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(
        ValueError, match=r"x has event shape \(7, 8, 2\).*flow models events of shape \(8, 8, 2\)"
    ):
        model.fit(np.zeros((2, 7, 8, 2), np.float32))
    with pytest.raises(ValueError, match=r"outside the declared range \[0, 17\); the first is 17"):
        model.fit(np.full((4, *SHAPE), 17.0, np.float32))
    # Data to fit or evaluate must be dequantised counts in [0, K); log_prob scores
    # any point (the flow's support is a little wider, see test_edges.py).
    with pytest.raises(ValueError, match="the first is -0.5"):
        model.evaluate(np.full((1, *SHAPE), -0.5, np.float32))


def test_glow_exports_for_serving(tmp_path):
    model = _model()
    path = export_saved_model(model, tmp_path, "glow")
    loaded = tf.saved_model.load(path).signatures
    x = _images(3, seed=5)
    np.testing.assert_allclose(loaded["log_prob"](x=x)["log_prob"], model.log_prob(x), rtol=1e-5)
    samples = loaded["sample"](n=tf.constant(2), seed=tf.constant([1, 2]))["samples"]
    np.testing.assert_allclose(samples, model.sample(2, seed=[1, 2]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("factory", ["glow", "realnvp_image"])
def test_factories_train_on_digits_without_nan(factory):
    from tfp_flows import datasets, flows

    data = datasets.load("digits")
    keras.utils.set_random_seed(0)
    model = getattr(flows, factory)(
        data.image_shape, steps_per_level=2, hidden_channels=16, value_range=17.0
    )
    model.compile(keras.optimizers.Adam(1e-3))
    test = data.test.reshape(-1, *data.image_shape)
    before = float(np.mean(model.bits_per_dim(test)))
    pipeline = datasets.dequantizing_pipeline(
        data.train_counts.reshape(-1, *data.image_shape), batch_size=128
    )
    history = model.fit(pipeline, epochs=3, shuffle=False, verbose=0).history
    after = float(np.mean(model.bits_per_dim(test)))
    assert np.isfinite(history["loss"]).all()
    # Better than it started, and than a uniform density on [0, 17) (log2 17 = 4.09).
    assert after < min(before, 4.09)
