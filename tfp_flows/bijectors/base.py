"""The contract every tfp_flows bijector follows.

A tfp_flows bijector is a genuine `tfp.bijectors.Bijector`: TFP's `Chain`,
`Invert` and `TransformedDistribution` use it like any of TFP's own. The one
difference is how the work is split. TFP asks for `_forward`, `_inverse` and
the two log-det methods separately, which makes a coupling layer run its
network twice (once for the value, once for the log-det). A subclass here
implements two methods instead, each returning a value *and* its log-det from
one pass:

* `_forward_and_log_det(x, **kwargs) -> (y, log|det dy/dx|)`
* `_inverse_and_log_det(y, **kwargs) -> (x, log|det dx/dy|)`

Both log-dets are reduced over the event (the bijector's `min_event_ndims`).
The greedy cache below (the pattern TFP's own `FFJORD` and `HighwayFlow` use)
stores the log-det next to the value, so `TransformedDistribution.log_prob`
costs one pass per bijector.

Direction: as everywhere in TFP, `forward` maps the base (latent) space to the
data space and `log_prob` uses `inverse`. Each subclass says in its docstring
which direction is closed-form and which is numerical.
"""

import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

tfb = tfp.bijectors


class FlowBijector(tfb.Bijector):
    """Base class: one pass computes a direction and its log-det."""

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse"
    )

    @classmethod
    def _parameter_properties(cls, dtype):
        # No tensor parameters for TFP to batch: networks and layer-owned weights are
        # referenced, not parameters. Subclasses with real parameters (Planar) override.
        return dict()

    def _forward_and_log_det(self, x, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} does not implement the forward direction."
        )

    def _inverse_and_log_det(self, y, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} does not implement the inverse direction."
        )

    def _augmented_forward(self, x, **kwargs):
        y, fldj = self._forward_and_log_det(x, **kwargs)
        return y, {"fldj": fldj, "ildj": -fldj}

    def _augmented_inverse(self, y, **kwargs):
        x, ildj = self._inverse_and_log_det(y, **kwargs)
        return x, {"ildj": ildj, "fldj": -ildj}

    def _forward(self, x, **kwargs):
        return self._augmented_forward(x, **kwargs)[0]

    def _inverse(self, y, **kwargs):
        return self._augmented_inverse(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x, **kwargs):
        attributes = self._cache.forward_attributes(x, **kwargs)
        if "fldj" not in attributes:
            self._cache.forward(x, **kwargs)  # one pass stores the value and its log-det
        return attributes["fldj"]

    def _inverse_log_det_jacobian(self, y, **kwargs):
        attributes = self._cache.inverse_attributes(y, **kwargs)
        if "ildj" not in attributes:
            self._cache.inverse(y, **kwargs)  # one pass stores the value and its log-det
        return attributes["ildj"]
