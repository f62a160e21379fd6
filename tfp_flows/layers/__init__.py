"""Keras 3 layers that own flow weights and hand out `tfp_flows` bijectors."""

from tfp_flows.layers.base import FlowLayer
from tfp_flows.layers.continuous import ContinuousFlowLayer, TimeEmbeddedMLP
from tfp_flows.layers.coupling import (
    MLP,
    AffineCouplingLayer,
    Conditioner,
    CouplingLayer,
    ImageCouplingLayer,
    ResNet,
    ShiftAndLogScaleNetwork,
    SplineCouplingLayer,
)
from tfp_flows.layers.fixed import PermuteLayer, ScaleAndShiftLayer
from tfp_flows.layers.made import MADE, MaskedAutoregressiveLayer
from tfp_flows.layers.planar import PlanarLayer
from tfp_flows.layers.radial import RadialLayer

__all__ = [
    "MADE",
    "MLP",
    "AffineCouplingLayer",
    "Conditioner",
    "ContinuousFlowLayer",
    "CouplingLayer",
    "FlowLayer",
    "ImageCouplingLayer",
    "MaskedAutoregressiveLayer",
    "PermuteLayer",
    "PlanarLayer",
    "RadialLayer",
    "ResNet",
    "ScaleAndShiftLayer",
    "ShiftAndLogScaleNetwork",
    "SplineCouplingLayer",
    "TimeEmbeddedMLP",
]
