"""Affine coupling over images with a checkerboard or channel mask (RealNVP, Glow)."""

import numpy as np
import tensorflow as tf

from tfp_flows.bijectors.affine_coupling import soft_clamp
from tfp_flows.bijectors.base import FlowBijector


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


class MaskedImageCoupling(FlowBijector):
    """y = m⊙x + (1−m)⊙(x·exp(s) + t), (t, s) = network(m⊙x, m) over images [..., H, W, C].

    m is a fixed boolean mask of the event (True: conditioning, passed through);
    see `checkerboard_mask` and `channel_mask`. The network sees the masked
    image and the mask itself (so it knows which pixels it cannot see), plus
    the bijector kwargs (e.g. `context`); its log-scales are soft clamped.
    Both directions and both log-dets are closed form: log|det| = Σ (1−m)·s.

    Arguments:
        shift_and_log_scale_fn: callable mapping [..., H, W, 2C] (masked image
            and mask, channel-concatenated) to (shift, log_scale), each
            [..., H, W, C]; a convolutional Keras network in practice.
        mask: boolean array [H, W, C].
        log_scale_clamp: soft bound on the log-scales, or None.
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
        mask = np.asarray(mask)
        if mask.ndim != 3 or mask.dtype != bool or mask.all() or not mask.any():
            raise ValueError(
                "mask must be a boolean [H, W, C] array with both True (conditioning) and "
                f"False (transformed) entries, got dtype {mask.dtype} and shape {mask.shape}."
            )
        with tf.name_scope(name) as name:
            self._shift_and_log_scale_fn = shift_and_log_scale_fn
            self._mask = mask
            self._log_scale_clamp = log_scale_clamp
            super().__init__(
                forward_min_event_ndims=3,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    def _shift_and_log_scale(self, x, **kwargs):
        """(mask, shift, log_scale): shift and log_scale vanish on the conditioning part."""
        mask = tf.constant(self._mask, x.dtype)
        masked = tf.where(self._mask, x, tf.zeros_like(x))  # not x·m: Inf·0 would be NaN
        visible = tf.concat([masked, tf.broadcast_to(mask, tf.shape(x))], axis=-1)
        shift, log_scale = self._shift_and_log_scale_fn(visible, **kwargs)
        transformed = 1.0 - mask
        log_scale = soft_clamp(log_scale, self._log_scale_clamp) * transformed
        return mask, shift * transformed, log_scale

    def _forward_and_log_det(self, x, **kwargs):
        _, shift, log_scale = self._shift_and_log_scale(x, **kwargs)
        y = x * tf.exp(log_scale) + shift  # the identity where the mask is True
        return y, tf.reduce_sum(log_scale, axis=[-3, -2, -1])

    def _inverse_and_log_det(self, y, **kwargs):
        _, shift, log_scale = self._shift_and_log_scale(y, **kwargs)
        x = (y - shift) * tf.exp(-log_scale)
        return x, -tf.reduce_sum(log_scale, axis=[-3, -2, -1])
