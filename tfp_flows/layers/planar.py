import keras

from tfp_flows.bijectors import Planar
from tfp_flows.layers.base import FlowLayer


@keras.saving.register_keras_serializable(package="tfp_flows")
class PlanarLayer(FlowLayer):
    """Owns u, w, b of a `tfp_flows.bijectors.Planar` flow.

    Arguments:
        initializer_stddev: standard deviation of the normal initial u and w
            (b starts at 0); small values start near the identity.
    """

    def __init__(self, initializer_stddev=0.1, **kwargs):
        super().__init__(**kwargs)
        self.initializer_stddev = initializer_stddev

    def build_weights(self, event_size):
        init = keras.initializers.RandomNormal(stddev=self.initializer_stddev)
        self.u = self.add_weight(shape=(event_size,), initializer=init, name="u")
        self.w = self.add_weight(shape=(event_size,), initializer=init, name="w")
        self.b = self.add_weight(shape=(), initializer="zeros", name="b")

    def make_bijector(self):
        return Planar(self.u.value, self.w.value, self.b.value, name=self.name)

    def get_config(self):
        return {**super().get_config(), "initializer_stddev": self.initializer_stddev}
