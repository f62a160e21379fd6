import keras
import numpy as np

from tfp_flows.bijectors import AffineCoupling
from tfp_flows.layers.base import FlowLayer


@keras.saving.register_keras_serializable(package="tfp_flows")
class ShiftAndLogScaleNetwork(keras.layers.Layer):
    """MLP x_a -> (shift, log_scale), each of `output_size` units.

    The last layer starts at zero, so a coupling using this network starts as
    the identity map.
    """

    def __init__(self, output_size, hidden_units=(64, 64), activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.output_size = output_size
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.hidden_layers = [
            keras.layers.Dense(
                units, activation=activation, dtype=self.dtype_policy, name=f"hidden_{i}"
            )
            for i, units in enumerate(self.hidden_units)
        ]
        self.output_layer = keras.layers.Dense(
            2 * output_size,
            kernel_initializer="zeros",
            dtype=self.dtype_policy,
            name="shift_and_log_scale",
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        self.output_layer.build(shape)

    def call(self, inputs):
        hidden = inputs
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        output = self.output_layer(hidden)
        shift, log_scale = keras.ops.split(output, 2, axis=-1)
        return shift, log_scale

    def get_config(self):
        return {
            **super().get_config(),
            "output_size": self.output_size,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class AffineCouplingLayer(FlowLayer):
    """Owns the network of a `tfp_flows.bijectors.AffineCoupling`.

    Arguments:
        mask: boolean list over the event; True marks the conditioning part.
        hidden_units: widths of the hidden Dense layers.
        activation: their activation.
        log_scale_clamp: soft bound on each log-scale (see `soft_clamp`).
    """

    def __init__(
        self, mask, hidden_units=(64, 64), activation="relu", log_scale_clamp=3.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, dtype=bool)
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.log_scale_clamp = log_scale_clamp

    def build_weights(self, event_size):
        if self.mask.shape != (event_size,):
            raise ValueError(
                f"{self.name}: mask has shape {self.mask.shape} but the event has "
                f"{event_size} dimensions."
            )
        self.network = ShiftAndLogScaleNetwork(
            int((~self.mask).sum()),
            self.hidden_units,
            self.activation,
            dtype=self.dtype_policy,
            name="network",
        )
        self.network.build((None, int(self.mask.sum())))

    def make_bijector(self):
        return AffineCoupling(
            self.network, self.mask, log_scale_clamp=self.log_scale_clamp, name=self.name
        )

    def get_config(self):
        return {
            **super().get_config(),
            "mask": self.mask.tolist(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "log_scale_clamp": self.log_scale_clamp,
        }
