"""The neural spline coupling layer: owns the MLP of a `SplineCoupling`."""

import math

import keras
import numpy as np
import tensorflow as tf

from tfp_flows.bijectors import SplineCoupling
from tfp_flows.bijectors.spline_coupling import check_spline_arguments
from tfp_flows.layers.coupling import MLP, CouplingLayer


@keras.saving.register_keras_serializable(package="tfp_flows")
class SplineCouplingLayer(CouplingLayer):
    """Owns the network of a `tfp_flows.bijectors.SplineCoupling`.

    The network is an `MLP` from x_a (and the context) to the 3K − 1 raw
    spline parameters of each transformed element; its last layer starts at
    zero, so the coupling starts as the identity. As in Durkan et al.'s own
    code (nflows), the raw widths and heights are divided by √H, H the width
    of the network's last hidden layer: the softmax over bins then sees logits
    of order one, not of order √H, so random or early weights give bins of
    comparable sizes rather than near-flat bins whose inverse loses most of
    its digits (a bin of height 1e-3 over a width of 5 has slope 2e-4).

    Arguments:
        mask: boolean list over the event; True marks the conditioning part.
        num_bins: K, the spline's bins (at least 2).
        bound: the spline acts on [-bound, bound], the identity outside; with
            standardised data (`ScaleAndShiftLayer`) 3 covers most of it.
        hidden_units: widths of the hidden Dense layers.
        activation: their activation.
        context_size: makes the coupling conditional on a context vector of
            this size, fed to the network next to x_a (see `FlowLayer`).
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
        super().__init__(mask, hidden_units, activation, context_size=context_size, **kwargs)
        check_spline_arguments(num_bins, bound)
        self.num_bins = int(num_bins)
        self.bound = float(bound)

    def make_network(self, num_conditioning, num_transformed):
        return MLP(
            num_transformed * (3 * self.num_bins - 1),
            self.hidden_units,
            self.activation,
            self.context_size,
            dtype=self.network_dtype_policy,
            name="network",
        )

    def build_weights(self, event_size):
        super().build_weights(event_size)
        last_hidden = self.hidden_units[-1] if self.hidden_units else self.network.input_width
        per_element = np.concatenate(
            [np.full(2 * self.num_bins, 1.0 / math.sqrt(last_hidden)), np.ones(self.num_bins - 1)]
        )
        self._raw_scale = np.tile(per_element, int((~self.mask).sum()))

    def _spline_parameters(self, x_a, **kwargs):
        raw = self.network(x_a, **kwargs)
        return raw * tf.constant(self._raw_scale, raw.dtype)

    def make_bijector(self):
        return SplineCoupling(
            self._spline_parameters,
            self.mask,
            num_bins=self.num_bins,
            bound=self.bound,
            name=self.name,
        )

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "bound": self.bound}
