"""Keras layers for image flows: ActNorm, 1×1 convolutions, masked couplings, multi-scale.

Every layer here acts on image events [H, W, C] (`event_ndims = 3`) and owns
its weights; `MultiScaleLayer` assembles them and the image couplings
(`tfp_flows.layers.CouplingLayer` with an image mask, under its earlier name
`ImageCouplingLayer`) into the multi-scale
architecture of RealNVP and Glow (see `tfp_flows.flows.glow` and
`tfp_flows.flows.realnvp_image`). `LogitLayer` is the fixed pre-processing
step between bounded pixel values and the real line.
"""

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.bijectors.actnorm import ActNorm
from tfp_flows.bijectors.conv1x1 import InvertibleConv1x1
from tfp_flows.bijectors.multiscale import MultiScale
from tfp_flows.bijectors.squeeze import check_squeezable
from tfp_flows.layers.base import FlowLayer
from tfp_flows.layers.coupling import ImageCouplingLayer

tfb = tfp.bijectors


@keras.saving.register_keras_serializable(package="tfp_flows")
class ActNormLayer(FlowLayer):
    """Owns the per-channel log-scale and shift of an `ActNorm`, with data-dependent init.

    Until initialised the step is the identity. `FlowModel.fit` (or
    `FlowModel.initialize_from_data`) initialises it from the first batch
    through the flow-layer hook `initialize_from_data`, so that, on that
    batch, its inverse output has zero mean and unit variance per channel;
    the `initialized` flag is a weight, so a saved and loaded model is not
    initialised again.
    """

    event_ndims = 3

    def build_weights(self, event_shape):
        channels = event_shape[-1]
        self.log_scale = self.add_weight(shape=(channels,), initializer="zeros", name="log_scale")
        self.shift = self.add_weight(shape=(channels,), initializer="zeros", name="shift")
        self.initialized = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="initialized"
        )

    def make_bijector(self):
        return ActNorm(self.log_scale.value, self.shift.value, name=self.name)

    @property
    def needs_data_initialization(self):
        return float(self.initialized.numpy()) == 0.0

    def initialize_from_data(self, y, min_scale=1e-3):
        """Sets shift and log-scale so that the inverse maps y to zero mean, unit variance."""
        axes = list(range(len(y.shape) - 1))
        mean = tf.reduce_mean(y, axis=axes)
        std = tf.math.reduce_std(y, axis=axes)
        self.shift.assign(mean)
        self.log_scale.assign(tf.math.log(tf.maximum(std, min_scale)))
        self.initialized.assign(1.0)


@keras.saving.register_keras_serializable(package="tfp_flows")
class InvertibleConv1x1Layer(FlowLayer):
    """Owns the LU factors of an `InvertibleConv1x1`; starts as a random rotation.

    The initial weight is a random orthogonal matrix (log-det 0), factored
    once as P·L·U; P and the signs of U's diagonal stay fixed (non-trainable
    weights, so they are saved with the model), L, U and log|diag U| train.
    """

    event_ndims = 3

    def build_weights(self, event_shape):
        channels = event_shape[-1]
        dtype = self.dtype_policy.variable_dtype
        rotation = keras.initializers.Orthogonal()((channels, channels), dtype="float64")
        permutation, lower, upper = scipy.linalg.lu(np.asarray(rotation))
        diagonal = np.diag(upper)

        def weight(name, value, trainable=True):
            return self.add_weight(
                shape=value.shape,
                initializer=keras.initializers.Constant(value.astype(dtype)),
                trainable=trainable,
                name=name,
            )

        self.permutation = weight("permutation", permutation, trainable=False)
        self.sign = weight("sign", np.sign(diagonal), trainable=False)
        self.lower = weight("lower", lower)
        self.upper = weight("upper", np.triu(upper, 1))
        self.log_abs_diagonal = weight("log_abs_diagonal", np.log(np.abs(diagonal)))

    def make_bijector(self):
        return InvertibleConv1x1(
            self.permutation.value,
            self.lower.value,
            self.upper.value,
            self.log_abs_diagonal.value,
            self.sign.value,
            name=self.name,
        )


STEPS = ("glow", "realnvp")


@keras.saving.register_keras_serializable(package="tfp_flows")
class MultiScaleLayer(FlowLayer):
    """The multi-scale image flow of RealNVP or Glow as one layer (see `MultiScale`).

    Each of `levels` levels squeezes (space to depth), runs `steps_per_level`
    steps and factors out half of its channels (the last level keeps all).
    A "glow" step is, in the normalizing direction, ActNorm → invertible 1×1
    convolution → coupling with a channel mask (alternating halves); a
    "realnvp" step is one coupling, the masks alternating checkerboard (even,
    odd) and channel (first, second half) in turn. The couplings' transformer
    is affine by default; "spline" gives neural spline couplings.

    Arguments:
        levels: number of levels; the image's height and width must be
            divisible by 2^levels.
        steps_per_level: steps per level.
        step: "glow" or "realnvp".
        hidden_channels, num_blocks: the couplings' ResNets.
        log_scale_clamp: soft bound on the couplings' log-scales (affine).
        context_size: makes every coupling conditional on a context vector.
        transformer: the couplings' transformer, a name or a `Transformer`;
            its options may be given as keyword arguments (`num_bins`, ...).
    """

    event_ndims = 3
    supports_context = True

    def __init__(
        self,
        levels=2,
        steps_per_level=4,
        step="glow",
        hidden_channels=64,
        num_blocks=1,
        log_scale_clamp=transformers_lib.DEFAULT,
        context_size=None,
        transformer="affine",
        **kwargs,
    ):
        options, kwargs = transformers_lib.split_options(transformer, kwargs)
        super().__init__(context_size=context_size, **kwargs)
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {step!r}.")
        if int(levels) < 1 or int(steps_per_level) < 1:
            raise ValueError(
                f"levels and steps_per_level must be positive, got {levels} and {steps_per_level}."
            )
        if log_scale_clamp is not transformers_lib.DEFAULT:  # the affine option, at its old place
            options["log_scale_clamp"] = log_scale_clamp
        self.transformer = transformers_lib.get(transformer, **options)
        self.levels, self.steps_per_level, self.step = int(levels), int(steps_per_level), step
        self.hidden_channels, self.num_blocks = int(hidden_channels), int(num_blocks)

    @property
    def log_scale_clamp(self):
        return getattr(self.transformer, "log_scale_clamp", None)

    def build_weights(self, event_shape):
        height, width, channels = event_shape
        shape = (height, width, channels)
        self.level_shapes, self.steps = [], []
        for level in range(self.levels):
            check_squeezable(
                shape[0],
                shape[1],
                f" at every level ({self.levels} levels need height and width divisible by "
                f"{2**self.levels}; the image is {height}×{width}, level {level + 1} gets "
                f"{shape[0]}×{shape[1]})",
            )
            shape = (shape[0] // 2, shape[1] // 2, shape[2] * 4)
            if self.step == "realnvp" and shape[0] * shape[1] == 1:
                raise ValueError(
                    f"{self.name}: RealNVP's checkerboard couplings need at least 2 pixels at "
                    f"every level, but level {level + 1} of {self.levels} is 1×1 (the image is "
                    f"{height}×{width}): use fewer levels, a larger image or step='glow'."
                )
            self.level_shapes.append(shape)
            for index in range(self.steps_per_level):
                for layer in self._step_layers(level, index):
                    layer.build((None, *shape))
                    self.steps.append(layer)
            shape = (shape[0], shape[1], shape[2] // 2)  # half the channels go on

    def _step_layers(self, level, index):
        """One step's layers in the normalizing (data → base) order."""
        common = dict(
            hidden_channels=self.hidden_channels,
            num_blocks=self.num_blocks,
            transformer=self.transformer,
            context_size=self.context_size,
            dtype=self.network_dtype_policy,
        )
        prefix = f"level_{level}_step_{index}"
        if self.step == "realnvp":
            mask = "checkerboard" if index % 4 < 2 else "channel"
            return [ImageCouplingLayer(mask, index % 2 == 1, name=f"{prefix}_coupling", **common)]
        return [
            ActNormLayer(dtype=self.network_dtype_policy, name=f"{prefix}_act_norm"),
            InvertibleConv1x1Layer(dtype=self.network_dtype_policy, name=f"{prefix}_conv_1x1"),
            ImageCouplingLayer("channel", index % 2 == 1, name=f"{prefix}_coupling", **common),
        ]

    def make_bijector(self):
        per_level = len(self.steps) // self.levels
        levels = [
            [layer.bijector for layer in self.steps[i * per_level : (i + 1) * per_level]]
            for i in range(self.levels)
        ]
        # `steps` are in the normalizing order; MultiScale takes the forward (sampling) order.
        return MultiScale([steps[::-1] for steps in levels], name=self.name)

    def walk(self):
        yield self
        for layer in self.steps:
            yield from layer.walk()

    def inverse_visiting(self, y, visit, **kwargs):
        layers = {id(layer.bijector): layer for layer in self.steps}
        visit(self, y)
        return self.bijector.inverse_visiting(
            y, lambda step, values: visit(layers[id(step)], values), **kwargs
        )

    def get_config(self):
        return {
            **super().get_config(),
            "levels": self.levels,
            "steps_per_level": self.steps_per_level,
            "step": self.step,
            "hidden_channels": self.hidden_channels,
            "num_blocks": self.num_blocks,
            "transformer": self.transformer.get_config(),
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class LogitLayer(FlowLayer):
    """Fixed pre-processing between pixel values in [0, K) and the real line (the data side).

    Forward (towards the data): x = K·(σ(y) − α)/(1 − 2α); inverse:
    y = logit(α + (1 − 2α)·x/K), which keeps the logit away from ±∞ at the
    range's ends. The log-det is exact, so `log_prob` is the density of x in
    pixel units: for dequantised integer pixels n and x = n + u, u ~ U[0, 1)^D,
    −log₂ P(n) ≤ E_u[−log₂ p(n + u)], and `bits_per_dim` = −log₂ p(x) / D
    bounds the discrete data's bits/dim directly. (A model of x/K instead would
    need + log₂ K per dimension; here that term is already inside p.) A uniform
    density over the range scores log₂(K/(1 − 2α)) per dimension.

    Arguments:
        value_range: K, e.g. 256 for dequantised 8-bit pixels, 17 for sklearn's digits.
        alpha: α in [0, 0.5).
    """

    def __init__(self, value_range=256.0, alpha=0.05, **kwargs):
        super().__init__(**kwargs)
        self.value_range, self.alpha = float(value_range), float(alpha)
        if self.value_range <= 0 or not 0.0 <= self.alpha < 0.5:
            raise ValueError(
                f"need value_range > 0 and 0 <= alpha < 0.5, got {value_range} and {alpha}."
            )

    def make_bijector(self):
        dtype = self.dtype_policy.variable_dtype
        scale = np.asarray(self.value_range / (1.0 - 2.0 * self.alpha), dtype)
        return tfb.Chain(
            [tfb.Scale(scale), tfb.Shift(np.asarray(-self.alpha, dtype)), tfb.Sigmoid()],
            name=self.name,
        )

    @property
    def support(self):
        """The forward map's image: (−αK, K(1 − α))/(1 − 2α), a little wider than [0, K).

        Samples can fall in the margins outside [0, K); `log_prob` scores them
        (and gives -inf beyond the image).
        """
        stretch = self.value_range / (1.0 - 2.0 * self.alpha)
        return -self.alpha * stretch, (1.0 - self.alpha) * stretch

    def check_data(self, x, argument="x"):
        """Raises a ValueError naming the first value outside [0, value_range) (training data)."""
        values = np.asarray(x)
        outside = (values < 0) | (values >= self.value_range)
        if outside.any():
            index = np.unravel_index(np.flatnonzero(outside)[0], values.shape)
            raise ValueError(
                f"{argument} has {int(outside.sum())} values outside the declared range "
                f"[0, {self.value_range:g}); the first is {values[index]:g} at index "
                f"{tuple(int(i) for i in index)} (pixels must be dequantised counts n + u "
                f"with 0 <= n < {self.value_range:g})."
            )

    def get_config(self):
        return {**super().get_config(), "value_range": self.value_range, "alpha": self.alpha}
