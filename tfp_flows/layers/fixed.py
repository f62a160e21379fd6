"""Flow layers without trainable weights: TFP's own bijectors, serialisable."""

import math

import keras
import numpy as np
import tensorflow_probability as tfp

from tfp_flows import validation
from tfp_flows.bijectors import Reverse, ScaleAndShift
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
        if (
            len(self.scale) != len(self.shift)
            or not all(math.isfinite(s) and s > 0 for s in self.scale)
            or not all(math.isfinite(s) for s in self.shift)
        ):
            raise ValueError(
                "scale must be positive, shift finite, both of the same length; got "
                f"scale={self.scale}, shift={self.shift}."
            )

    @classmethod
    def from_data(cls, x, **kwargs):
        """The per-dimension mean and standard deviation of x [N, D], in the data's own units.

        The scale is the data's own (no absolute floor: data measured in
        small units, std ~1e-6, is standardised as well as any other). Data
        that cannot be standardised is refused by name: non-finite values, a
        constant column (its density would be a point mass), or a column that
        varies too little for the model's float precision to resolve.
        """
        x = validation.as_array(x, "standardize")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(
                f"standardize needs data of shape [N, D] with N >= 2, got shape {x.shape}."
            )
        validation.check_training_data(x, x.shape[1:], "standardize")
        mean, std = x.mean(axis=0), x.std(axis=0)
        constant = np.flatnonzero(std == 0)
        if len(constant):
            raise ValueError(
                f"cannot standardise: columns {constant.tolist()} of the data are constant "
                f"(column {constant[0]} is always {float(x[0, constant[0]])!r}), so their density "
                "would be a point mass and the NLL would fall without bound; drop them."
            )
        policy = kwargs.get("dtype") or keras.config.dtype_policy()
        dtype = np.dtype(keras.dtype_policies.get(policy).variable_dtype)
        # Below ~100 units in the last place of the mean, the data's own values are
        # a handful of representable numbers: their density is no density.
        unresolved = np.flatnonzero(std < 100 * np.finfo(dtype).eps * np.abs(mean))
        if len(unresolved):
            j = unresolved[0]
            raise ValueError(
                f"cannot standardise: columns {unresolved.tolist()} vary too little for "
                f"{dtype.name} (column {j}: std {std[j]:.3g} around mean {mean[j]:.6g}); "
                "subtract a reference value first, or use dtype='float64'."
            )
        return cls(std, mean, **kwargs)

    def build_weights(self, event_size):
        if len(self.scale) != event_size:
            raise ValueError(
                f"{self.name}: {len(self.scale)} scales for an event of {event_size} dimensions."
            )

    def make_bijector(self):
        dtype = self.dtype_policy.variable_dtype
        return ScaleAndShift(
            np.asarray(self.scale, dtype), np.asarray(self.shift, dtype), name=self.name
        )

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "shift": self.shift}
