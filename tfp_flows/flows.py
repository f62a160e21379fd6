"""Factories that assemble flow layers into a ready `FlowModel`.

A coupling or autoregressive family is a choice of elementwise transformer
(`tfp_flows.bijectors.transformers`): `realnvp` and `nsf` are couplings with
the affine and the spline transformer, `maf` takes either (with the spline,
NSF-AR), and the image factories `glow` and `realnvp_image` take either for
their couplings. A transformer's options (`log_scale_clamp`, `num_bins`,
`bound`, `min_bin_size`, `min_slope`) pass through every factory by name;
the other keyword arguments go to `FlowModel` (`base_distribution`, `dtype`,
`name`, ...). `cnf`, a continuous flow trained by flow matching or maximum
likelihood, lives in `tfp_flows.continuous` and is exported here too.
"""

import numpy as np

from tfp_flows import validation
from tfp_flows.bijectors import half_mask
from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.continuous import cnf  # noqa: F401 - flows.cnf; registers ContinuousFlowModel
from tfp_flows.layers import (
    CouplingLayer,
    MaskedAutoregressiveLayer,
    PermuteLayer,
    PlanarLayer,
    RadialLayer,
    ScaleAndShiftLayer,
)
from tfp_flows.layers.image import LogitLayer, MultiScaleLayer
from tfp_flows.model import FlowModel


def realnvp(
    dim,
    num_layers=8,
    hidden_units=(64, 64),
    activation="relu",
    standardize=None,
    context_size=None,
    transformer="affine",
    **kwargs,
):
    """RealNVP: `num_layers` couplings whose masks alternate halves, affine by default.

    Arguments:
        dim: event size.
        num_layers: number of couplings.
        hidden_units: widths of each coupling's MLP (an int means one layer).
        activation: their activation.
        standardize: optional training data [N, dim]; its mean and std set a
            fixed last step so the couplings see standardised values while
            `log_prob` stays the density of the data in its own units.
        context_size: makes every coupling conditional on a context vector of
            this size: a flow for p(x | context) (see `FlowModel`).
        transformer: the couplings' elementwise map, "affine" (with its option
            `log_scale_clamp`, 3 by default) or "spline" (see `nsf`).
        **kwargs: the transformer's options, then `FlowModel`'s arguments.
    """
    _check_dim(dim, minimum=2, family="realnvp")
    return _couplings(
        dim,
        num_layers,
        hidden_units,
        activation,
        standardize,
        context_size,
        transformer,
        kwargs,
        name="coupling",
    )


def nsf(
    dim,
    num_layers=8,
    num_bins=8,
    bound=3.0,
    hidden_units=(64, 64),
    standardize=None,
    context_size=None,
    autoregressive=False,
    **kwargs,
):
    """Neural spline flow: rational-quadratic spline couplings, or autoregressive steps.

    Durkan et al. 2019. The coupling form (the default) bends half of the
    event with monotone splines of `num_bins` bins on [-bound, bound] (the
    identity outside), conditioned on the other half; sampling and density
    are both one pass per coupling. With `autoregressive=True` it is NSF-AR,
    the paper's best density model: `maf` with the spline transformer (one
    pass for density, `dim` passes for sampling).

    Arguments:
        dim: event size.
        num_layers: number of couplings (or autoregressive steps).
        num_bins, bound: see `RationalQuadraticSpline` (also `min_bin_size`,
            `min_slope` by keyword).
        hidden_units: widths of each step's network (an int means one layer).
        standardize: optional training data [N, dim]; a fixed last step then
            standardises it, so that [-bound, bound] covers the data (see `realnvp`).
        context_size: makes every step conditional on a context vector of
            this size: a flow for p(x | context) (see `FlowModel`).
        autoregressive: False for spline couplings, True for NSF-AR.
        **kwargs: `FlowModel`'s arguments (and the spline's other options).
    """
    transformer = {"name": "spline", "num_bins": num_bins, "bound": bound}
    if autoregressive:
        return maf(
            dim,
            num_layers,
            hidden_units,
            standardize,
            context_size,
            transformer=transformer,
            **kwargs,
        )
    _check_dim(dim, minimum=2, family="nsf")
    return _couplings(
        dim,
        num_layers,
        hidden_units,
        "relu",
        standardize,
        context_size,
        transformer,
        kwargs,
        name="spline_coupling",
    )


def maf(
    dim,
    num_layers=5,
    hidden_units=(64, 64),
    standardize=None,
    context_size=None,
    inverse=False,
    transformer="affine",
    **kwargs,
):
    """Masked autoregressive flow: `num_layers` MADE steps, the event reversed between them.

    Papamakarios et al. 2017. Density (`log_prob`, training) takes one pass
    per step and sampling `dim` passes; with `inverse=True` the steps are IAF
    steps (Kingma et al. 2016): one-pass sampling, `dim`-pass density. With
    `transformer="spline"` the steps are NSF-AR's (Durkan et al. 2019).

    Arguments:
        dim: event size.
        num_layers: number of autoregressive steps.
        hidden_units: widths of each MADE (an int means one layer).
        standardize: optional training data [N, dim] (see `realnvp`).
        context_size: makes every step conditional on a context vector of
            this size: a flow for p(x | context) (see `FlowModel`).
        inverse: False for MAF, True for IAF.
        transformer: "affine" (MAF) or "spline" (NSF-AR), or a `Transformer`.
        **kwargs: the transformer's options (`num_bins`, ...), then
            `FlowModel`'s arguments.
    """
    _check_dim(dim, minimum=2, family="maf")
    transformer, model_kwargs = _transformer(transformer, kwargs)
    dtype = model_kwargs.get("dtype")
    prefix = "iaf" if inverse else ("maf" if transformer.name == "affine" else "nsf_ar")
    steps = []
    for i in range(_num_layers(num_layers)):
        if i:
            steps.append(PermuteLayer.reverse(dim, dtype=dtype, name=f"reverse_{i}"))
        steps.append(
            MaskedAutoregressiveLayer(
                _hidden_units(hidden_units),
                inverse=inverse,
                context_size=context_size,
                transformer=transformer,
                dtype=dtype,
                name=f"{prefix}_{i}",
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
    transformer="affine",
    **kwargs,
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
        transformer: the couplings' map, "affine" (Glow's) or "spline"
            (neural spline couplings); its options by keyword.
        **kwargs: the transformer's options, then `FlowModel`'s arguments.
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
    transformer="affine",
    **kwargs,
):
    """Multi-scale RealNVP over images: couplings with checkerboard, then channel masks.

    Arguments as for `glow`.
    """
    return _image_model("realnvp", **locals())


def _image_model(step, image_shape, value_range, logit_alpha, transformer, kwargs, **options):
    transformer, model_kwargs = _transformer(transformer, kwargs)
    dtype = model_kwargs.get("dtype")
    steps = [
        MultiScaleLayer(
            step=step, transformer=transformer, dtype=dtype, name=f"{step}_multi_scale", **options
        )
    ]
    if value_range is not None:
        steps.append(LogitLayer(value_range, logit_alpha, dtype=dtype, name="logit"))
    return FlowModel(steps, event_shape=tuple(image_shape), **model_kwargs)


# The discrete vector families (the generic tests run them all); `cnf` is apart.
FLOWS = {"realnvp": realnvp, "nsf": nsf, "maf": maf, "planar": planar, "radial": radial}


def _transformer(transformer, kwargs):
    """(the Transformer, the remaining keyword arguments) from a factory's arguments."""
    options, rest = transformers_lib.split_options(transformer, kwargs)
    return transformers_lib.get(transformer, **options), rest


def _couplings(
    dim, num_layers, hidden_units, activation, standardize, context_size, transformer, kwargs, name
):
    transformer, model_kwargs = _transformer(transformer, kwargs)
    dtype = model_kwargs.get("dtype")
    steps = [
        CouplingLayer(
            half_mask(dim, flip=i % 2 == 1),
            transformer,
            hidden_units=_hidden_units(hidden_units),
            activation=activation,
            context_size=context_size,
            dtype=dtype,
            name=f"{name}_{i}",
        )
        for i in range(_num_layers(num_layers))
    ]
    return _model(steps, dim, standardize, model_kwargs)


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
