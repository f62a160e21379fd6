"""Pure TFP bijectors: no Keras state, parameters taken as TFP's own are."""

from tfp_flows.bijectors.affine_coupling import AffineCoupling, half_mask, parity_mask, soft_clamp
from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.planar import Planar
from tfp_flows.bijectors.radial import Radial

__all__ = [
    "AffineCoupling",
    "FlowBijector",
    "Planar",
    "Radial",
    "half_mask",
    "parity_mask",
    "soft_clamp",
]
