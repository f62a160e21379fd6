"""Pure TFP bijectors: no Keras state, parameters taken as TFP's own are."""

from tfp_flows.bijectors.actnorm import ActNorm
from tfp_flows.bijectors.affine_coupling import (
    AffineCoupling,
    Coupling,
    half_mask,
    parity_mask,
    soft_clamp,
)
from tfp_flows.bijectors.autoregressive import MaskedAutoregressive
from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.conv1x1 import InvertibleConv1x1
from tfp_flows.bijectors.image_coupling import MaskedImageCoupling
from tfp_flows.bijectors.multiscale import MultiScale
from tfp_flows.bijectors.planar import Planar
from tfp_flows.bijectors.radial import Radial
from tfp_flows.bijectors.reverse import Reverse
from tfp_flows.bijectors.spline_coupling import SplineCoupling
from tfp_flows.bijectors.squeeze import Squeeze

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "Coupling",
    "FlowBijector",
    "InvertibleConv1x1",
    "MaskedAutoregressive",
    "MaskedImageCoupling",
    "MultiScale",
    "Planar",
    "Radial",
    "Reverse",
    "SplineCoupling",
    "Squeeze",
    "half_mask",
    "parity_mask",
    "soft_clamp",
]
