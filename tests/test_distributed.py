"""fit under tf.distribute.MirroredStrategy, on two logical CPU devices."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    from tfp_flows import datasets, flows

    family = sys.argv[1]
    if family == "glow":
        # ActNorm initialises from the first batch; 129 images in batches of 64 leave
        # one replica an empty share of the last batch, as below.
        data = datasets.load("digits", seed=0)
        x = data.images(data.train)[:129]
        make = lambda: flows.glow(data.image_shape, steps_per_level=1, hidden_channels=8,
                                  value_range=17.0)
        batch_size = 64
    else:
        # 1025 points in batches of 256: the last batch has one point, so one
        # replica's share of it is empty.
        x = datasets.load("moons", num_train=1025, num_test=256, seed=0).train
        make = lambda: getattr(flows, family)(2, num_layers=2)
        batch_size = 256

    def train(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = make()
            model.compile(keras.optimizers.SGD(0.05 if family != "glow" else 0.01))
        initial = [w.numpy() for w in model.trainable_weights]
        history = model.fit(x, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
        weights = [w.numpy() for w in model.trainable_weights]
        moved = max(np.abs(a - b).max() for a, b in zip(weights, initial))
        return weights, history.history["loss"], moved

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    single_weights, single_loss, moved = train(tf.distribute.get_strategy())
    mirrored_weights, mirrored_loss, _ = train(mirrored)
    diff = max(np.abs(a - b).max() for a, b in zip(single_weights, mirrored_weights))
    assert np.isfinite(mirrored_loss).all(), mirrored_loss
    print(f"moved={moved:.3g} weight_diff={diff:.3g} "
          f"loss_diff={abs(single_loss[-1] - mirrored_loss[-1]):.3g}")
""")


@pytest.mark.parametrize("family", ["realnvp", "maf", "nsf", "glow"])
def test_mirrored_training_matches_one_device(family):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, family], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = dict(item.split("=") for item in result.stdout.split())
    assert float(figures["moved"]) > 1e-2  # training did something
    assert float(figures["weight_diff"]) < 1e-5  # and the same thing on two replicas
    assert float(figures["loss_diff"]) < 1e-5
