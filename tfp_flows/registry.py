"""The one registry of flow steps: every bijector joins it and inherits the generic tests.

Each entry builds a Keras `FlowLayer` for an event size and dtype; its
`bijector` is the pure TFP bijector under test. `tests/test_registry.py`
checks every entry for the inverse round trip, the log-det against the
autodiff Jacobian, forward/inverse log-det consistency, leading batch
dimensions, gradients reaching every weight, and `.keras` save/load.

A conditional entry (`context_size` set) is tested as the bijection it is for
one fixed context: `bijector_under_test(layer)` binds `fixed_context(...)`
to its context keyword, and models built from it get the same context
(`context_kwargs`). Per-example contexts are tested in
`tests/test_conditional.py`.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import half_mask, parity_mask
from tfp_flows.layers import (
    AffineCouplingLayer,
    FlowLayer,
    MaskedAutoregressiveLayer,
    PermuteLayer,
    PlanarLayer,
    RadialLayer,
    ScaleAndShiftLayer,
    SplineCouplingLayer,
)

tfb = tfp.bijectors

CONTEXT_SIZE = 3  # of the conditional entries


@dataclasses.dataclass(frozen=True)
class Entry:
    make_layer: Callable[..., FlowLayer]  # (event_size, dtype) -> unbuilt layer
    min_event_size: int = 1


REGISTRY = {
    "planar": Entry(lambda size, dtype: PlanarLayer(dtype=dtype)),
    "radial": Entry(lambda size, dtype: RadialLayer(dtype=dtype)),
    "affine_coupling_half": Entry(
        lambda size, dtype: AffineCouplingLayer(half_mask(size), (16, 16), dtype=dtype),
        min_event_size=2,
    ),
    "affine_coupling_parity": Entry(
        lambda size, dtype: AffineCouplingLayer(
            parity_mask(size, odd=True), (16,), activation="tanh", dtype=dtype
        ),
        min_event_size=2,
    ),
    "affine_coupling_conditional": Entry(
        lambda size, dtype: AffineCouplingLayer(
            half_mask(size, flip=True), (16,), context_size=CONTEXT_SIZE, dtype=dtype
        ),
        min_event_size=2,
    ),
    # One step of each flow family in tfp_flows.flows is registered under the family's
    # name (a spline coupling for nsf): tests over flows.FLOWS look them up by it.
    "nsf": Entry(
        lambda size, dtype: SplineCouplingLayer(
            half_mask(size), num_bins=5, hidden_units=(16, 16), dtype=dtype
        ),
        min_event_size=2,
    ),
    "nsf_conditional": Entry(
        lambda size, dtype: SplineCouplingLayer(
            parity_mask(size),
            num_bins=4,
            hidden_units=(16,),
            context_size=CONTEXT_SIZE,
            dtype=dtype,
        ),
        min_event_size=2,
    ),
    "maf": Entry(
        lambda size, dtype: MaskedAutoregressiveLayer((16, 16), dtype=dtype), min_event_size=2
    ),
    "iaf": Entry(
        lambda size, dtype: MaskedAutoregressiveLayer((16,), inverse=True, dtype=dtype),
        min_event_size=2,
    ),
    "maf_conditional": Entry(
        lambda size, dtype: MaskedAutoregressiveLayer(
            (16,), activation="tanh", context_size=CONTEXT_SIZE, dtype=dtype
        ),
        min_event_size=2,
    ),
    "permute": Entry(lambda size, dtype: PermuteLayer.reverse(size, dtype=dtype)),
    "scale_and_shift": Entry(
        lambda size, dtype: ScaleAndShiftLayer(
            np.linspace(0.5, 2.0, size), np.linspace(-1.0, 1.0, size), dtype=dtype
        )
    ),
}


def build_random(name, event_size, dtype="float32", seed=0, stddev=0.5):
    """Builds the named entry's layer with random weights (away from the identity)."""
    entry = REGISTRY[name]
    if event_size < entry.min_event_size:
        raise ValueError(f"{name} needs an event size of at least {entry.min_event_size}.")
    layer = entry.make_layer(event_size, dtype)
    layer.build((None, event_size))
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(stddev * rng.standard_normal(weight.shape).astype(dtype))
    return layer


def fixed_context(context_size, dtype="float32"):
    """The context the generic tests hold fixed: a deterministic, non-trivial vector."""
    return tf.constant(np.linspace(-1.5, 1.0, context_size), dtype)


def context_kwargs(layer_or_model):
    """{} for an unconditional layer or model, {"context": fixed_context(...)} otherwise."""
    if layer_or_model.context_size is None:
        return {}
    return {"context": fixed_context(layer_or_model.context_size, layer_or_model.dtype)}


def bijector_under_test(layer):
    """The layer's bijector; for a conditional layer, with `fixed_context` bound to it."""
    if not layer.conditional:
        return layer.bijector
    return _WithContext(layer.bijector, context_kwargs(layer)["context"])


class _WithContext(tfb.Bijector):
    """x ↦ f(x; c) for one fixed context c: a bijection like any other."""

    def __init__(self, bijector, context):
        parameters = dict(locals())
        self._bijector, self._context = bijector, context
        super().__init__(
            forward_min_event_ndims=1,
            validate_args=False,
            parameters=parameters,
            name=f"{bijector.name}_with_context",
        )

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    def _forward(self, x):
        return self._bijector.forward(x, context=self._context)

    def _inverse(self, y):
        return self._bijector.inverse(y, context=self._context)

    def _forward_log_det_jacobian(self, x):
        return self._bijector.forward_log_det_jacobian(x, event_ndims=1, context=self._context)

    def _inverse_log_det_jacobian(self, y):
        return self._bijector.inverse_log_det_jacobian(y, event_ndims=1, context=self._context)
