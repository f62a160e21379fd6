"""MADE, a Keras 3 autoregressive network, and the autoregressive flow layer built on it."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import MaskedAutoregressive
from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.layers.base import FlowLayer
from tfp_flows.layers.coupling import Conditioner

tfb = tfp.bijectors


def made_masks(event_size, hidden_units, context_size=0, output_elements=None):
    """MADE's connectivity: one boolean mask [fan_in, fan_out] per layer, the output's last.

    Degrees (Germain et al. 2015, with the hidden degrees cycled rather than
    drawn at random): input x_i (1-based) has degree i, and a context input
    degree 0; the units of each hidden layer cycle through 1, ..., D − 1, or
    with a context through 0, ..., D − 1 (units of degree 0 see the context
    only, so that the first output, which may see no input, still depends on
    the context); an output belonging to x_i has degree i. A hidden unit sees
    the units of the layer before of degree <= its own, an output the hidden
    units of degree strictly below its own. So the outputs of x_i depend on
    x_<i only, and every unit on the whole context.

    `output_elements` gives, for each output, the element (0-based) it
    belongs to; by default two per element, parameter-major (a shift for
    every element, then a log-scale for every element).
    """
    if event_size < 2 and not context_size:
        raise ValueError(
            f"MADE needs an event of at least 2 dimensions, got {event_size}: with one, no "
            "input may reach an output (a conditional MADE takes one: the context does)."
        )
    if output_elements is None:
        output_elements = np.tile(np.arange(event_size), 2)
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
    outputs = np.asarray(output_elements) + 1
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
    """Masked autoencoder for distribution estimation: x [..., D] -> raw parameters [..., D·P].

    The outputs of element i depend on x_<i only (see `made_masks`): an
    autoregressive network for `MaskedAutoregressive`. By default P = 2 and
    the outputs are (shift, log_scale), each [..., D], as TFP's MAF expects;
    with `parameters` and `layout` (a transformer's `num_parameters` and
    `layout`) they are one tensor of raw parameters in that layout. With
    `context_size` the network is conditional (see `Conditioner`): the
    context enters every unit of the first hidden layer unmasked, and some
    hidden units see the context only, so every output depends on it. The
    output layer starts at zero, so a flow step using this network starts as
    the identity; hidden biases start spread out.

    References:
        Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for
        Distribution Estimation", ICML 2015.

    Arguments:
        hidden_units: widths of the hidden masked layers; a width below D − 1
            (D with a context) leaves some degrees out: outputs then see fewer
            inputs.
        activation: their activation.
        context_size: makes the network conditional on a context of this size.
        parameters: raw parameters per element; None for the (shift,
            log_scale) pair.
        layout: "parameter_major" or "element_major" (see
            `tfp_flows.bijectors.transformers`).
    """

    def __init__(
        self,
        hidden_units=(64, 64),
        activation="relu",
        context_size=None,
        parameters=None,
        layout="parameter_major",
        **kwargs,
    ):
        super().__init__(context_size=context_size, **kwargs)
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.parameters = None if parameters is None else int(parameters)
        self.layout = layout

    def _output_elements(self, event_size):
        per_element = 2 if self.parameters is None else self.parameters
        elements = np.arange(event_size)
        if self.layout == "parameter_major":
            return np.tile(elements, per_element)
        return np.repeat(elements, per_element)

    def build_network(self, input_size):
        masks = made_masks(
            input_size,
            self.hidden_units,
            self.context_size or 0,
            self._output_elements(input_size),
        )
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
            name="output",
        )
        self.output_layer.build((None, masks[-1].shape[0]))

    def _network(self, inputs):
        hidden = inputs
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        outputs = self.output_layer(hidden)
        if self.parameters is None:
            shift, log_scale = tf.split(outputs, 2, axis=-1)
            return shift, log_scale
        return outputs

    def get_config(self):
        config = {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
        }
        if self.parameters is not None:
            config.update(parameters=self.parameters, layout=self.layout)
        return config


@keras.saving.register_keras_serializable(package="tfp_flows")
class MaskedAutoregressiveLayer(FlowLayer):
    """Owns the MADE of a `MaskedAutoregressive` bijector: an autoregressive step, or with
    `inverse` its inverse.

    With the affine transformer a MAF step (`inverse=False`: density in one
    pass, sampling in D passes; the usual choice for density estimation) or
    an IAF step (`inverse=True`, the bijector is
    `tfb.Invert(MaskedAutoregressive(...))`: sampling in one pass, density in
    D passes; the usual choice for variational inference); with the spline
    transformer an NSF-AR step. All are exact. Stack them with a
    `PermuteLayer` in between (see `tfp_flows.flows.maf`): each step is
    autoregressive in the event's own order.

    Arguments:
        hidden_units: widths of the MADE's hidden layers.
        activation: their activation.
        log_scale_clamp: soft bound on each log-scale of the affine transformer
            (3 unless the transformer says otherwise; None: no bound).
        inverse: False for MAF, True for IAF.
        context_size: makes the step conditional on a context vector of this
            size, fed to the MADE next to x (see `FlowLayer`).
        transformer: "affine" (MAF), "spline" (NSF-AR), any registered name or
            a `Transformer`; its options (`num_bins`, `bound`, ...) may be
            given as keyword arguments.
    """

    supports_context = True

    def __init__(
        self,
        hidden_units=(64, 64),
        activation="relu",
        log_scale_clamp=transformers_lib.DEFAULT,
        inverse=False,
        context_size=None,
        transformer="affine",
        **kwargs,
    ):
        options, kwargs = transformers_lib.split_options(transformer, kwargs)
        super().__init__(context_size=context_size, **kwargs)
        if log_scale_clamp is not transformers_lib.DEFAULT:  # the affine option, at its old place
            options["log_scale_clamp"] = log_scale_clamp
        self.transformer = transformers_lib.get(transformer, **options)
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.inverse = bool(inverse)

    @property
    def log_scale_clamp(self):
        return getattr(self.transformer, "log_scale_clamp", None)

    def build_weights(self, event_size):
        transformer = self.transformer
        fan_in = self.hidden_units[-1] if self.hidden_units else event_size
        scale = transformer.raw_scale(event_size, fan_in)
        self.network = MADE(
            self.hidden_units,
            self.activation,
            self.context_size,
            parameters=transformer.num_parameters,
            layout=transformer.layout,
            output_scale=None if scale is None else scale.tolist(),
            dtype=self.network_dtype_policy,
            name="network",
        )
        self.network.build((None, event_size))

    def make_bijector(self):
        if not self.inverse:
            return MaskedAutoregressive(self.network, self.transformer, name=self.name)
        # The Invert carries the layer's name: FlowModel routes the context by it.
        maf = MaskedAutoregressive(self.network, self.transformer, name=f"{self.name}_maf")
        return tfb.Invert(maf, name=self.name)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "inverse": self.inverse,
            "transformer": self.transformer.get_config(),
        }
