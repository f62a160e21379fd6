import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import Radial
from tfp_flows.layers.base import FlowLayer


@keras.saving.register_keras_serializable(package="tfp_flows")
class RadialLayer(FlowLayer):
    """Owns z0, alpha, beta of a `tfp_flows.bijectors.Radial` flow.

    α = softplus(alpha_raw) keeps α positive; with alpha_raw = beta = 0 the
    flow starts as the identity (β̂ = softplus(0) − softplus(0) = 0).

    Arguments:
        center_stddev: standard deviation of the normal initial centre z0.
    """

    def __init__(self, center_stddev=1.0, **kwargs):
        super().__init__(**kwargs)
        self.center_stddev = center_stddev

    def build_weights(self, event_size):
        self.z0 = self.add_weight(
            shape=(event_size,),
            name="z0",
            initializer=keras.initializers.RandomNormal(stddev=self.center_stddev),
        )
        self.alpha_raw = self.add_weight(shape=(), initializer="zeros", name="alpha_raw")
        self.beta = self.add_weight(shape=(), initializer="zeros", name="beta")

    def make_bijector(self):
        alpha = tfp.util.DeferredTensor(self.alpha_raw.value, tf.math.softplus)
        return Radial(self.z0.value, alpha, self.beta.value, name=self.name)

    def get_config(self):
        return {**super().get_config(), "center_stddev": self.center_stddev}
