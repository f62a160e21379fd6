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

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.python import pywrap_tfe  # no public API tells what the active tapes record
from tensorflow_probability.python.bijectors.chain import _Chain
from tensorflow_probability.python.internal import cache_util

tfb = tfp.bijectors


def _unrecorded(output, attributes):
    """True when a tape records now but recorded none of a cached result's tensors.

    TFP's bijector cache hands back the value and log-det of an earlier call
    for the same tensor. Computed where no tape was watching (a `forward` or
    `sample` outside a `GradientTape`, or inside another one), they carry no
    gradient: a `log_prob` of those samples inside a tape would give every
    weight a None gradient. Such entries are recomputed instead.
    """
    if pywrap_tfe.TFE_Py_TapeSetIsEmpty():
        return False
    tensors = [
        t
        for t in tf.nest.flatten((output, attributes.get("ildj"), attributes.get("fldj")))
        if tf.is_tensor(t)
    ]
    return bool(tensors) and not pywrap_tfe.TFE_Py_TapeSetShouldRecordBackprop(tensors)


class _TapeAware:
    """Mixin for TFP's bijector caches: no cached result a recording tape did not record."""

    def _lookup(self, input, forward_name, inverse_name, **kwargs):
        self._drop_unrecorded(input, forward_name, kwargs)
        return super()._lookup(input, forward_name, inverse_name, **kwargs)

    def _attributes(self, input, fn_name, **kwargs):
        self._drop_unrecorded(input, fn_name, kwargs)
        return super()._attributes(input, fn_name, **kwargs)

    def _drop_unrecorded(self, input, fn_name, kwargs):
        edge = self._get_or_create_edge(input, fn_name, kwargs)
        output = edge.output_ref() if edge.output_ref else None
        if (output is not None or edge.attributes) and _unrecorded(output, edge.attributes):
            self.clear()  # this bijector's entries: cheap to recompute, and right


class TapeAwareCache(_TapeAware, cache_util.BijectorCacheWithGreedyAttrs):
    """TFP's greedy-attribute bijector cache, minus results a recording tape did not record."""


class TapeAwareChainCache(_TapeAware, cache_util.BijectorCache):
    """TFP's plain bijector cache (a `tfb.Chain`'s), minus unrecorded results."""


class FlowChain(_Chain):
    """`tfb.Chain` whose cache never answers a recording tape with unrecorded results.

    `FlowModel` composes its steps with it, so `log_prob` of samples drawn
    outside a `GradientTape` still gives every weight its gradient. (TFP's
    `tfb.Chain` is this same class, `_Chain`, whenever its bijectors are not
    all composite tensors, as tfp_flows' are not.)
    """

    _cache = TapeAwareChainCache()


class FlowBijector(tfb.Bijector):
    """Base class: one pass computes a direction and its log-det."""

    _cache = TapeAwareCache(forward_name="_augmented_forward", inverse_name="_augmented_inverse")

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
