"""The one registry of flow steps: every bijector joins it and inherits the generic tests.

A testing module (`tfp_flows.testing.registry`), not part of the package's
modelling API: the generic tests (`tests/test_registry.py`,
`tests/test_properties.py`) loop over it, so a new family costs one
transformer (or bijector and layer) and one entry here.

Each entry builds a Keras `FlowLayer` and says which event shape it is tested
at (`event_shape(name, event_size)`): a vector step takes any event size from
its `min_event_size` up, `(event_size,)`; an image step has one small fixed
`image_shape` [H, W, C] and ignores the size asked for. The layer's `bijector`
is the pure TFP bijector under test. `tests/test_registry.py` checks every
entry, at its event shape, for the inverse round trip, the log-det against the
autodiff Jacobian, forward/inverse log-det consistency, leading batch
dimensions, gradients reaching every weight, and `.keras` save/load;
`tests/test_properties.py` draws the event sizes of the vector steps.

A step whose inverse accepts only part of the space (the logit step's pixel
range) declares it as `data_range`: made-up data-side points must come from it.

A conditional entry (`context_size` set) is tested as the bijection it is for
one fixed context: `bijector_under_test(layer)` binds `fixed_context(...)`
to its context keyword, and models built from it get the same context
(`context_kwargs`). Per-example contexts are tested in
`tests/test_conditional.py`.
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import half_mask, parity_mask
from tfp_flows.layers import (
    AffineCouplingLayer,
    ContinuousFlowLayer,
    CouplingLayer,
    FlowLayer,
    MaskedAutoregressiveLayer,
    PermuteLayer,
    PlanarLayer,
    RadialLayer,
    ScaleAndShiftLayer,
    SplineCouplingLayer,
)
from tfp_flows.layers.image import (
    ActNormLayer,
    ImageCouplingLayer,
    InvertibleConv1x1Layer,
    LogitLayer,
    MultiScaleLayer,
)

tfb = tfp.bijectors

CONTEXT_SIZE = 3  # of the conditional entries
IMAGE_SHAPE = (4, 4, 4)  # of the single image steps: 64 dimensions keep float64 Jacobians cheap
GLOW_SHAPE = (4, 4, 2)  # squeezed to [2, 2, 8] at the first level, half of it to [1, 1, 16]
# RealNVP's checkerboard masks need 2×2 pixels at the last level, so 8×8 for two levels.
REALNVP_IMAGE_SHAPE = (8, 8, 1)
# A 3×3 convolution sums over 9·channels inputs, so a ResNet with weights of stddev 0.5 maps
# O(1) images to shifts of O(100), whose float32 rounding alone exceeds the round trip's
# 1e-5. At a fifth of the scale the image couplings' outputs stay O(1), as the vector steps' do.
RESNET_WEIGHT_SCALE = 0.2
PIXEL_RANGE = 256.0  # of the logit step: dequantised 8-bit pixels
# The continuous steps' fields: at a fifth of the scale their Lipschitz constants stay O(1)
# (an ODE's Jacobian grows like exp(Lipschitz constant)), as the couplings' maps are.
CNF_WEIGHT_SCALE = 0.2
# The adaptive solver's tolerances per dtype, and the errors they give relative to the tests'
# scales (measured at most 8e-5 in float32 and 1.1e-8 in float64 at the hypothesis tests'
# largest weights: an adaptive solver bounds each step's error, not the sum, so the global
# error exceeds rtol); 16 RK4 steps give errors up to 7e-6 there, in either dtype.
CNF_TOLERANCES = {
    "float32": {"rtol": 2e-6, "atol": 2e-6},
    "float64": {"rtol": 1e-10, "atol": 1e-10},
}
DOPRI5_ERROR = {"float32": 3e-4, "float64": 1e-7}
RK4_ERROR = {"float32": 1e-4, "float64": 5e-5}


@dataclasses.dataclass(frozen=True)
class Entry:
    """How to build one flow step for the generic tests, and where they may evaluate it.

    Attributes:
        make_layer: (event_size, dtype) -> unbuilt layer; layers that read the
            event from their input shape when built (planar, image steps) ignore it.
        min_event_size: the smallest event size a vector step can be built for.
        image_shape: the one event shape [H, W, C] an image step is tested at;
            None for a vector step, tested at (event_size,).
        weight_scale: multiplies `build_random`'s stddev, for steps whose
            networks need smaller weights to stay O(1) (see RESNET_WEIGHT_SCALE).
        data_range: (low, high) when the inverse only accepts data-side points
            (its inputs, the data of `log_prob`) with every value in [low, high);
            None when any point is data.
        solver_tolerance: for a step computed by a numerical solver (the
            continuous flow's ODE), {dtype name: error}: how far its round
            trips and its log-det from the autodiff Jacobian's may be off, in
            units of the values' magnitude (at least 1). None (the default)
            for steps exact to rounding, which keep the rounding tolerances.
        constant_jacobian: True for a step whose log-det does not depend on x
            (it must then say so to TFP: `is_constant_jacobian`).
    """

    make_layer: Callable[..., FlowLayer]
    min_event_size: int = 1
    image_shape: tuple[int, ...] | None = None
    weight_scale: float = 1.0
    data_range: tuple[float, float] | None = None
    solver_tolerance: dict[str, float] | None = None
    constant_jacobian: bool = False


def _image_step(make_layer, image_shape=IMAGE_SHAPE, **options):
    """An entry for the image step `make_layer(dtype=...)`, tested at `image_shape`."""
    return Entry(lambda size, dtype: make_layer(dtype=dtype), image_shape=image_shape, **options)


def _resnet_step(layer_class, *args, **kwargs):
    """An image step with small ResNets, `layer_class(*args, hidden_channels=8, ...)`."""
    return functools.partial(layer_class, *args, hidden_channels=8, **kwargs)


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
    # The generic coupling with the spline transformer, by its new name.
    "coupling_spline_parity": Entry(
        lambda size, dtype: CouplingLayer(
            parity_mask(size, odd=True), "spline", num_bins=3, hidden_units=(8,), dtype=dtype
        ),
        min_event_size=2,
    ),
    "maf": Entry(
        lambda size, dtype: MaskedAutoregressiveLayer((16, 16), dtype=dtype), min_event_size=2
    ),
    # NSF-AR: the autoregressive step with the spline transformer.
    "nsf_ar": Entry(
        lambda size, dtype: MaskedAutoregressiveLayer(
            (16, 16), transformer="spline", num_bins=5, dtype=dtype
        ),
        min_event_size=2,
    ),
    "nsf_ar_conditional": Entry(
        lambda size, dtype: MaskedAutoregressiveLayer(
            (16,), transformer="spline", num_bins=4, context_size=CONTEXT_SIZE, dtype=dtype
        ),
        min_event_size=2,
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
    "permute": Entry(
        lambda size, dtype: PermuteLayer.reverse(size, dtype=dtype), constant_jacobian=True
    ),
    "scale_and_shift": Entry(
        lambda size, dtype: ScaleAndShiftLayer(
            np.linspace(0.5, 2.0, size), np.linspace(-1.0, 1.0, size), dtype=dtype
        ),
        constant_jacobian=True,
    ),
    "act_norm": _image_step(ActNormLayer, constant_jacobian=True),
    "conv_1x1": _image_step(InvertibleConv1x1Layer, constant_jacobian=True),
    "image_coupling_checkerboard": _image_step(
        _resnet_step(ImageCouplingLayer, "checkerboard"), weight_scale=RESNET_WEIGHT_SCALE
    ),
    "image_coupling_channel": _image_step(
        _resnet_step(ImageCouplingLayer, "channel", parity=True), weight_scale=RESNET_WEIGHT_SCALE
    ),
    "image_coupling_conditional": _image_step(
        _resnet_step(ImageCouplingLayer, "checkerboard", parity=True, context_size=CONTEXT_SIZE),
        weight_scale=RESNET_WEIGHT_SCALE,
    ),
    "image_coupling_spline": _image_step(
        _resnet_step(ImageCouplingLayer, "checkerboard", transformer="spline", num_bins=4),
        weight_scale=RESNET_WEIGHT_SCALE,
    ),
    # The multi-scale layer of each image factory (flows.glow, flows.realnvp_image), at two
    # levels and few steps: the single steps above are tested on their own.
    "glow": _image_step(
        _resnet_step(MultiScaleLayer, levels=2, steps_per_level=1, step="glow"),
        image_shape=GLOW_SHAPE,
        weight_scale=RESNET_WEIGHT_SCALE,
    ),
    "glow_conditional": _image_step(
        _resnet_step(
            MultiScaleLayer, levels=2, steps_per_level=1, step="glow", context_size=CONTEXT_SIZE
        ),
        image_shape=GLOW_SHAPE,
        weight_scale=RESNET_WEIGHT_SCALE,
    ),
    "glow_spline": _image_step(
        _resnet_step(
            MultiScaleLayer, levels=2, steps_per_level=1, step="glow", transformer="spline"
        ),
        image_shape=GLOW_SHAPE,
        weight_scale=RESNET_WEIGHT_SCALE,
    ),
    "realnvp_image": _image_step(
        _resnet_step(MultiScaleLayer, levels=2, steps_per_level=2, step="realnvp"),
        image_shape=REALNVP_IMAGE_SHAPE,
        weight_scale=RESNET_WEIGHT_SCALE,
    ),
    "logit": _image_step(functools.partial(LogitLayer, PIXEL_RANGE), data_range=(0.0, PIXEL_RANGE)),
    # One step of the cnf factory's family (the adaptive solver), and a conditional one
    # on the fixed-step solver.
    "cnf": Entry(
        lambda size, dtype: ContinuousFlowLayer(
            (16,), "tanh", solver="dopri5", **CNF_TOLERANCES[dtype], dtype=dtype
        ),
        weight_scale=CNF_WEIGHT_SCALE,
        solver_tolerance=DOPRI5_ERROR,
    ),
    "cnf_conditional": Entry(
        lambda size, dtype: ContinuousFlowLayer(
            (16,), "silu", solver="rk4", num_steps=16, context_size=CONTEXT_SIZE, dtype=dtype
        ),
        weight_scale=CNF_WEIGHT_SCALE,
        solver_tolerance=RK4_ERROR,
    ),
}


def event_shape(name, event_size):
    """The named entry's event shape: (event_size,) for a vector step, its image shape else."""
    entry = REGISTRY[name]
    if entry.image_shape is not None:
        return entry.image_shape
    if event_size < entry.min_event_size:
        raise ValueError(f"{name} needs an event size of at least {entry.min_event_size}.")
    return (event_size,)


def build_random(name, event_size, dtype="float32", seed=0, stddev=0.5):
    """Builds the named entry's layer at `event_shape(name, event_size)`, away from the identity.

    Only trainable weights are drawn at random: the non-trainable ones hold what
    must stay fixed (the 1×1 convolution's permutation and signs, ActNorm's flag).
    """
    entry = REGISTRY[name]
    shape = event_shape(name, event_size)
    layer = entry.make_layer(math.prod(shape), dtype)
    layer.build((None, *shape))
    rng = np.random.default_rng(seed)
    for weight in layer.trainable_weights:
        weight.assign(entry.weight_scale * stddev * rng.standard_normal(weight.shape).astype(dtype))
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
            forward_min_event_ndims=bijector.forward_min_event_ndims,
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
        return self._bijector.forward_log_det_jacobian(
            x, event_ndims=self.forward_min_event_ndims, context=self._context
        )

    def _inverse_log_det_jacobian(self, y):
        return self._bijector.inverse_log_det_jacobian(
            y, event_ndims=self.inverse_min_event_ndims, context=self._context
        )
