"""Pure TFP bijectors: no Keras state, parameters taken as TFP's own are.

A coupling or autoregressive family is one bijector (`Coupling`,
`MaskedAutoregressive`) with a choice of elementwise transformer
(`tfp_flows.bijectors.transformers`: `Affine`, `RationalQuadraticSpline`).
"""

from tfp_flows.bijectors import transformers
from tfp_flows.bijectors.actnorm import ActNorm
from tfp_flows.bijectors.autoregressive import MaskedAutoregressive
from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.continuous import ContinuousFlow
from tfp_flows.bijectors.conv1x1 import InvertibleConv1x1
from tfp_flows.bijectors.coupling import (
    AffineCoupling,
    Coupling,
    MaskedImageCoupling,
    SplineCoupling,
    channel_mask,
    checkerboard_mask,
    half_mask,
    parity_mask,
)
from tfp_flows.bijectors.multiscale import MultiScale
from tfp_flows.bijectors.planar import Planar
from tfp_flows.bijectors.radial import Radial
from tfp_flows.bijectors.reverse import Reverse
from tfp_flows.bijectors.scale_and_shift import ScaleAndShift
from tfp_flows.bijectors.squeeze import Squeeze
from tfp_flows.bijectors.transformers import (
    Affine,
    RationalQuadraticSpline,
    Transformer,
    soft_clamp,
)

__all__ = [
    "ActNorm",
    "Affine",
    "AffineCoupling",
    "ContinuousFlow",
    "Coupling",
    "FlowBijector",
    "InvertibleConv1x1",
    "MaskedAutoregressive",
    "MaskedImageCoupling",
    "MultiScale",
    "Planar",
    "Radial",
    "RationalQuadraticSpline",
    "Reverse",
    "ScaleAndShift",
    "SplineCoupling",
    "Squeeze",
    "Transformer",
    "channel_mask",
    "checkerboard_mask",
    "half_mask",
    "parity_mask",
    "soft_clamp",
    "transformers",
]
