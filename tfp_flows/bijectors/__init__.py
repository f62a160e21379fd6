"""Pure TFP bijectors: no Keras state, parameters taken as TFP's own are."""

from tfp_flows.bijectors.affine_coupling import (
    AffineCoupling,
    Coupling,
    half_mask,
    parity_mask,
    soft_clamp,
)
from tfp_flows.bijectors.autoregressive import MaskedAutoregressive
from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.planar import Planar
from tfp_flows.bijectors.radial import Radial
from tfp_flows.bijectors.spline_coupling import SplineCoupling

__all__ = [
    "AffineCoupling",
    "Coupling",
    "FlowBijector",
    "MaskedAutoregressive",
    "Planar",
    "Radial",
    "SplineCoupling",
    "half_mask",
    "parity_mask",
    "soft_clamp",
]
