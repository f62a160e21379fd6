"""The one registry of flow steps: every bijector joins it and inherits the generic tests.

Each entry builds a Keras `FlowLayer` for an event size and dtype; its
`bijector` is the pure TFP bijector under test. `tests/test_registry.py`
checks every entry for the inverse round trip, the log-det against the
autodiff Jacobian, forward/inverse log-det consistency, leading batch
dimensions, gradients reaching every weight, and `.keras` save/load.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from tfp_flows.bijectors import half_mask, parity_mask
from tfp_flows.layers import (
    AffineCouplingLayer,
    FlowLayer,
    PermuteLayer,
    PlanarLayer,
    RadialLayer,
    ScaleAndShiftLayer,
)


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
