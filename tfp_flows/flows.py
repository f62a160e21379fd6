"""Factories that assemble flow layers into a ready `FlowModel`."""

import numpy as np

from tfp_flows import validation
from tfp_flows.bijectors import half_mask
from tfp_flows.layers import (
    AffineCouplingLayer,
    MaskedAutoregressiveLayer,
    PermuteLayer,
    PlanarLayer,
    RadialLayer,
    ScaleAndShiftLayer,
    SplineCouplingLayer,
)
from tfp_flows.layers.image import LogitLayer, MultiScaleLayer
from tfp_flows.model import FlowModel


def realnvp(
    dim,
    num_layers=8,
    hidden_units=(64, 64),
    activation="relu",
    log_scale_clamp=3.0,
    standardize=None,
    context_size=None,
    **model_kwargs,
):
    """RealNVP: `num_layers` affine couplings whose masks alternate halves.

    Arguments:
        dim: event size.
        num_layers: number of couplings.
        hidden_units: widths of each coupling's MLP (an int means one layer).
        activation, log_scale_clamp: see `AffineCouplingLayer`.
        standardize: optional training data [N, dim]; its mean and std set a
            fixed last step so the couplings see standardised values while
            `log_prob` stays the density of the data in its own units.
        context_size: makes every coupling conditional on a context vector of
            this size: a flow for p(x | context) (see `FlowModel`).
        **model_kwargs: `base_distribution`, `dtype`, `name`, ... for `FlowModel`.
    """
    _check_dim(dim, minimum=2, family="realnvp")
    dtype = model_kwargs.get("dtype")
    hidden_units = _hidden_units(hidden_units)
    steps = [
        AffineCouplingLayer(
            half_mask(dim, flip=i % 2 == 1),
            hidden_units,
            activation,
            log_scale_clamp,
            context_size=context_size,
            dtype=dtype,
            name=f"coupling_{i}",
        )
        for i in range(_num_layers(num_layers))
    ]
    return _model(steps, dim, standardize, model_kwargs)


def nsf(
    dim,
    num_layers=8,
    num_bins=8,
    bound=3.0,
    hidden_units=(64, 64),
    standardize=None,
    context_size=None,
    **model_kwargs,
):
    """Neural spline flow: `num_layers` rational-quadratic spline couplings, alternating halves.

    Durkan et al. 2019 (coupling form). Each coupling bends half of the event
    with monotone splines of `num_bins` bins on [-bound, bound] (the identity
    outside), conditioned on the other half; sampling and density are both one
    pass per coupling.

    Arguments:
        dim: event size.
        num_layers: number of couplings.
        num_bins, bound: see `SplineCouplingLayer`.
        hidden_units: widths of each coupling's MLP (an int means one layer).
        standardize: optional training data [N, dim]; a fixed last step then
            standardises it, so that [-bound, bound] covers the data (see `realnvp`).
        context_size: makes every coupling conditional on a context vector of
            this size: a flow for p(x | context) (see `FlowModel`).
        **model_kwargs: `base_distribution`, `dtype`, `name`, ... for `FlowModel`.
    """
    _check_dim(dim, minimum=2, family="nsf")
    dtype = model_kwargs.get("dtype")
    steps = [
        SplineCouplingLayer(
            half_mask(dim, flip=i % 2 == 1),
            num_bins,
            bound,
            _hidden_units(hidden_units),
            context_size=context_size,
            dtype=dtype,
            name=f"spline_coupling_{i}",
        )
        for i in range(_num_layers(num_layers))
    ]
    return _model(steps, dim, standardize, model_kwargs)


def maf(
    dim,
    num_layers=5,
    hidden_units=(64, 64),
    standardize=None,
    context_size=None,
    inverse=False,
    **model_kwargs,
):
    """Masked autoregressive flow: `num_layers` MADE steps, the event reversed between them.

    Papamakarios et al. 2017. Density (`log_prob`, training) takes one pass
    per step and sampling `dim` passes; with `inverse=True` the steps are IAF
    steps (Kingma et al. 2016): one-pass sampling, `dim`-pass density.

    Arguments:
        dim: event size.
        num_layers: number of autoregressive steps.
        hidden_units: widths of each MADE (an int means one layer).
        standardize: optional training data [N, dim] (see `realnvp`).
        context_size: makes every step conditional on a context vector of
            this size: a flow for p(x | context) (see `FlowModel`).
        inverse: False for MAF, True for IAF.
        **model_kwargs: `base_distribution`, `dtype`, `name`, ... for `FlowModel`.
    """
    _check_dim(dim, minimum=2, family="maf")
    dtype = model_kwargs.get("dtype")
    steps = []
    for i in range(_num_layers(num_layers)):
        if i:
            steps.append(PermuteLayer.reverse(dim, dtype=dtype, name=f"reverse_{i}"))
        steps.append(
            MaskedAutoregressiveLayer(
                _hidden_units(hidden_units),
                inverse=inverse,
                context_size=context_size,
                dtype=dtype,
                name=f"{'iaf' if inverse else 'maf'}_{i}",
            )
        )
    return _model(steps, dim, standardize, model_kwargs)


def planar(dim, num_layers=16, standardize=None, **model_kwargs):
    """A stack of `num_layers` planar flows (Rezende & Mohamed, 2015)."""
    _check_dim(dim, minimum=1, family="planar")
    dtype = model_kwargs.get("dtype")
    steps = [PlanarLayer(dtype=dtype, name=f"planar_{i}") for i in range(_num_layers(num_layers))]
    return _model(steps, dim, standardize, model_kwargs)


def radial(dim, num_layers=16, standardize=None, **model_kwargs):
    """A stack of `num_layers` radial flows (Rezende & Mohamed, 2015)."""
    _check_dim(dim, minimum=1, family="radial")
    dtype = model_kwargs.get("dtype")
    steps = [RadialLayer(dtype=dtype, name=f"radial_{i}") for i in range(_num_layers(num_layers))]
    return _model(steps, dim, standardize, model_kwargs)


def glow(
    image_shape,
    levels=2,
    steps_per_level=4,
    hidden_channels=64,
    num_blocks=1,
    value_range=256.0,
    logit_alpha=0.05,
    context_size=None,
    **model_kwargs,
):
    """Glow: a multi-scale flow of ActNorm → 1×1 conv → channel coupling steps, over images.

    Arguments:
        image_shape: (height, width, channels); height and width divisible by 2^levels.
        levels, steps_per_level, hidden_channels, num_blocks: see `MultiScaleLayer`.
        value_range: K of the data, pixel values in [0, K) (256 for dequantised
            8-bit pixels), for the logit step nearest the data (`LogitLayer`);
            None leaves it out (data already on the real line).
        logit_alpha: α of the logit step.
        context_size: makes every coupling conditional on a context vector.
    """
    return _image_model("glow", **locals())


def realnvp_image(
    image_shape,
    levels=2,
    steps_per_level=4,
    hidden_channels=64,
    num_blocks=1,
    value_range=256.0,
    logit_alpha=0.05,
    context_size=None,
    **model_kwargs,
):
    """Multi-scale RealNVP over images: couplings with checkerboard, then channel masks.

    Arguments as for `glow`.
    """
    return _image_model("realnvp", **locals())


def _image_model(step, image_shape, value_range, logit_alpha, model_kwargs, **options):
    dtype = model_kwargs.get("dtype")
    steps = [MultiScaleLayer(step=step, dtype=dtype, name=f"{step}_multi_scale", **options)]
    if value_range is not None:
        steps.append(LogitLayer(value_range, logit_alpha, dtype=dtype, name="logit"))
    return FlowModel(steps, event_shape=tuple(image_shape), **model_kwargs)


FLOWS = {"realnvp": realnvp, "nsf": nsf, "maf": maf, "planar": planar, "radial": radial}


def _hidden_units(hidden_units):
    units = (hidden_units,) if np.isscalar(hidden_units) else tuple(hidden_units)
    return tuple(validation.check_integer(u, "each of hidden_units") for u in units)


def _num_layers(num_layers):
    return validation.check_integer(num_layers, "num_layers", maximum=10_000)


def _model(steps, dim, standardize, model_kwargs):
    if standardize is not None:
        steps.append(
            ScaleAndShiftLayer.from_data(
                standardize, dtype=model_kwargs.get("dtype"), name="standardize"
            )
        )
    return FlowModel(steps, event_shape=(dim,), **model_kwargs)


def _check_dim(dim, minimum, family):
    if int(dim) != dim or dim < minimum:
        raise ValueError(f"{family} needs an integer dim >= {minimum}, got {dim!r}.")
