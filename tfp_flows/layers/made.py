"""MADE, a Keras 3 autoregressive network, and the MAF / IAF flow layer built on it."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import MaskedAutoregressive
from tfp_flows.layers.base import FlowLayer
from tfp_flows.layers.coupling import Conditioner

tfb = tfp.bijectors


def made_masks(event_size, hidden_units, context_size=0):
    """MADE's connectivity: one boolean mask [fan_in, fan_out] per layer, the output's last.

    Degrees (Germain et al. 2015, with the hidden degrees cycled rather than
    drawn at random): input x_i (1-based) has degree i, and a context input
    degree 0; the units of each hidden layer cycle through 1, ..., D − 1, or
    with a context through 0, ..., D − 1 (units of degree 0 see the context
    only, so that the first output, which may see no input, still depends on
    the context); the outputs for x_i (a shift, then a log-scale: 2D outputs)
    have degree i. A hidden unit sees the units of the layer before of degree
    <= its own, an output the hidden units of degree strictly below its own.
    So output i depends on x_<i only, and every unit on the whole context.
    """
    if event_size < 2 and not context_size:
        raise ValueError(
            f"MADE needs an event of at least 2 dimensions, got {event_size}: with one, no "
            "input may reach an output (a conditional MADE takes one: the context does)."
        )
    degrees = np.concatenate([np.arange(1, event_size + 1), np.zeros(context_size, int)])
    masks = []
    for units in hidden_units:
        hidden = (
            np.arange(units) % event_size
            if context_size
            else np.arange(units) % (event_size - 1) + 1
        )
        masks.append(degrees[:, None] <= hidden[None, :])
        degrees = hidden
    outputs = np.tile(np.arange(1, event_size + 1), 2)
    masks.append(degrees[:, None] < outputs[None, :])
    return masks


class MaskedDense(keras.layers.Layer):
    """A dense layer whose kernel is multiplied by a fixed 0/1 mask in every call.

    Masking inside `call` (not through a kernel constraint, which a custom
    training loop may never apply) keeps the autoregressive structure under
    any optimiser. The layer owns its kernel and bias (`add_weight`).
    """

    def __init__(
        self,
        mask,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, dtype=bool)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=self.mask.shape, initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = self.add_weight(
            shape=self.mask.shape[1:], initializer=self.bias_initializer, name="bias"
        )

    def call(self, inputs):
        mask = tf.constant(self.mask, dtype=self.compute_dtype)
        # bias_add: its gradient is one op; a broadcasting + takes several shape ops.
        return self.activation(tf.nn.bias_add(tf.matmul(inputs, self.kernel * mask), self.bias))


@keras.saving.register_keras_serializable(package="tfp_flows")
class MADE(Conditioner):
    """Masked autoencoder for distribution estimation: x [..., D] -> (shift, log_scale).

    Each output is [..., D], and output i depends on x_<i only (see
    `made_masks`): an autoregressive network for `MaskedAutoregressive`. With
    `context_size` the network is conditional (see `Conditioner`): the context
    enters every unit of the first hidden layer unmasked, and some hidden
    units see the context only, so every output depends on it. The output
    layer starts at zero, so a flow step using this network starts as the
    identity; hidden biases start spread out.

    References:
        Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for
        Distribution Estimation", ICML 2015.

    Arguments:
        hidden_units: widths of the hidden masked layers; a width below D − 1
            (D with a context) leaves some degrees out: outputs then see fewer
            inputs.
        activation: their activation.
        context_size: makes the network conditional on a context of this size.
    """

    def __init__(self, hidden_units=(64, 64), activation="relu", context_size=None, **kwargs):
        super().__init__(context_size=context_size, **kwargs)
        self.hidden_units = tuple(hidden_units)
        self.activation = activation

    def build_network(self, input_size):
        masks = made_masks(input_size, self.hidden_units, self.context_size or 0)
        self.hidden_layers = []
        for i, mask in enumerate(masks[:-1]):
            layer = MaskedDense(
                mask,
                self.activation,
                bias_initializer=self.hidden_bias_initializer(mask.shape[0]),
                dtype=self.outer_dtype_policy if i == 0 else self.dtype_policy,
                name=f"hidden_{i}",
            )
            layer.build((None, mask.shape[0]))
            self.hidden_layers.append(layer)
        self.output_layer = MaskedDense(
            masks[-1],
            kernel_initializer="zeros",
            dtype=self.outer_dtype_policy,
            name="shift_and_log_scale",
        )
        self.output_layer.build((None, masks[-1].shape[0]))

    def _network(self, inputs):
        hidden = inputs
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        shift, log_scale = tf.split(self.output_layer(hidden), 2, axis=-1)
        return shift, log_scale

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class MaskedAutoregressiveLayer(FlowLayer):
    """Owns the MADE of a `MaskedAutoregressive` bijector: a MAF step, or with `inverse` an IAF.

    MAF (`inverse=False`): density in one pass, sampling in D passes; the
    usual choice for density estimation. IAF (`inverse=True`, the bijector is
    `tfb.Invert(MaskedAutoregressive(...))`): sampling in one pass, density in
    D passes; the usual choice for variational inference. Both are exact.
    Stack them with a `PermuteLayer` in between (see `tfp_flows.flows.maf`):
    each step is autoregressive in the event's own order.

    Arguments:
        hidden_units: widths of the MADE's hidden layers.
        activation: their activation.
        log_scale_clamp: soft bound on each log-scale (see `soft_clamp`).
        inverse: False for MAF, True for IAF.
        context_size: makes the step conditional on a context vector of this
            size, fed to the MADE next to x (see `FlowLayer`).
    """

    supports_context = True

    def __init__(
        self,
        hidden_units=(64, 64),
        activation="relu",
        log_scale_clamp=3.0,
        inverse=False,
        context_size=None,
        **kwargs,
    ):
        super().__init__(context_size=context_size, **kwargs)
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.log_scale_clamp = log_scale_clamp
        self.inverse = bool(inverse)

    def build_weights(self, event_size):
        self.network = MADE(
            self.hidden_units,
            self.activation,
            self.context_size,
            dtype=self.network_dtype_policy,
            name="network",
        )
        self.network.build((None, event_size))

    def make_bijector(self):
        if not self.inverse:
            return MaskedAutoregressive(
                self.network, log_scale_clamp=self.log_scale_clamp, name=self.name
            )
        # The Invert carries the layer's name: FlowModel routes the context by it.
        maf = MaskedAutoregressive(
            self.network, log_scale_clamp=self.log_scale_clamp, name=f"{self.name}_maf"
        )
        return tfb.Invert(maf, name=self.name)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "log_scale_clamp": self.log_scale_clamp,
            "inverse": self.inverse,
        }
