"""Coupling layers and the networks that compute flow parameters.

`Conditioner` is the base of every such network (context and batch-shape
handling); `MLP` is the plain one, `ShiftAndLogScaleNetwork` its affine-coupling
form, and `tfp_flows.layers.made.MADE` the masked autoregressive one.
`CouplingLayer` is the base of `AffineCouplingLayer` and
`tfp_flows.layers.spline.SplineCouplingLayer`: a mask and an MLP on x_a.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfp_flows.bijectors import AffineCoupling
from tfp_flows.layers.base import FlowLayer, NetworkWithFloat32Ends
from tfp_flows.validation import check_context_size


@tf.custom_gradient
def bounded_inputs(inputs):
    """The inputs clipped to ±√(max float)·1e-4 (±1.8e15 in float32), with an identity gradient.

    A network fed points far beyond any data (|x| ~ 1e30, or an ±Inf that an
    earlier step overflowed to) would compute Inf − Inf = NaN, and a flow's
    density there would come out NaN instead of a vanishing number. Clipped,
    it stays finite; its outputs only feed a step's parameters (the values
    themselves pass through unclipped). No data comes near the bound, so the
    gradient is the identity, which costs one op where clipping's own
    gradient costs a dozen.
    """
    bound = math.sqrt(inputs.dtype.max) * 1e-4
    return tf.clip_by_value(inputs, -bound, bound), lambda upstream: upstream


class Conditioner(NetworkWithFloat32Ends, keras.layers.Layer):
    """Base class of the networks that compute a flow step's parameters.

    `network(inputs, context=None)` takes inputs of shape [..., n_in] with any
    leading shape (none, several, or unknown, as in a tf.function traced with
    `reduce_retracing`) and returns a tensor, or a tuple of tensors, of shape
    [..., k]. With `context_size`, the network is conditional:
    `network(inputs, context=c)` feeds [inputs, c] to the network, the context
    c of shape [..., context_size] broadcast against the batch shape of the
    inputs (one context vector for a whole batch, or one per example).

    Subclasses create their weights in `build_network(input_size)` and
    implement `_network(inputs)` for inputs of shape [batch, n_in + context_size].
    Under a mixed policy they give their first and last layers
    `outer_dtype_policy` (see `NetworkWithFloat32Ends`).
    """

    def __init__(self, context_size=None, **kwargs):
        super().__init__(**kwargs)
        self.context_size = check_context_size(context_size)

    def build(self, input_shape):
        input_size = int(input_shape[-1])
        self.input_width = input_size + (self.context_size or 0)
        self.build_network(input_size)

    def build_network(self, input_size):
        raise NotImplementedError

    def _network(self, inputs):
        raise NotImplementedError

    @staticmethod
    def hidden_bias_initializer(fan_in):
        """Hidden biases start uniform in ±1/√fan_in (as PyTorch's `Linear` does), not at zero.

        With zero biases every ReLU of the first layer bends at x = 0, and a
        coupling conditioned on one coordinate starts as a two-piece linear
        function that takes hundreds of steps to grow more pieces.
        """
        bound = 1.0 / math.sqrt(fan_in)
        return keras.initializers.RandomUniform(-bound, bound)

    def call(self, inputs, context=None):
        inputs = bounded_inputs(self._with_context(inputs, context))
        if inputs.shape.rank == 2:
            return self._to_variable_dtype(self._network(inputs))
        # Dense layers want [batch, features]: fold any other leading shape into
        # one batch axis and unfold it afterwards.
        outputs = self._network(tf.reshape(inputs, [-1, self.input_width]))
        leading = tf.shape(inputs)[:-1]
        return self._to_variable_dtype(
            tf.nest.map_structure(
                lambda part: tf.reshape(part, tf.concat([leading, [part.shape[-1]]], axis=0)),
                outputs,
            )
        )

    def _to_variable_dtype(self, outputs):
        """Under a mixed policy the network computes in 16 bits; the flow step gets float32."""
        dtype = self.dtype_policy.variable_dtype
        return tf.nest.map_structure(lambda part: tf.cast(part, dtype), outputs)

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

    def get_config(self):
        return {**super().get_config(), "context_size": self.context_size}


@keras.saving.register_keras_serializable(package="tfp_flows")
class MLP(Conditioner):
    """MLP x [..., n_in] -> [..., output_size], optionally conditional (see `Conditioner`).

    The last layer starts at zero, so a flow step whose parameters are zero at
    a zero output (a coupling's shift and log-scale, a spline's raw
    parameters) starts as the identity map. Hidden biases start spread out
    (see `Conditioner.hidden_bias_initializer`).
    """

    output_layer_name = "output"

    def __init__(
        self, output_size, hidden_units=(64, 64), activation="relu", context_size=None, **kwargs
    ):
        super().__init__(context_size=context_size, **kwargs)
        self.output_size = output_size
        self.hidden_units = tuple(hidden_units)
        self.activation = activation

    def _output_units(self):
        return self.output_size

    def build_network(self, input_size):
        width = self.input_width
        self.hidden_layers = []
        for i, units in enumerate(self.hidden_units):
            layer = keras.layers.Dense(
                units,
                activation=self.activation,
                bias_initializer=self.hidden_bias_initializer(width),
                dtype=self.outer_dtype_policy if i == 0 else self.dtype_policy,
                name=f"hidden_{i}",
            )
            layer.build((None, width))
            self.hidden_layers.append(layer)
            width = units
        self.output_layer = keras.layers.Dense(
            self._output_units(),
            kernel_initializer="zeros",
            dtype=self.outer_dtype_policy,
            name=self.output_layer_name,
        )
        self.output_layer.build((None, width))

    def _network(self, inputs):
        hidden = inputs
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        return self.output_layer(hidden)

    def get_config(self):
        return {
            **super().get_config(),
            "output_size": self.output_size,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class ShiftAndLogScaleNetwork(MLP):
    """MLP x_a -> (shift, log_scale), each of `output_size` units.

    An `MLP` with 2·output_size outputs split in two; like it, optionally
    conditional on a context. The last layer starts at zero, so a coupling
    using this network starts as the identity map.
    """

    output_layer_name = "shift_and_log_scale"

    def _output_units(self):
        return 2 * self.output_size

    def _network(self, inputs):
        shift, log_scale = keras.ops.split(super()._network(inputs), 2, axis=-1)
        return shift, log_scale


class CouplingLayer(FlowLayer):
    """Base class of the coupling layers: a mask and an MLP conditioned on x_a.

    Subclasses implement `make_network(num_conditioning, num_transformed)`,
    returning the unbuilt network, and `make_bijector()`.

    Arguments:
        mask: boolean list over the event; True marks the conditioning part.
        hidden_units: widths of the hidden Dense layers.
        activation: their activation.
        context_size: makes the coupling conditional on a context vector of
            this size, fed to the network next to x_a (see `FlowLayer`).
    """

    supports_context = True

    def __init__(self, mask, hidden_units=(64, 64), activation="relu", context_size=None, **kwargs):
        super().__init__(context_size=context_size, **kwargs)
        self.mask = np.asarray(mask, dtype=bool)
        self.hidden_units = tuple(hidden_units)
        self.activation = activation

    def build_weights(self, event_size):
        if self.mask.shape != (event_size,):
            raise ValueError(
                f"{self.name}: mask has shape {self.mask.shape} but the event has "
                f"{event_size} dimensions."
            )
        num_conditioning = int(self.mask.sum())
        self.network = self.make_network(num_conditioning, event_size - num_conditioning)
        self.network.build((None, num_conditioning))

    def make_network(self, num_conditioning, num_transformed):
        raise NotImplementedError

    def get_config(self):
        return {
            **super().get_config(),
            "mask": self.mask.tolist(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class AffineCouplingLayer(CouplingLayer):
    """Owns the network of a `tfp_flows.bijectors.AffineCoupling`.

    Arguments:
        mask: boolean list over the event; True marks the conditioning part.
        hidden_units: widths of the hidden Dense layers.
        activation: their activation.
        log_scale_clamp: soft bound on each log-scale (see `soft_clamp`).
        context_size: makes the coupling conditional on a context vector of
            this size, fed to the network next to x_a (see `FlowLayer`).
    """

    def __init__(
        self,
        mask,
        hidden_units=(64, 64),
        activation="relu",
        log_scale_clamp=3.0,
        context_size=None,
        **kwargs,
    ):
        super().__init__(mask, hidden_units, activation, context_size=context_size, **kwargs)
        self.log_scale_clamp = log_scale_clamp

    def make_network(self, num_conditioning, num_transformed):
        return ShiftAndLogScaleNetwork(
            num_transformed,
            self.hidden_units,
            self.activation,
            self.context_size,
            dtype=self.network_dtype_policy,
            name="network",
        )

    def make_bijector(self):
        return AffineCoupling(
            self.network, self.mask, log_scale_clamp=self.log_scale_clamp, name=self.name
        )

    def get_config(self):
        return {**super().get_config(), "log_scale_clamp": self.log_scale_clamp}
