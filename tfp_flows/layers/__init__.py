"""Keras 3 layers that own flow weights and hand out `tfp_flows` bijectors."""

from tfp_flows.layers.base import FlowLayer
from tfp_flows.layers.coupling import AffineCouplingLayer, ShiftAndLogScaleNetwork
from tfp_flows.layers.fixed import PermuteLayer, ScaleAndShiftLayer
from tfp_flows.layers.planar import PlanarLayer
from tfp_flows.layers.radial import RadialLayer

__all__ = [
    "AffineCouplingLayer",
    "FlowLayer",
    "PermuteLayer",
    "PlanarLayer",
    "RadialLayer",
    "ScaleAndShiftLayer",
    "ShiftAndLogScaleNetwork",
]
