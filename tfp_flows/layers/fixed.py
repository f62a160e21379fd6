"""Flow layers without trainable weights: TFP's own bijectors, serialisable."""

import keras
import numpy as np
import tensorflow_probability as tfp

from tfp_flows.bijectors import Reverse
from tfp_flows.layers.base import FlowLayer

tfb = tfp.bijectors


@keras.saving.register_keras_serializable(package="tfp_flows")
class PermuteLayer(FlowLayer):
    """`tfb.Permute(permutation)`; `PermuteLayer.reverse(n)` reverses the event.

    A reversal runs as `tfp_flows.bijectors.Reverse` (the same map through
    `tf.reverse`, cheaper to differentiate), any other permutation as `tfb.Permute`.
    """

    def __init__(self, permutation, **kwargs):
        super().__init__(**kwargs)
        self.permutation = [int(i) for i in permutation]
        if sorted(self.permutation) != list(range(len(self.permutation))):
            raise ValueError(f"not a permutation of 0..n-1: {self.permutation}")

    @classmethod
    def reverse(cls, event_size, **kwargs):
        return cls(list(range(event_size - 1, -1, -1)), **kwargs)

    def build_weights(self, event_size):
        if len(self.permutation) != event_size:
            raise ValueError(
                f"{self.name}: permutation of {len(self.permutation)} positions "
                f"for an event of {event_size} dimensions."
            )

    def make_bijector(self):
        if self.permutation == list(range(len(self.permutation)))[::-1]:
            return Reverse(name=self.name)
        return tfb.Permute(self.permutation, name=self.name)

    def get_config(self):
        return {**super().get_config(), "permutation": self.permutation}


@keras.saving.register_keras_serializable(package="tfp_flows")
class ScaleAndShiftLayer(FlowLayer):
    """A fixed elementwise affine map y = x·scale + shift (base → data side).

    Put last in a flow to standardise the data: the flow then models
    standardised values while `log_prob` stays the exact density of the data
    in its own units (the log-det of the scaling is included).
    `ScaleAndShiftLayer.from_data(x)` uses the per-dimension mean and std.
    """

    def __init__(self, scale, shift, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(s) for s in np.ravel(scale)]
        self.shift = [float(s) for s in np.ravel(shift)]
        if len(self.scale) != len(self.shift) or min(self.scale) <= 0:
            raise ValueError(
                "scale must be positive and the same length as shift, got "
                f"scale={self.scale}, shift={self.shift}."
            )

    @classmethod
    def from_data(cls, x, min_scale=1e-3, **kwargs):
        x = np.asarray(x, dtype=np.float64)
        return cls(np.maximum(x.std(axis=0), min_scale), x.mean(axis=0), **kwargs)

    def build_weights(self, event_size):
        if len(self.scale) != event_size:
            raise ValueError(
                f"{self.name}: {len(self.scale)} scales for an event of {event_size} dimensions."
            )

    def make_bijector(self):
        dtype = self.dtype_policy.variable_dtype
        return tfb.Chain(
            [tfb.Shift(np.asarray(self.shift, dtype)), tfb.Scale(np.asarray(self.scale, dtype))],
            name=self.name,
        )

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "shift": self.shift}
