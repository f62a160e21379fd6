"""The coupling layer and the networks that compute flow parameters.

`Conditioner` is the base of every such network (context and batch-shape
handling); `MLP` is the plain one (and `ShiftAndLogScaleNetwork` its
(shift, log_scale) form), `ResNet` the convolutional one for images, and
`tfp_flows.layers.made.MADE` the masked autoregressive one. `CouplingLayer`
owns the network of a `tfp_flows.bijectors.Coupling`: a mask, a network and
a transformer. `AffineCouplingLayer`, `SplineCouplingLayer` and
`ImageCouplingLayer` are `CouplingLayer` with the transformer (or mask kind)
fixed, under the names earlier versions used.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfp_flows import context as context_lib
from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.bijectors.coupling import Coupling, channel_mask, checkerboard_mask
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


def hidden_bias_initializer(fan_in):
    """Hidden biases start uniform in ±1/√fan_in (as PyTorch's `Linear` does), not at zero.

    With zero biases every ReLU of the first layer bends at x = 0, and a
    coupling conditioned on one coordinate starts as a two-piece linear
    function that takes hundreds of steps to grow more pieces.
    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


class Conditioner(NetworkWithFloat32Ends, keras.layers.Layer):
    """Base class of the networks that compute a flow step's parameters.

    `network(inputs, context=None)` takes inputs of shape [..., n_in] with any
    leading shape (none, several, or unknown, as in a tf.function traced with
    `reduce_retracing`) and returns a tensor, or a tuple of tensors, of shape
    [..., k]. With `context_size`, the network is conditional:
    `network(inputs, context=c)` feeds [inputs, c] to the network, the context
    c of shape [..., context_size] broadcast against the batch shape of the
    inputs (`tfp_flows.context.broadcast`: one context vector for a whole
    batch, or one per example).

    `output_scale` (optional, a list of k numbers) multiplies the outputs: the
    raw-parameter scaling a transformer may ask for (the spline's).

    Subclasses create their weights in `build_network(input_size)` and
    implement `_network(inputs)` for inputs of shape [batch, n_in + context_size].
    Under a mixed policy they give their first and last layers
    `outer_dtype_policy` (see `NetworkWithFloat32Ends`).
    """

    hidden_bias_initializer = staticmethod(hidden_bias_initializer)

    def __init__(self, context_size=None, output_scale=None, **kwargs):
        super().__init__(**kwargs)
        self.context_size = check_context_size(context_size)
        self.output_scale = None if output_scale is None else [float(s) for s in output_scale]

    def build(self, input_shape):
        input_size = int(input_shape[-1])
        self.input_width = input_size + (self.context_size or 0)
        self.build_network(input_size)

    def build_network(self, input_size):
        raise NotImplementedError

    def _network(self, inputs):
        raise NotImplementedError

    def call(self, inputs, context=None):
        inputs = bounded_inputs(self._with_context(inputs, context))
        if inputs.shape.rank == 2:
            return self._finish(self._network(inputs))
        # Dense layers want [batch, features]: fold any other leading shape into
        # one batch axis and unfold it afterwards.
        outputs = self._network(tf.reshape(inputs, [-1, self.input_width]))
        leading = tf.shape(inputs)[:-1]
        return self._finish(
            tf.nest.map_structure(
                lambda part: tf.reshape(part, tf.concat([leading, [part.shape[-1]]], axis=0)),
                outputs,
            )
        )

    def _finish(self, outputs):
        """Outputs in the variable dtype (a mixed policy computes in 16 bits), scaled."""
        dtype = self.dtype_policy.variable_dtype
        outputs = tf.nest.map_structure(lambda part: tf.cast(part, dtype), outputs)
        if self.output_scale is not None:
            outputs = outputs * tf.constant(self.output_scale, dtype)
        return outputs

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
        inputs, context = context_lib.broadcast(inputs, context, event_ndims=1)
        return tf.concat([inputs, context], axis=-1)

    def get_config(self):
        config = {**super().get_config(), "context_size": self.context_size}
        if self.output_scale is not None:
            config["output_scale"] = self.output_scale
        return config


@keras.saving.register_keras_serializable(package="tfp_flows")
class MLP(Conditioner):
    """MLP x [..., n_in] -> [..., output_size], optionally conditional (see `Conditioner`).

    The last layer starts at zero, so a flow step whose parameters are zero at
    a zero output (a coupling's shift and log-scale, a spline's raw
    parameters) starts as the identity map. Hidden biases start spread out
    (see `hidden_bias_initializer`).
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
                bias_initializer=hidden_bias_initializer(width),
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


@keras.saving.register_keras_serializable(package="tfp_flows")
class ResNet(NetworkWithFloat32Ends, keras.layers.Layer):
    """A small ResNet: images [..., H, W, C_in] → [..., H, W, output_channels].

    3×3 convolution, `num_blocks` residual blocks (two 3×3 convolutions with
    a skip), then a 3×3 convolution initialised at zero, so the coupling
    starts as the identity. With `context_size`, the context vector is
    broadcast over the pixels and concatenated as extra input channels.
    `output_scale` multiplies the outputs per channel (see `Conditioner`).
    """

    def __init__(
        self,
        output_channels,
        hidden_channels=64,
        num_blocks=1,
        context_size=None,
        output_scale=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_channels = int(output_channels)
        self.hidden_channels = int(hidden_channels)
        self.num_blocks = int(num_blocks)
        self.context_size = context_size
        self.output_scale = None if output_scale is None else [float(s) for s in output_scale]

    def _conv(self, channels, name, zero=False, outer=False):
        # Under a mixed policy the input and output convolutions stay in the variable
        # dtype and the residual blocks compute in 16 bits (`NetworkWithFloat32Ends`).
        return keras.layers.Conv2D(
            channels,
            3,
            padding="same",
            kernel_initializer="zeros" if zero else "glorot_uniform",
            dtype=self.outer_dtype_policy if outer else self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        height, width, channels = input_shape[-3:]
        channels += self.context_size or 0
        self.input_conv = self._conv(self.hidden_channels, "input", outer=True)
        self.input_conv.build((None, height, width, channels))
        self.blocks = []
        for i in range(self.num_blocks):
            pair = [self._conv(self.hidden_channels, f"block_{i}_{j}") for j in range(2)]
            for conv in pair:
                conv.build((None, height, width, self.hidden_channels))
            self.blocks.append(pair)
        self.output_conv = self._conv(self.output_channels, "output", zero=True, outer=True)
        self.output_conv.build((None, height, width, self.hidden_channels))

    def call(self, inputs, context=None):
        if (context is None) != (self.context_size is None):
            raise ValueError(
                f"{self.name} takes a context of size {self.context_size}, got "
                f"{'none' if context is None else 'one'}."
            )
        if context is not None:
            inputs, context = context_lib.broadcast(inputs, context, event_ndims=3)
            pixels = tf.concat([tf.shape(inputs)[:-1], [self.context_size]], axis=0)
            inputs = tf.concat([inputs, tf.broadcast_to(context[..., None, None, :], pixels)], -1)
        batch_shape, event = tf.shape(inputs)[:-3], tf.shape(inputs)[-3:]
        # Conv2D wants [N, H, W, C]: fold the leading shape into N, unfold afterwards.
        flat = bounded_inputs(tf.reshape(inputs, tf.concat([[-1], event], 0)))
        # An empty batch (a replica's share of a short last batch under tf.distribute)
        # skips the convolutions: their gradient kernels fail on it there ("Missing
        # 1-th output from Conv2DBackpropFilter").
        out = tf.cond(
            tf.size(flat) > 0,
            lambda: self._resnet(flat),
            lambda: tf.zeros(
                tf.concat([tf.shape(flat)[:-1], [self.output_channels]], 0),
                self.dtype_policy.variable_dtype,
            ),
        )
        out = tf.reshape(out, tf.concat([batch_shape, event[:2], [self.output_channels]], 0))
        if self.output_scale is not None:
            out = out * tf.constant(self.output_scale, out.dtype)
        return out

    def _resnet(self, images):
        hidden = tf.cast(tf.nn.relu(self.input_conv(images)), self.compute_dtype)
        for first, second in self.blocks:
            hidden = tf.nn.relu(hidden + second(tf.nn.relu(first(hidden))))
        return self.output_conv(hidden)

    def get_config(self):
        config = {
            **super().get_config(),
            "output_channels": self.output_channels,
            "hidden_channels": self.hidden_channels,
            "num_blocks": self.num_blocks,
            "context_size": self.context_size,
        }
        if self.output_scale is not None:
            config["output_scale"] = self.output_scale
        return config


IMAGE_MASKS = ("checkerboard", "channel")
_VECTOR_NETWORK = {"hidden_units": (64, 64), "activation": "relu"}
_IMAGE_NETWORK = {"hidden_channels": 64, "num_blocks": 1}


@keras.saving.register_keras_serializable(package="tfp_flows")
class CouplingLayer(FlowLayer):
    """Owns the network of a `tfp_flows.bijectors.Coupling`: mask × network × transformer.

    Vector events: `mask` is a boolean list over the event ([D]; see
    `half_mask`, `parity_mask`) and the network an `MLP` of x_a
    (`hidden_units`, `activation`). Images: `mask` is "checkerboard" or
    "channel" (`parity` picks the complementary one: odd squares, second
    half of the channels) or a boolean [H, W, C] array, and the network a
    `ResNet` of the masked image (`hidden_channels`, `num_blocks`). Either
    network's last layer starts at zero, so the coupling starts as the
    identity.

    Arguments:
        mask: see above; True marks the conditioning part.
        transformer: "affine" (RealNVP, Glow), "spline" (NSF), any registered
            name or a `Transformer`; its options (`log_scale_clamp`,
            `num_bins`, `bound`, ...) may be given as keyword arguments.
        hidden_units, activation: the MLP of a vector coupling.
        hidden_channels, num_blocks: the ResNet of an image coupling.
        parity: for the image masks by name.
        context_size: makes the coupling conditional on a context vector of
            this size, fed to the network next to its inputs (see `FlowLayer`).

    Example:
        >>> from tfp_flows import FlowModel
        >>> from tfp_flows.bijectors import half_mask
        >>> layer = CouplingLayer(half_mask(4), "spline", num_bins=4, hidden_units=(16,))
        >>> FlowModel([layer], event_shape=(4,)).log_prob([[0.1, 0.2, 0.3, 0.4]]).shape
        TensorShape([1])
    """

    supports_context = True

    def __init__(
        self,
        mask,
        transformer="affine",
        hidden_units=None,
        activation=None,
        hidden_channels=None,
        num_blocks=None,
        parity=False,
        context_size=None,
        **kwargs,
    ):
        options, kwargs = transformers_lib.split_options(transformer, kwargs)
        super().__init__(context_size=context_size, **kwargs)
        self.transformer = transformers_lib.get(transformer, **options)
        self.parity = bool(parity)
        if isinstance(mask, str):
            if mask not in IMAGE_MASKS:
                raise ValueError(
                    f"mask must be one of {IMAGE_MASKS} or a boolean array, got {mask!r}."
                )
            self.mask = mask
        else:
            self.mask = np.asarray(mask, dtype=bool)
            if self.mask.ndim not in (1, 3):
                raise ValueError(
                    f"mask must be a boolean [D] or [H, W, C] array, got shape {self.mask.shape}."
                )
        image = isinstance(self.mask, str) or self.mask.ndim == 3
        self.event_ndims = 3 if image else 1
        given = {
            "hidden_units": hidden_units,
            "activation": activation,
            "hidden_channels": hidden_channels,
            "num_blocks": num_blocks,
        }
        own, other = (
            (_IMAGE_NETWORK, _VECTOR_NETWORK) if image else (_VECTOR_NETWORK, _IMAGE_NETWORK)
        )
        wrong = [name for name in other if given[name] is not None]
        if wrong:
            kind = "an image" if image else "a vector"
            raise ValueError(
                f"{', '.join(wrong)} set the network of "
                f"{'a vector' if image else 'an image'} coupling, but this is {kind} coupling "
                f"(its network takes {', '.join(own)})."
            )
        self.network_options = {
            name: default if given[name] is None else given[name] for name, default in own.items()
        }
        if not image:
            self.network_options["hidden_units"] = tuple(self.network_options["hidden_units"])

    def _event_mask(self, event_shape):
        if isinstance(self.mask, str):
            make = checkerboard_mask if self.mask == "checkerboard" else channel_mask
            return make(event_shape, self.parity)
        if self.mask.shape != tuple(np.atleast_1d(event_shape)):
            raise ValueError(
                f"{self.name}: mask has shape {self.mask.shape} but the event has shape "
                f"{tuple(np.atleast_1d(event_shape))}."
            )
        return self.mask

    def build_weights(self, event_shape):
        self.mask_array = self._event_mask(event_shape)
        transformer = self.transformer
        if self.event_ndims == 1:
            num_conditioning = int(self.mask_array.sum())
            num_transformed = len(self.mask_array) - num_conditioning
            hidden_units = self.network_options["hidden_units"]
            fan_in = (
                hidden_units[-1] if hidden_units else num_conditioning + (self.context_size or 0)
            )
            scale = transformer.raw_scale(num_transformed, fan_in)
            self.network = MLP(
                transformer.raw_size(num_transformed),
                hidden_units,
                self.network_options["activation"],
                self.context_size,
                output_scale=None if scale is None else scale.tolist(),
                dtype=self.network_dtype_policy,
                name="network",
            )
            self.network.build((None, num_conditioning))
        else:
            channels = event_shape[-1]
            scale = transformer.raw_scale(channels, self.network_options["hidden_channels"])
            self.network = ResNet(
                transformer.raw_size(channels),
                self.network_options["hidden_channels"],
                self.network_options["num_blocks"],
                self.context_size,
                output_scale=None if scale is None else scale.tolist(),
                dtype=self.network_dtype_policy,
                name="network",
            )
            # The network sees the masked image and the mask: 2C channels.
            self.network.build((None, *event_shape[:2], 2 * channels))

    def make_bijector(self):
        return Coupling(self.network, self.mask_array, self.transformer, name=self.name)

    def get_config(self):
        return {
            **super().get_config(),
            "mask": self.mask if isinstance(self.mask, str) else self.mask.tolist(),
            "transformer": self.transformer.get_config(),
            "parity": self.parity,
            **{
                name: list(value) if isinstance(value, tuple) else value
                for name, value in self.network_options.items()
            },
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class AffineCouplingLayer(CouplingLayer):
    """`CouplingLayer(mask, "affine", ...)`: owns the network of an affine (RealNVP) coupling."""

    def __init__(
        self,
        mask,
        hidden_units=(64, 64),
        activation="relu",
        log_scale_clamp=3.0,
        context_size=None,
        **kwargs,
    ):
        kwargs.setdefault("transformer", {"name": "affine", "log_scale_clamp": log_scale_clamp})
        super().__init__(
            mask,
            hidden_units=hidden_units,
            activation=activation,
            context_size=context_size,
            **kwargs,
        )

    @property
    def log_scale_clamp(self):
        return self.transformer.log_scale_clamp


@keras.saving.register_keras_serializable(package="tfp_flows")
class SplineCouplingLayer(CouplingLayer):
    """`CouplingLayer(mask, "spline", ...)`: owns the network of a neural spline coupling.

    The network is an `MLP` from x_a (and the context) to the 3K − 1 raw
    spline parameters of each transformed element, scaled as
    `RationalQuadraticSpline.parameter_scale` says.
    """

    def __init__(
        self,
        mask,
        num_bins=8,
        bound=3.0,
        hidden_units=(64, 64),
        activation="relu",
        context_size=None,
        **kwargs,
    ):
        kwargs.setdefault("transformer", {"name": "spline", "num_bins": num_bins, "bound": bound})
        super().__init__(
            mask,
            hidden_units=hidden_units,
            activation=activation,
            context_size=context_size,
            **kwargs,
        )

    @property
    def num_bins(self):
        return self.transformer.num_bins

    @property
    def bound(self):
        return self.transformer.bound


@keras.saving.register_keras_serializable(package="tfp_flows")
class ImageCouplingLayer(CouplingLayer):
    """`CouplingLayer` over images with a checkerboard or channel mask and a ResNet.

    Arguments:
        mask: "checkerboard" or "channel".
        parity: use the complementary mask (odd squares, second half of the channels).
        hidden_channels, num_blocks: see `ResNet`.
        log_scale_clamp: soft bound on each log-scale (affine transformer).
        context_size: makes the coupling conditional on a context vector.
        transformer: another transformer instead of the affine one (e.g. "spline").
    """

    def __init__(
        self,
        mask="channel",
        parity=False,
        hidden_channels=64,
        num_blocks=1,
        log_scale_clamp=3.0,
        context_size=None,
        **kwargs,
    ):
        if mask not in IMAGE_MASKS:
            raise ValueError(f"mask must be one of {IMAGE_MASKS}, got {mask!r}.")
        kwargs.setdefault("transformer", {"name": "affine", "log_scale_clamp": log_scale_clamp})
        super().__init__(
            mask,
            hidden_channels=hidden_channels,
            num_blocks=num_blocks,
            parity=parity,
            context_size=context_size,
            **kwargs,
        )
