"""One coupling bijector for every mask and every transformer (RealNVP, NSF, Glow couplings).

`Coupling(conditioner, mask, transformer)`: positions where the boolean
`mask` is True (x_a) pass through unchanged and condition an elementwise
`Transformer` of the rest (x_b), whose raw parameters the conditioner
computes. RealNVP is `Coupling` with `Affine`, NSF with
`RationalQuadraticSpline`; a mask over an image gives Glow's and RealNVP's
checkerboard and channel couplings with either transformer.
`AffineCoupling`, `SplineCoupling` and `MaskedImageCoupling` are `Coupling`
with the transformer fixed, under the names earlier versions used.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.bijectors.base import FlowBijector

tfb = tfp.bijectors


def half_mask(event_size, flip=False):
    """True on the first half of the event (the second half when `flip`)."""
    mask = np.arange(event_size) < event_size // 2
    return ~mask if flip else mask


def parity_mask(event_size, odd=False):
    """True on the even positions of the event (the odd ones when `odd`)."""
    mask = np.arange(event_size) % 2 == 0
    return ~mask if odd else mask


def checkerboard_mask(event_shape, odd=False):
    """True on the pixels (i + j) even (odd when `odd`), every channel: [H, W, C]."""
    height, width, channels = event_shape
    board = (np.arange(height)[:, None] + np.arange(width)[None, :]) % 2 == int(odd)
    return np.repeat(board[:, :, None], channels, axis=2)


def channel_mask(event_shape, second_half=False):
    """True on the first half of the channels (the second half when `second_half`)."""
    height, width, channels = event_shape
    if channels < 2:
        raise ValueError(f"a channel mask needs at least 2 channels, got {channels}.")
    first = np.arange(channels) < channels // 2
    return np.broadcast_to(~first if second_half else first, (height, width, channels)).copy()


def raw_parameters(outputs):
    """A conditioner's outputs as one tensor: a tuple (shift, log_scale) is concatenated.

    A tuple of P tensors [..., n] is the parameter-major layout [..., P·n].
    """
    if isinstance(outputs, (tuple, list)):
        return tf.concat(list(outputs), axis=-1)
    return outputs


class Coupling(FlowBijector):
    """y_a = x_a, y_b = g(x_b; θ(x_a)): a coupling over a boolean mask of the event.

    Vector events ([D], a 1-D mask): the conditioner sees x_a [..., n_a]
    (plus the bijector kwargs, e.g. a `context`) and returns the raw
    parameters of x_b's n_b elements, [..., n_b·P] in the transformer's
    layout (or [..., n_b, P], or a tuple of P tensors [..., n_b]).

    Image events ([H, W, C], a 3-D mask, see `checkerboard_mask` and
    `channel_mask`): the conditioner sees the masked image and the mask
    itself, channel-concatenated, [..., H, W, 2C], so it knows which pixels it
    cannot see, and returns [..., H, W, C·P]; the parameters of the
    conditioning positions are ignored.

    Directions: both are one pass of the conditioner, closed form wherever
    the transformer's are (affine and spline: both); log|det dy/dx| is the
    sum of the transformer's elementwise log-derivatives over x_b.

    Arguments:
        conditioner: callable, see above; a Keras network in practice.
        mask: boolean array over the event; True marks the conditioning part.
            Both parts must be non-empty.
        transformer: a `Transformer`, or a name ("affine", "spline").

    Example:
        >>> import tensorflow as tf
        >>> def conditioner(x_a):  # shift x_a / 2, log-scale sin(x_a)
        ...     return 0.5 * x_a, tf.sin(x_a)
        >>> coupling = Coupling(conditioner, mask=[True, False], transformer="affine")
        >>> y = coupling.forward(tf.constant([[1.0, 2.0]]))
        >>> [round(float(v), 4) for v in y[0]]  # 2·exp(3·tanh(sin(1)/3)) + 0.5
        [1.0, 5.0413]
    """

    def __init__(
        self,
        conditioner,
        mask,
        transformer="affine",
        validate_args=False,
        name="coupling",
        *,
        _parameters=None,
    ):
        # A subclass passes its own arguments, so that TFP's `copy()` can rebuild it.
        parameters = _parameters or {k: v for k, v in locals().items() if k != "_parameters"}
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.ndim not in (1, 3):
            raise ValueError(
                "mask must be a boolean array over the event, [D] for vectors or [H, W, C] "
                f"for images, got dtype {mask.dtype} and shape {mask.shape}."
            )
        if mask.all() or not mask.any():
            raise ValueError(
                "mask must mark at least one conditioning (True) and one transformed (False) "
                + (
                    f"position, got {mask.tolist()}."
                    if mask.ndim == 1
                    else f"position, got dtype {mask.dtype} and shape {mask.shape}."
                )
            )
        with tf.name_scope(name) as name:
            self._conditioner = conditioner
            self._mask = mask
            self._transformer = transformers_lib.get(transformer)
            if mask.ndim == 1:
                self._conditioning = np.flatnonzero(mask)
                self._transformed = np.flatnonzero(~mask)
                self._merge = np.argsort(np.concatenate([self._conditioning, self._transformed]))
                # Two contiguous blocks (a half split) need no gathers, whose
                # gradients cost many small ops in this overhead-bound regime.
                self._conditioning_first = bool(mask[0])
                self._contiguous = np.count_nonzero(np.diff(mask.astype(int))) == 1
            super().__init__(
                forward_min_event_ndims=mask.ndim,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @property
    def mask(self):
        return self._mask

    @property
    def conditioner(self):
        return self._conditioner

    @property
    def transformer(self):
        return self._transformer

    # --- Vector events ------------------------------------------------------

    def _split(self, x):
        """(x_a, x_b): the conditioning and the transformed parts."""
        if not self._contiguous:
            return (
                tf.gather(x, self._conditioning, axis=-1),
                tf.gather(x, self._transformed, axis=-1),
            )
        sizes = [len(self._conditioning), len(self._transformed)]
        if self._conditioning_first:
            return tuple(tf.split(x, sizes, axis=-1))
        x_b, x_a = tf.split(x, sizes[::-1], axis=-1)
        return x_a, x_b

    def _merge_parts(self, x_a, x_b):
        if not self._contiguous:
            return tf.gather(tf.concat([x_a, x_b], axis=-1), self._merge, axis=-1)
        parts = [x_a, x_b] if self._conditioning_first else [x_b, x_a]
        return tf.concat(parts, axis=-1)

    def raw_parameters(self, x_a, **kwargs):
        """The conditioner's raw parameters of x_b, [..., n_b·P], given x_a (vector events)."""
        raw = raw_parameters(self._conditioner(x_a, **kwargs))
        if raw.shape.rank is not None and raw.shape.rank == x_a.shape.rank + 1:
            raw = tf.reshape(raw, tf.concat([tf.shape(raw)[:-2], [-1]], axis=0))
        return raw

    def elementwise_bijector(self, x_a, **kwargs):
        """TFP's own bijector of x_b's map given x_a, over a flat batch [N, n_b] (vectors).

        `tfb.RationalQuadraticSpline` for the spline, `Shift ∘ Scale` for the
        affine transformer: the same map as this bijector's, for inspection and
        for checking the fused one.
        """
        raw = self.raw_parameters(x_a, **kwargs)
        return self._transformer.tfp_bijector(raw, len(self._transformed))

    def spline(self, x_a, **kwargs):
        """`elementwise_bijector` of a spline coupling: TFP's `tfb.RationalQuadraticSpline`."""
        if not isinstance(self._transformer, transformers_lib.RationalQuadraticSpline):
            raise TypeError(f"{self.name} is a {self._transformer.name} coupling, not a spline.")
        return self.elementwise_bijector(x_a, **kwargs)

    def _vector(self, x, inverse, **kwargs):
        x_a, x_b = self._split(x)
        raw = self.raw_parameters(x_a, **kwargs)
        direction = "inverse_and_log_det" if inverse else "forward_and_log_det"
        y_b, log_det = getattr(self._transformer, direction)(raw, x_b)
        return self._merge_parts(x_a, y_b), tf.reduce_sum(log_det, axis=-1)

    # --- Image events -------------------------------------------------------

    def _image(self, x, inverse, **kwargs):
        mask = tf.constant(self._mask)
        masked = tf.where(mask, x, tf.zeros_like(x))  # not x·m: Inf·0 would be NaN
        visible = tf.concat([masked, tf.broadcast_to(tf.cast(mask, x.dtype), tf.shape(x))], -1)
        raw = raw_parameters(self._conditioner(visible, **kwargs))
        direction = "inverse_and_log_det" if inverse else "forward_and_log_det"
        y, log_det = getattr(self._transformer, direction)(raw, x)
        # The conditioning positions pass through exactly, with no log-det.
        y = tf.where(mask, x, y)
        log_det = tf.where(mask, tf.zeros_like(log_det), log_det)
        return y, tf.reduce_sum(log_det, axis=[-3, -2, -1])

    def _forward_and_log_det(self, x, **kwargs):
        if self._mask.ndim == 1:
            return self._vector(x, inverse=False, **kwargs)
        return self._image(x, inverse=False, **kwargs)

    def _inverse_and_log_det(self, y, **kwargs):
        if self._mask.ndim == 1:
            return self._vector(y, inverse=True, **kwargs)
        return self._image(y, inverse=True, **kwargs)


class AffineCoupling(Coupling):
    """RealNVP's affine coupling: `Coupling` with the `Affine` transformer.

    y_a = x_a, y_b = x_b·exp(s(x_a)) + t(x_a), (t, s) =
    shift_and_log_scale_fn(x_a, **kwargs), s soft clamped to ±log_scale_clamp.
    Both directions and log-dets are closed form: log|det dy/dx| = Σ s(x_a).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.

    Example: see `Coupling`'s (the same coupling, its transformer named).
    """

    def __init__(
        self,
        shift_and_log_scale_fn,
        mask,
        log_scale_clamp=3.0,
        validate_args=False,
        name="affine_coupling",
    ):
        super().__init__(
            shift_and_log_scale_fn,
            mask,
            transformers_lib.Affine(log_scale_clamp),
            validate_args=validate_args,
            name=name,
            _parameters=dict(locals()),
        )

    @property
    def shift_and_log_scale_fn(self):
        return self._conditioner


class SplineCoupling(Coupling):
    """The neural spline coupling (Durkan et al. 2019): `Coupling` with `RationalQuadraticSpline`.

    Each y_b,j = g_j(x_b,j), g_j a monotone rational-quadratic spline of K
    bins on [-bound, bound] and the identity outside, whose parameters
    spline_parameters_fn(x_a, **kwargs) computes: [..., n_b, 3K − 1] (or
    flattened) unconstrained values, per transformed element K widths, K
    heights, K − 1 slopes (see `RationalQuadraticSpline`). `spline(x_a)`
    returns TFP's `tfb.RationalQuadraticSpline` of the same map.

    Example:
        >>> import tensorflow as tf
        >>> def identity_parameters(x_a):  # zeros: equal bins, slopes 1
        ...     return tf.zeros(tf.concat([tf.shape(x_a)[:-1], [1, 3 * 4 - 1]], 0))
        >>> coupling = SplineCoupling(identity_parameters, [True, False], num_bins=4)
        >>> y = coupling.forward(tf.constant([[1.0, 2.0], [0.5, 7.0]]))
        >>> [[round(float(v), 4) for v in row] for row in y]
        [[1.0, 2.0], [0.5, 7.0]]
    """

    def __init__(
        self,
        spline_parameters_fn,
        mask,
        num_bins=8,
        bound=3.0,
        min_bin_size=1e-3,
        min_slope=1e-3,
        validate_args=False,
        name="spline_coupling",
    ):
        super().__init__(
            spline_parameters_fn,
            mask,
            transformers_lib.RationalQuadraticSpline(num_bins, bound, min_bin_size, min_slope),
            validate_args=validate_args,
            name=name,
            _parameters=dict(locals()),
        )

    @property
    def spline_parameters_fn(self):
        return self._conditioner

    @property
    def num_bins(self):
        return self._transformer.num_bins

    @property
    def bound(self):
        return self._transformer.bound


class MaskedImageCoupling(Coupling):
    """The affine coupling over an image mask [H, W, C]: `Coupling` with `Affine`.

    y = m⊙x + (1−m)⊙(x·exp(s) + t), (t, s) = shift_and_log_scale_fn(masked
    image and mask, [..., H, W, 2C], **kwargs), each [..., H, W, C].
    """

    def __init__(
        self,
        shift_and_log_scale_fn,
        mask,
        log_scale_clamp=3.0,
        validate_args=False,
        name="masked_image_coupling",
    ):
        parameters = dict(locals())
        if np.ndim(mask) != 3:  # the rest of the mask's checks are Coupling's
            raise ValueError(f"mask must be an [H, W, C] array, got shape {np.shape(mask)}.")
        super().__init__(
            shift_and_log_scale_fn,
            mask,
            transformers_lib.Affine(log_scale_clamp),
            validate_args=validate_args,
            name=name,
            _parameters=parameters,
        )
