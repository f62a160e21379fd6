"""A tfp_flows flow in TFP's own training and VI entry points, and TFP's shape conventions.

The registry's generic tests (test_registry.py) check every step for what TFP's code expects
of a bijector; here whole flows go through `tfp.math.minimize` and
`tfp.vi.fit_surrogate_posterior`, as a TFP user would call them.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_flows import flows
from tfp_flows.bijectors import Squeeze

STEPS, LEARNING_RATE = 25, 1e-2


def _data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((256, 2)) * [0.5, 2.0] + [1.0, -1.0]).astype("float32")


def _flow(seed=0):
    keras.utils.set_random_seed(seed)
    return flows.realnvp(2, num_layers=2, hidden_units=(16,))


def test_tfp_minimize_trains_every_weight_as_fit_does():
    x = _data()
    minimized = _flow()
    dist = minimized.distribution
    start = [w.numpy().copy() for w in minimized.trainable_weights]
    assert len(dist.trainable_variables) == len(minimized.trainable_weights)
    losses = tfp.math.minimize(
        lambda: -tf.reduce_mean(dist.log_prob(x)),
        num_steps=STEPS,
        optimizer=tf_keras.optimizers.Adam(LEARNING_RATE),
        trainable_variables=dist.trainable_variables,
    ).numpy()
    for weight, old in zip(minimized.trainable_weights, start):
        assert not np.allclose(weight.numpy(), old), weight.path

    fitted = _flow()  # the same start, the same full-batch Adam steps through Keras' fit
    fitted.compile(keras.optimizers.Adam(LEARNING_RATE))
    fitted.fit(x, batch_size=len(x), epochs=STEPS, shuffle=False, verbose=0)
    minimized_nll = -float(np.mean(minimized.log_prob(x)))
    fitted_nll = -float(np.mean(fitted.log_prob(x)))
    assert losses[-1] < losses[0] - 0.2
    assert minimized_nll == pytest.approx(fitted_nll, abs=0.02)


def test_fit_surrogate_posterior_trains_a_tfp_flows_flow():
    target = tfp.distributions.MultivariateNormalDiag([1.0, -2.0], [0.5, 1.5])
    flow = _flow(seed=1)
    start = [w.numpy().copy() for w in flow.trainable_weights]
    losses = tfp.vi.fit_surrogate_posterior(
        target.log_prob,
        surrogate_posterior=flow.distribution,
        optimizer=tf_keras.optimizers.Adam(LEARNING_RATE),
        num_steps=60,
        sample_size=64,
        seed=(1, 2),
    ).numpy()
    for weight, old in zip(flow.trainable_weights, start):
        assert not np.allclose(weight.numpy(), old), weight.path
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5


def test_squeeze_shapes_follow_tfp_reshape():
    squeeze = Squeeze()
    assert squeeze.forward_event_shape([4, 6, 1]) == [2, 3, 4]
    assert squeeze.forward_event_shape([None, 6, 1]).as_list() == [None, 3, 4]
    assert squeeze.forward_event_shape(tf.TensorShape(None)).rank is None
    assert squeeze.inverse_event_shape([2, None, 8]).as_list() == [4, None, 2]
    with pytest.raises(ValueError, match="both must be even.*3×3"):
        squeeze.forward_event_shape([3, 3, 1])
    with pytest.raises(ValueError, match="multiple of 4; got 6"):
        squeeze.inverse_event_shape([2, 2, 6])
