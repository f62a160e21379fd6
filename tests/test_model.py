"""FlowModel: training with fit, TFP composition, sampling, dtypes, bad input."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import FlowModel, datasets, flows
from tfp_flows.layers import PermuteLayer, PlanarLayer
from tfp_flows.testing.registry import build_random

tfb = tfp.bijectors
tfd = tfp.distributions


@pytest.fixture(scope="module")
def moons():
    return datasets.load("moons", num_train=4000, num_test=2000, seed=0)


def _weights(model):
    return [w.numpy().copy() for w in model.trainable_weights]


@pytest.mark.parametrize("family", sorted(flows.FLOWS))
def test_fit_moves_every_weight(family, moons):
    keras.utils.set_random_seed(0)
    model = flows.FLOWS[family](2, num_layers=2)
    model.compile(keras.optimizers.Adam(1e-2))
    before = _weights(model)
    history = model.fit(moons.train[:1024], batch_size=256, epochs=3, verbose=0)
    after = _weights(model)
    assert len(before) == len(model.trainable_weights) > 0
    for weight, old, new in zip(model.trainable_weights, before, after):
        assert not np.array_equal(old, new), f"{weight.path} was not trained"
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize("family", sorted(flows.FLOWS))
def test_density_integrates_to_one(family):
    # Random weights far from the identity; a wrong log-det sign or term shows here.
    keras.utils.set_random_seed(1)
    options = {"hidden_units": (8,)} if family in ("realnvp", "nsf", "maf") else {}
    model = flows.FLOWS[family](2, num_layers=3, **options)
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(0.5 * rng.standard_normal(weight.shape).astype("float32"))
    edge = np.linspace(-30, 30, 1501)
    grid = np.stack(np.meshgrid(edge, edge), -1).reshape(-1, 2).astype("float32")
    mass = np.exp(model.log_prob(grid).numpy()).sum() * (edge[1] - edge[0]) ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_distribution_composes_with_tfp():
    model = FlowModel(
        [
            build_random("affine_coupling_half", 2),
            PermuteLayer([1, 0]),
            build_random("planar", 2, seed=2),
        ],
        event_shape=(2,),
    )
    # TFP hands out its non-composite-tensor class here; both are TransformedDistributions.
    assert "TransformedDistribution" in type(model.distribution).__name__
    assert isinstance(model.distribution, tfd.Distribution)
    assert model.distribution.event_shape == (2,)
    assert model.distribution.batch_shape == ()
    x = np.random.default_rng(0).standard_normal((10, 2)).astype("float32")
    shift = np.array([1.0, -2.0], "float32")
    shifted = tfd.TransformedDistribution(model.distribution, tfb.Shift(shift))
    np.testing.assert_allclose(shifted.log_prob(x + shift), model.log_prob(x), atol=1e-5)
    scaled = tfd.TransformedDistribution(
        model.base_distribution, tfb.Chain([tfb.Scale(2.0), model.bijector])
    )
    np.testing.assert_allclose(
        scaled.log_prob(2 * x), model.log_prob(x) - 2 * math.log(2.0), atol=1e-5
    )
    inverted = tfd.TransformedDistribution(
        model.distribution, tfb.Invert(model.bijector)
    )  # back to the base
    z = model.base_distribution.sample(5, seed=(1, 2))
    np.testing.assert_allclose(inverted.log_prob(z), model.base_distribution.log_prob(z), atol=1e-4)
    np.testing.assert_allclose(model.prob(x), np.exp(model.log_prob(x)), rtol=1e-6)


def test_custom_base_distribution():
    base = tfd.MultivariateNormalDiag(loc=[1.0, -1.0], scale_diag=[0.5, 2.0])
    model = FlowModel([PermuteLayer([1, 0])], base_distribution=base)  # swaps the coordinates
    assert model.event_shape == (2,)
    x = np.random.default_rng(0).standard_normal((6, 2)).astype("float32")
    np.testing.assert_allclose(model.log_prob(x), base.log_prob(x[:, ::-1]), rtol=1e-6)
    samples = model.sample(20000, seed=1).numpy()
    np.testing.assert_allclose(samples.mean(0), [-1.0, 1.0], atol=0.05)
    np.testing.assert_allclose(samples.std(0), [2.0, 0.5], rtol=0.03)
    with pytest.raises(ValueError, match="base distribution's event shape"):
        FlowModel([PlanarLayer()], event_shape=(3,), base_distribution=base)


def test_samples_are_reproducible_with_a_seed():
    model = flows.realnvp(2, num_layers=2)
    for weight in model.trainable_weights:
        weight.assign(weight + 0.1)
    np.testing.assert_array_equal(model.sample(5, seed=7), model.sample(5, seed=7))
    np.testing.assert_array_equal(
        model.sample(5, seed=[3, 4]), model.sample(5, seed=tf.constant([3, 4]))
    )
    assert not np.array_equal(model.sample(5, seed=7), model.sample(5, seed=8))
    assert model.sample(3).shape == (3, 2)


def test_forward_inverse_round_trip_through_the_model():
    model = FlowModel(
        [
            build_random(n, 2, seed=i)
            for i, n in enumerate(["planar", "radial", "affine_coupling_half"])
        ],
        event_shape=(2,),
    )
    x = np.random.default_rng(0).standard_normal((50, 2)).astype("float32")
    np.testing.assert_allclose(model.forward(model.inverse(x)), x, atol=1e-5)


def test_float64_model_trains_and_keeps_float64(moons):
    model = flows.realnvp(2, num_layers=2, dtype="float64")
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(moons.train[:512].astype("float64"), batch_size=128, epochs=1, verbose=0)
    assert all(w.dtype == "float64" for w in model.weights)
    assert model.log_prob(moons.test[:4]).dtype == tf.float64
    with pytest.raises(ValueError, match="dtype"):
        FlowModel([PlanarLayer(dtype="float32")], event_shape=(2,), dtype="float64")


def test_float64_data_into_a_float32_model_is_cast(moons):
    model = flows.planar(2, num_layers=2)
    x = moons.test[:8]
    np.testing.assert_allclose(model.log_prob(x.astype("float64")), model.log_prob(x))


def test_fit_with_keras_callbacks_and_options(moons, tmp_path):
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2)
    model.compile(keras.optimizers.Adam(1e-3), steps_per_execution=4, jit_compile=True)
    callbacks = [
        keras.callbacks.EarlyStopping(patience=1),
        keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", save_best_only=True),
        keras.callbacks.BackupAndRestore(tmp_path / "backup"),
        keras.callbacks.TensorBoard(tmp_path / "logs"),
    ]
    history = model.fit(
        moons.train[:2048],
        batch_size=256,
        epochs=2,
        verbose=0,
        validation_data=moons.test[:512],
        callbacks=callbacks,
    )
    assert set(history.history) >= {"loss", "bits_per_dim", "val_loss", "val_bits_per_dim"}
    # 512 validation points in batches of 256, 200 in the last: still the exact mean.
    val = moons.test[:712]
    np.testing.assert_allclose(
        model.evaluate(val, batch_size=256, verbose=0)[0], -np.mean(model.log_prob(val)), rtol=1e-6
    )
    assert all(np.isfinite(v).all() for v in history.history.values())
    np.testing.assert_allclose(
        np.array(history.history["bits_per_dim"]),
        np.array(history.history["loss"]) / (2 * math.log(2)),
        rtol=1e-5,
    )
    restored = keras.models.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(
        restored.log_prob(moons.test[:8]), model.log_prob(moons.test[:8]), atol=1e-6
    )
    assert any((tmp_path / "logs").rglob("*.v2"))


def test_compile_refuses_a_loss():
    with pytest.raises(ValueError, match="takes no `loss`"):
        flows.planar(2, num_layers=1).compile("adam", loss="mse")


def test_factories_refuse_bad_dims():
    with pytest.raises(ValueError, match="realnvp needs an integer dim >= 2"):
        flows.realnvp(1)


def test_saved_model_restores_the_optimizer(tmp_path, moons):
    model = flows.realnvp(2, num_layers=2)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(moons.train[:512], batch_size=128, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 4
    loaded.fit(moons.train[:512], batch_size=128, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 8


@pytest.mark.parametrize("family", sorted(flows.FLOWS))
def test_fresh_flows_start_near_the_identity(family):
    # A deep stack must not start by squeezing space: 16 fresh planar layers
    # with the paper's constraint shifted log p by ~90 nats.
    keras.utils.set_random_seed(0)
    model = flows.FLOWS[family](2, num_layers=16)
    x = np.random.default_rng(0).standard_normal((1000, 2)).astype("float32")
    gap = np.abs(model.log_prob(x) - model.base_distribution.log_prob(x))
    assert float(np.mean(gap)) < 0.5


def test_coupling_networks_start_with_spread_relu_kinks():
    # Zero biases would bend every first-layer ReLU at x_a = 0 (see ShiftAndLogScaleNetwork).
    network = flows.realnvp(2, num_layers=1).flow_layers[0].network
    for layer in network.hidden_layers:
        fan_in = layer.kernel.shape[0]
        bias = layer.bias.numpy()
        assert np.all(np.abs(bias) <= 1 / math.sqrt(fan_in))
        assert np.std(bias) > 0.2 / math.sqrt(fan_in)
    np.testing.assert_array_equal(network.output_layer.kernel.numpy(), 0.0)


def test_fit_accepts_a_list(moons):
    model = flows.planar(2, num_layers=1)
    model.compile()
    history = model.fit(moons.train[:64].tolist(), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_base_distributions_that_would_not_train_or_mismatch_are_refused():
    trainable = tfd.MultivariateNormalDiag(loc=tf.Variable([0.0, 0.0]))
    with pytest.raises(ValueError, match="never train"):
        FlowModel([PlanarLayer()], base_distribution=trainable)
    float64 = tfd.MultivariateNormalDiag(loc=tf.zeros(2, tf.float64))
    with pytest.raises(ValueError, match="dtype float64"):
        FlowModel([PlanarLayer()], base_distribution=float64)


def test_float64_model_round_trips_through_keras_files(tmp_path):
    model = flows.radial(2, num_layers=2, dtype="float64")
    for weight in model.trainable_weights:
        weight.assign(weight + 0.3)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).standard_normal((5, 2))
    assert loaded.dtype == "float64"
    np.testing.assert_array_equal(loaded.log_prob(x), model.log_prob(x))


@pytest.mark.parametrize("family", sorted(flows.FLOWS))
def test_log_prob_takes_any_leading_shape_in_turn(family):
    # The compiled eager path relaxes to unknown rank after a second input rank;
    # coupling networks once failed there, and on a single event with no batch axis.
    model = FlowModel(
        [
            build_random(n, 2, seed=i)
            for i, n in enumerate(
                ["affine_coupling_half", family == "realnvp" and "permute" or family]
            )
        ],
        event_shape=(2,),
    )
    x = np.random.default_rng(0).standard_normal((2, 3, 2)).astype("float32")
    flat = model.log_prob(x.reshape(-1, 2)).numpy()
    np.testing.assert_allclose(model.log_prob(x), flat.reshape(2, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.log_prob(x[0, 0]), flat[0], rtol=1e-5, atol=1e-5)
    assert model.sample(2, seed=1).shape == (2, 2)
