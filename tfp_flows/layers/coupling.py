import math

import keras
import numpy as np
import tensorflow as tf

from tfp_flows.bijectors import AffineCoupling
from tfp_flows.layers.base import FlowLayer
from tfp_flows.validation import check_context_size


@keras.saving.register_keras_serializable(package="tfp_flows")
class ShiftAndLogScaleNetwork(keras.layers.Layer):
    """MLP x_a -> (shift, log_scale), each of `output_size` units.

    With `context_size`, the network is conditional: `network(x_a, context=c)`
    feeds [x_a, c] to the MLP, the context c of shape [..., context_size]
    broadcast against the batch shape of x_a (one context vector for a whole
    batch, or one per example).

    The last layer starts at zero, so a coupling using this network starts as
    the identity map. Hidden biases start uniform in ±1/√fan_in (as PyTorch's
    `Linear` does) rather than at zero: with zero biases every ReLU of the
    first layer bends at x_a = 0, and a coupling conditioned on one coordinate
    starts as a two-piece linear function that takes hundreds of steps to
    grow more pieces.
    """

    def __init__(
        self, output_size, hidden_units=(64, 64), activation="relu", context_size=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.output_size = output_size
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.context_size = check_context_size(context_size)

    def build(self, input_shape):
        width = int(input_shape[-1]) + (self.context_size or 0)
        self.hidden_layers = []
        for i, units in enumerate(self.hidden_units):
            bound = 1.0 / math.sqrt(width)
            layer = keras.layers.Dense(
                units,
                activation=self.activation,
                bias_initializer=keras.initializers.RandomUniform(-bound, bound),
                dtype=self.dtype_policy,
                name=f"hidden_{i}",
            )
            layer.build((None, width))
            self.hidden_layers.append(layer)
            width = units
        self.output_layer = keras.layers.Dense(
            2 * self.output_size,
            kernel_initializer="zeros",
            dtype=self.dtype_policy,
            name="shift_and_log_scale",
        )
        self.output_layer.build((None, width))

    def call(self, inputs, context=None):
        inputs = self._with_context(inputs, context)
        if inputs.shape.rank == 2:
            return self._mlp(inputs)
        # Dense layers want [batch, features]: fold any other leading shape (none,
        # several, or unknown, as in a tf.function traced with reduce_retracing)
        # into one batch axis and unfold it afterwards.
        flat = tf.reshape(inputs, [-1, self.hidden_layers[0].kernel.shape[0]])
        shape = tf.concat([tf.shape(inputs)[:-1], [self.output_size]], axis=0)
        return tuple(tf.reshape(part, shape) for part in self._mlp(flat))

    def _with_context(self, inputs, context):
        if self.context_size is None:
            if context is not None:
                raise ValueError(f"{self.name} is not conditional but was given a context.")
            return inputs
        if context is None:
            raise ValueError(
                f"{self.name} is conditional on a context of size {self.context_size}, "
                "but none was given."
            )
        context = tf.cast(context, inputs.dtype)
        batch_shape = tf.broadcast_dynamic_shape(tf.shape(inputs)[:-1], tf.shape(context)[:-1])
        return tf.concat(
            [
                tf.broadcast_to(inputs, tf.concat([batch_shape, tf.shape(inputs)[-1:]], 0)),
                tf.broadcast_to(context, tf.concat([batch_shape, [self.context_size]], 0)),
            ],
            axis=-1,
        )

    def _mlp(self, inputs):
        hidden = inputs
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        shift, log_scale = keras.ops.split(self.output_layer(hidden), 2, axis=-1)
        return shift, log_scale

    def get_config(self):
        return {
            **super().get_config(),
            "output_size": self.output_size,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "context_size": self.context_size,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class AffineCouplingLayer(FlowLayer):
    """Owns the network of a `tfp_flows.bijectors.AffineCoupling`.

    Arguments:
        mask: boolean list over the event; True marks the conditioning part.
        hidden_units: widths of the hidden Dense layers.
        activation: their activation.
        log_scale_clamp: soft bound on each log-scale (see `soft_clamp`).
        context_size: makes the coupling conditional on a context vector of
            this size, fed to the network next to x_a (see `FlowLayer`).
    """

    supports_context = True

    def __init__(
        self,
        mask,
        hidden_units=(64, 64),
        activation="relu",
        log_scale_clamp=3.0,
        context_size=None,
        **kwargs,
    ):
        super().__init__(context_size=context_size, **kwargs)
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
            self.context_size,
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
