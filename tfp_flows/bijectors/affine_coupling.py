"""Affine coupling (RealNVP, Dinh et al. 2017), the masks and the `Coupling` base class.

`Coupling` holds a mask and splits events by it; `AffineCoupling` here and
`SplineCoupling` (spline_coupling.py) differ only in the elementwise map of x_b.
"""

import numpy as np
import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector


def soft_clamp(log_scale, bound):
    """bound·tanh(log_scale/bound): the identity near 0, never beyond ±bound."""
    if bound is None:
        return log_scale
    return bound * tf.tanh(log_scale / bound)


def half_mask(event_size, flip=False):
    """True on the first half of the event (the second half when `flip`)."""
    mask = np.arange(event_size) < event_size // 2
    return ~mask if flip else mask


def parity_mask(event_size, odd=False):
    """True on the even positions of the event (the odd ones when `odd`)."""
    mask = np.arange(event_size) % 2 == 0
    return ~mask if odd else mask


class Coupling(FlowBijector):
    """Base class of the couplings over a boolean mask of a vector event.

    Positions where `mask` is True (x_a) pass through unchanged and condition
    an elementwise bijection of the rest (x_b). This class holds the mask and
    splits an event into (x_a, x_b) and merges it back; a subclass implements
    `_forward_and_log_det` and `_inverse_and_log_det` from `_split` and
    `_merge_parts`.

    Arguments:
        mask: boolean array of shape [D]; True marks the conditioning part.
            See `half_mask` and `parity_mask`. Both parts must be non-empty.
        parameters, validate_args, name: as for any `tfb.Bijector`; a
            subclass opens its name scope and passes `dict(locals())`.
    """

    def __init__(self, mask, parameters, validate_args=False, name="coupling"):
        mask = np.asarray(mask)
        if mask.ndim != 1 or mask.dtype != bool:
            raise ValueError(
                f"mask must be a 1-D boolean array over the event, got dtype "
                f"{mask.dtype} and shape {mask.shape}."
            )
        if mask.all() or not mask.any():
            raise ValueError(
                "mask must mark at least one conditioning (True) and one "
                f"transformed (False) position, got {mask.tolist()}."
            )
        self._mask = mask
        self._conditioning = np.flatnonzero(mask)
        self._transformed = np.flatnonzero(~mask)
        self._merge = np.argsort(np.concatenate([self._conditioning, self._transformed]))
        # Two contiguous blocks (a half split) need no gathers, whose
        # gradients cost many small ops in this overhead-bound regime.
        self._conditioning_first = bool(mask[0])
        self._contiguous = np.count_nonzero(np.diff(mask.astype(int))) == 1
        super().__init__(
            forward_min_event_ndims=1,
            validate_args=validate_args,
            parameters=parameters,
            name=name,
        )

    @property
    def mask(self):
        return self._mask

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


class AffineCoupling(Coupling):
    """RealNVP affine coupling over a boolean mask of a vector event.

    Positions where `mask` is True (x_a) pass through unchanged and condition
    the rest (x_b): y_a = x_a, y_b = x_b·exp(s(x_a)) + t(x_a), with
    (t, s) = shift_and_log_scale_fn(x_a, **kwargs). The log-scale is soft
    clamped, s = c·tanh(s_raw/c), so that one coupling can never blow up.

    Directions: forward and inverse are both closed form, and so are both
    log-dets: log|det dy/dx| = Σ s(x_a).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.

    Arguments:
        shift_and_log_scale_fn: any callable taking x_a of shape [..., n_a]
            (and the bijector kwargs, e.g. a conditioning `context`) and
            returning (shift, log_scale), each of shape [..., n_b]; a Keras
            network in practice.
        mask: boolean array of shape [D]; True marks the conditioning part.
            See `half_mask` and `parity_mask`. Both parts must be non-empty.
        log_scale_clamp: c above, or None for no clamp.

    Example:
        >>> import tensorflow as tf
        >>> def shift_and_log_scale(x_a):
        ...     return 0.5 * x_a, tf.sin(x_a)
        >>> coupling = AffineCoupling(shift_and_log_scale, mask=[True, False])
        >>> y = coupling.forward(tf.constant([[1.0, 2.0]]))
        >>> [round(float(v), 4) for v in y[0]]  # 2·exp(3·tanh(sin(1)/3)) + 0.5
        [1.0, 5.0413]
    """

    def __init__(
        self,
        shift_and_log_scale_fn,
        mask,
        log_scale_clamp=3.0,
        validate_args=False,
        name="affine_coupling",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._shift_and_log_scale_fn = shift_and_log_scale_fn
            self._log_scale_clamp = log_scale_clamp
            super().__init__(mask, parameters, validate_args=validate_args, name=name)

    @property
    def shift_and_log_scale_fn(self):
        return self._shift_and_log_scale_fn

    def _shift_and_log_scale(self, x_a, **kwargs):
        shift, log_scale = self._shift_and_log_scale_fn(x_a, **kwargs)
        return shift, soft_clamp(log_scale, self._log_scale_clamp)

    def _forward_and_log_det(self, x, **kwargs):
        x_a, x_b = self._split(x)
        shift, log_scale = self._shift_and_log_scale(x_a, **kwargs)
        y_b = x_b * tf.exp(log_scale) + shift
        return self._merge_parts(x_a, y_b), tf.reduce_sum(log_scale, axis=-1)

    def _inverse_and_log_det(self, y, **kwargs):
        y_a, y_b = self._split(y)
        shift, log_scale = self._shift_and_log_scale(y_a, **kwargs)
        x_b = (y_b - shift) * tf.exp(-log_scale)
        return self._merge_parts(y_a, x_b), -tf.reduce_sum(log_scale, axis=-1)
