"""Elementwise transformers: the invertible maps that coupling and autoregressive steps apply.

A flow family is a choice of transformer: RealNVP is a coupling with the
affine transformer, NSF a coupling with the rational-quadratic spline, MAF
an autoregressive step with the affine transformer and NSF-AR the same step
with the spline. A transformer is a small immutable object (no weights, no
Keras state) that

* states how many raw parameters it needs per transformed element
  (`num_parameters`) and how a network's flat output is laid out
  (`layout`: "parameter_major", [p₁ of every element, p₂ of every element,
  ...], or "element_major", [all parameters of element 1, element 2, ...]);
* maps (raw parameters, x) → (y, log|dy/dx|) elementwise in both directions
  (`forward_and_log_det`, `inverse_and_log_det`), raw parameters of shape
  [..., n·P] in its layout for values [..., n] (the last axis is the
  transformed elements'; images pass channels there);
* is the identity when its raw parameters are all zero, so that a step whose
  network's last layer starts at zero starts as the identity;
* may ask for its raw parameters to be scaled (`parameter_scale`), as the
  spline's bin logits are.

Any raw values give a valid, strictly increasing map. Options are the
dataclass fields (`options()`), which factories, layers and the CLI pass
through by name (`get`, `split_options`).

Adding a family: write one transformer here (or anywhere: `register`) and
give it a registry entry (`tfp_flows.testing.registry`); every coupling and
autoregressive factory, the layers, the CLI and the generic tests take it.

References:
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.
"""

import dataclasses
import inspect
import math
from typing import ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors.rational_quadratic import rational_quadratic_spline

tfb = tfp.bijectors


def soft_clamp(log_scale, bound):
    """bound·tanh(log_scale/bound): the identity near 0, never beyond ±bound."""
    if bound is None:
        return log_scale
    return bound * tf.tanh(log_scale / bound)


DEFAULT = type("Default", (), {"__repr__": lambda self: "DEFAULT"})()  # "not given"


class Transformer:
    """Base class: an elementwise, invertible, parameterised map (see the module docstring).

    Subclasses are frozen dataclasses whose fields are their options; they set
    `name`, `layout`, implement `num_parameters` and the two directions, and
    may override `parameter_scale` and `check`.
    """

    name: ClassVar[str] = ""
    layout: ClassVar[str] = "parameter_major"

    @property
    def num_parameters(self):
        """P: raw parameters per transformed element."""
        raise NotImplementedError

    def forward_and_log_det(self, raw, x):
        """(y, log|dy/dx|), both shaped as x [..., n], from raw parameters [..., n·P]."""
        raise NotImplementedError

    def inverse_and_log_det(self, raw, y):
        """(x, log|dx/dy|), both shaped as y [..., n], from raw parameters [..., n·P]."""
        raise NotImplementedError

    def tfp_bijector(self, raw, num_elements):
        """TFP's own elementwise bijector of the same map, for a flat batch [N, n] (optional)."""
        raise NotImplementedError(f"the {self.name} transformer has no TFP counterpart.")

    def parameter_scale(self, fan_in):
        """Multipliers [P] for one element's raw parameters, or None (all ones).

        `fan_in` is the width of the layer that computes them (the network's
        last hidden layer).
        """
        return None

    # --- Derived: layouts, options -------------------------------------------

    def raw_size(self, num_elements):
        return num_elements * self.num_parameters

    def element_index(self, num_elements):
        """For each of the n·P raw parameters, the element (0..n-1) it belongs to."""
        elements = np.arange(num_elements)
        if self.layout == "parameter_major":
            return np.tile(elements, self.num_parameters)
        return np.repeat(elements, self.num_parameters)

    def raw_scale(self, num_elements, fan_in):
        """Multipliers [n·P] of a network's flat output, in this layout, or None."""
        scale = self.parameter_scale(fan_in)
        if scale is None:
            return None
        scale = np.asarray(scale, np.float64)
        if self.layout == "parameter_major":
            return np.repeat(scale, num_elements)
        return np.tile(scale, num_elements)

    def options(self):
        """This transformer's options, {field: value}."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def get_config(self):
        return {"name": self.name, **self.options()}

    def check(self):
        """Raises a ValueError naming the first option that makes no valid map."""


@dataclasses.dataclass(frozen=True)
class Affine(Transformer):
    """y = x·exp(s) + t, with s soft clamped to ±log_scale_clamp (s = c·tanh(s_raw/c)).

    Raw parameters per element: (t, s_raw), parameter-major (all shifts, then
    all log-scales: a network's output splits in two halves). log|dy/dx| = s.
    Both directions are closed form. The clamp keeps any one step from
    blowing up (an unbounded exp went NaN in 1 of 3 TFP MAF runs).

    Arguments:
        log_scale_clamp: c, or None for no clamp.
    """

    name: ClassVar[str] = "affine"
    log_scale_clamp: float | None = 3.0

    @property
    def num_parameters(self):
        return 2

    def check(self):
        if self.log_scale_clamp is not None and not self.log_scale_clamp > 0:
            raise ValueError(
                f"log_scale_clamp must be positive or None, got {self.log_scale_clamp!r}."
            )

    def shift_and_log_scale(self, raw):
        shift, log_scale = tf.split(raw, 2, axis=-1)
        return shift, soft_clamp(log_scale, self.log_scale_clamp)

    def forward_and_log_det(self, raw, x):
        shift, log_scale = self.shift_and_log_scale(raw)
        return x * tf.exp(log_scale) + shift, log_scale

    def inverse_and_log_det(self, raw, y):
        shift, log_scale = self.shift_and_log_scale(raw)
        return (y - shift) * tf.exp(-log_scale), -log_scale

    def tfp_bijector(self, raw, num_elements):
        shift, log_scale = self.shift_and_log_scale(tf.reshape(raw, [-1, 2 * num_elements]))
        return tfb.Chain([tfb.Shift(shift), tfb.Scale(log_scale=log_scale)])


@dataclasses.dataclass(frozen=True)
class RationalQuadraticSpline(Transformer):
    """A monotone rational-quadratic spline of K bins on [-bound, bound], the identity outside.

    TFP's `tfb.RationalQuadraticSpline` map (linear tails, end slopes 1, so
    the map is C¹), computed by `rational_quadratic_spline`, which gives the
    value and the log-det in one pass. Raw parameters per element,
    element-major: K widths, K heights, K − 1 interior knot slopes:

        widths  = m + (2·bound − K·m)·softmax(raw widths),  m = min_bin_size
        heights = the same with the raw heights
        slopes  = min_slope + softplus(raw slopes + log(exp(1 − min_slope) − 1))

    so raw zeros give equal bins and every slope 1: the identity. Both
    directions are closed form (the inverse solves a quadratic per element).
    As in Durkan et al.'s own code (nflows), `parameter_scale` divides the
    raw widths and heights by √H, H the width of the network's last hidden
    layer, so random or early weights give bins of comparable sizes rather
    than near-flat bins whose inverse loses most of its digits.

    Arguments:
        num_bins: K, at least 2.
        bound: the spline acts on [-bound, bound]; with standardised data 3
            covers most of it.
        min_bin_size: the least width and height of a bin.
        min_slope: the least slope at a knot, in (0, 1).
    """

    name: ClassVar[str] = "spline"
    layout: ClassVar[str] = "element_major"
    num_bins: int = 8
    bound: float = 3.0
    min_bin_size: float = 1e-3
    min_slope: float = 1e-3

    def __post_init__(self):
        self.check()
        object.__setattr__(self, "num_bins", int(self.num_bins))
        object.__setattr__(self, "bound", float(self.bound))

    @property
    def num_parameters(self):
        return 3 * self.num_bins - 1

    def check(self):
        num_bins, bound = self.num_bins, self.bound
        if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 2:
            raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}.")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound!r}.")
        if not 0 < self.min_bin_size * num_bins < 2 * bound:
            raise ValueError(
                f"min_bin_size must be positive and num_bins·min_bin_size below 2·bound, "
                f"got min_bin_size={self.min_bin_size!r} for {num_bins} bins on "
                f"[-{bound}, {bound}]."
            )
        if not 0 < self.min_slope < 1:
            raise ValueError(f"min_slope must be in (0, 1), got {self.min_slope!r}.")

    def parameter_scale(self, fan_in):
        return np.concatenate(
            [np.full(2 * self.num_bins, 1.0 / math.sqrt(fan_in)), np.ones(self.num_bins - 1)]
        )

    def knots(self, raw, num_elements):
        """Bin widths, heights [N, n, K] and interior slopes [N, n, K − 1] from raw [..., n·P]."""
        num_bins = self.num_bins
        raw = tf.reshape(raw, [-1, num_elements, self.num_parameters])
        raw_widths, raw_heights, raw_slopes = tf.split(
            raw, [num_bins, num_bins, num_bins - 1], axis=-1
        )
        span = 2.0 * self.bound - num_bins * self.min_bin_size
        # softplus(0 + offset) = 1 - min_slope: a zero raw slope is a slope of 1.
        offset = math.log(math.expm1(1.0 - self.min_slope))
        return (
            self.min_bin_size + span * tf.math.softmax(raw_widths, axis=-1),
            self.min_bin_size + span * tf.math.softmax(raw_heights, axis=-1),
            self.min_slope + tf.math.softplus(raw_slopes + offset),
        )

    def _apply(self, raw, points, inverse):
        # Fold the batch shape (which may be unknown in a tf.function traced with
        # reduce_retracing) into one axis: the knots are [N, n, K].
        num_elements = points.shape[-1] if points.shape.rank is not None else None
        if num_elements is None:
            num_elements = tf.shape(points)[-1]
        flat = tf.reshape(points, [-1, num_elements])
        values, log_det = rational_quadratic_spline(
            flat, *self.knots(raw, num_elements), self.bound, inverse=inverse
        )
        shape = tf.shape(points)
        return tf.reshape(values, shape), tf.reshape(log_det, shape)

    def tfp_bijector(self, raw, num_elements):
        widths, heights, slopes = self.knots(raw, num_elements)
        return tfb.RationalQuadraticSpline(
            widths, heights, slopes, range_min=tf.constant(-self.bound, widths.dtype)
        )

    def forward_and_log_det(self, raw, x):
        return self._apply(raw, x, inverse=False)

    def inverse_and_log_det(self, raw, y):
        return self._apply(raw, y, inverse=True)


TRANSFORMERS = {"affine": Affine, "spline": RationalQuadraticSpline}


def register(transformer_class):
    """Adds a `Transformer` subclass to `TRANSFORMERS` under its `name`; returns it."""
    if not (isinstance(transformer_class, type) and issubclass(transformer_class, Transformer)):
        raise TypeError(f"not a Transformer subclass: {transformer_class!r}.")
    TRANSFORMERS[transformer_class.name] = transformer_class
    return transformer_class


def option_names(transformer):
    """The options a transformer (a name, class or instance) takes."""
    return tuple(field.name for field in dataclasses.fields(_class(transformer)))


def split_options(transformer, kwargs):
    """({options of the transformer}, {the rest}) from a factory's or layer's keyword arguments."""
    names = set(option_names(transformer))
    return (
        {key: value for key, value in kwargs.items() if key in names},
        {key: value for key, value in kwargs.items() if key not in names},
    )


def get(transformer="affine", **options):
    """A `Transformer` from a name ("affine", "spline"), a config dict, or an instance.

    Options the transformer does not take are refused by name.
    """
    if isinstance(transformer, Transformer):
        if options:
            return dataclasses.replace(transformer, **options)
        return transformer
    if isinstance(transformer, dict):
        config = dict(transformer)
        transformer = config.pop("name", None)
        options = {**config, **options}
    transformer_class = _class(transformer)
    unknown = sorted(set(options) - set(option_names(transformer_class)))
    if unknown:
        raise ValueError(
            f"the {transformer_class.name} transformer takes no option "
            f"{', '.join(unknown)}; its options are {', '.join(option_names(transformer_class))}."
        )
    instance = transformer_class(**options)
    instance.check()
    return instance


def _class(transformer):
    if isinstance(transformer, Transformer):
        return type(transformer)
    if isinstance(transformer, dict):
        transformer = transformer.get("name")
    if isinstance(transformer, type) and issubclass(transformer, Transformer):
        return transformer
    if transformer not in TRANSFORMERS:
        raise ValueError(
            f"unknown transformer {transformer!r}; choose one of {', '.join(TRANSFORMERS)}."
        )
    return TRANSFORMERS[transformer]


def defaults(transformer):
    """{option: default} of a transformer (name, class or instance)."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(_class(transformer)).parameters.items()
    }
