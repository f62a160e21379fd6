"""Mixed precision: the networks compute in 16 bits, values, log-dets and the loss in float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import datasets, flows

POLICIES = ["mixed_bfloat16", "mixed_float16"]


@pytest.fixture(scope="module")
def moons():
    return datasets.load("moons", num_train=4000, num_test=1000, seed=0)


@pytest.fixture(scope="module")
def trained(moons):
    """float32 flows trained briefly, one per family."""
    models = {}
    for family in ("realnvp", "nsf", "maf"):
        keras.utils.set_random_seed(0)
        model = flows.FLOWS[family](2, hidden_units=(32, 32), standardize=moons.train)
        model.compile(keras.optimizers.Adam(3e-3), steps_per_execution=8)
        model.fit(moons.train, batch_size=256, epochs=6, verbose=0)
        models[family] = model
    return models


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("family", ["realnvp", "nsf", "maf"])
def test_same_weights_give_the_same_nll_within_a_hundredth_of_a_nat(trained, moons, family, policy):
    reference = trained[family]
    mixed = flows.FLOWS[family](2, hidden_units=(32, 32), standardize=moons.train, dtype=policy)
    mixed.set_weights(reference.get_weights())
    log_p = mixed.log_prob(moons.test)
    assert log_p.dtype == tf.float32
    exact = reference.log_prob(moons.test).numpy()
    assert abs(float(np.mean(log_p)) - float(np.mean(exact))) < 0.01
    # 16-bit network outputs move single points more, never to a non-finite value.
    assert np.all(np.isfinite(log_p))


@pytest.mark.parametrize("policy", POLICIES)
def test_networks_compute_in_16_bits_between_float32_ends(policy):
    model = flows.realnvp(2, num_layers=2, hidden_units=(8, 8), dtype=policy)
    coupling = model.flow_layers[0]
    network = coupling.network
    compute = policy.split("_")[1]
    assert model.dtype_policy.name == "float32" and coupling.dtype_policy.name == "float32"
    assert network.dtype_policy.name == policy
    # The first layer reads the flow's values and the last writes the step's
    # parameters in float32; the layers in between compute in 16 bits.
    first, second = network.hidden_layers
    assert first.compute_dtype == "float32" and network.output_layer.compute_dtype == "float32"
    assert second.compute_dtype == compute
    x = tf.constant([[0.5]])
    assert second(first(x)).dtype == compute
    shift, log_scale = tf.split(network(x), 2, axis=-1)  # the affine raw parameters
    assert shift.dtype == tf.float32 and log_scale.dtype == tf.float32
    assert all(w.dtype == "float32" for w in model.weights)


@pytest.mark.parametrize("policy", POLICIES)
def test_fit_trains_and_the_policy_survives_saving(moons, policy, tmp_path):
    keras.utils.set_random_seed(1)
    model = flows.realnvp(
        2, num_layers=4, hidden_units=(32, 32), standardize=moons.train, dtype=policy
    )
    model.compile(keras.optimizers.Adam(3e-3), steps_per_execution=8)
    before = -float(np.mean(model.log_prob(moons.test)))
    history = model.fit(moons.train, batch_size=256, epochs=4, verbose=0)
    after = -float(np.mean(model.log_prob(moons.test)))
    assert np.all(np.isfinite(history.history["loss"])) and after < before - 0.3
    # float16 gradients underflow without loss scaling: Keras' rule holds here too.
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.flow_layers[0].network.dtype_policy.name == policy
    np.testing.assert_allclose(loaded.log_prob(moons.test), model.log_prob(moons.test), atol=1e-5)


def test_glow_trains_with_bfloat16_convolutions():
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(0, 17, size=(64, 8, 8, 1)).astype("float32")
    model = flows.glow(
        (8, 8, 1), levels=1, steps_per_level=2, hidden_channels=8, value_range=17.0,
        dtype="mixed_bfloat16",
    )  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(images, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.bits_per_dim(images).dtype == tf.float32


def test_keras_global_policy_is_followed():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = flows.maf(3, num_layers=2, hidden_units=(8, 8))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    made = model.flow_layers[0].network
    assert made.dtype_policy.name == "mixed_bfloat16"
    assert made.hidden_layers[1].compute_dtype == "bfloat16"
    assert model.dtype_policy.name == "float32"
    assert model.log_prob(np.zeros((4, 3), np.float32)).dtype == tf.float32
