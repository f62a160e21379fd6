"""Squeeze: space-to-depth on images, the reshuffle between a multi-scale flow's levels."""

import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector


def check_squeezable(height, width, where=""):
    if height % 2 or width % 2:
        raise ValueError(
            f"Squeeze halves the height and width, so both must be even{where}; "
            f"got {height}×{width}."
        )


class Squeeze(FlowBijector):
    """[..., H, W, C] → [..., H/2, W/2, 4C]: each 2×2 patch becomes 4 channels.

    `tf.nn.space_to_depth` forward and `tf.nn.depth_to_space` inverse; a
    permutation, so the log-det is 0. H and W must be even.
    """

    def __init__(self, validate_args=False, name="squeeze"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            super().__init__(
                forward_min_event_ndims=3,
                is_constant_jacobian=True,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @staticmethod
    def _apply(fn, x):
        # TF's ops want [N, H, W, C]: fold any leading shape into N.
        batch_shape, event = tf.shape(x)[:-3], tf.shape(x)[-3:]
        out = fn(tf.reshape(x, tf.concat([[-1], event], 0)), 2)
        return tf.reshape(out, tf.concat([batch_shape, tf.shape(out)[1:]], 0))

    def _zeros(self, x):
        return tf.zeros(tf.shape(x)[:-3], x.dtype)

    def _forward_and_log_det(self, x, **kwargs):
        if x.shape.rank is not None and None not in x.shape[-3:-1]:
            check_squeezable(x.shape[-3], x.shape[-2])
        return self._apply(tf.nn.space_to_depth, x), self._zeros(x)

    def _inverse_and_log_det(self, y, **kwargs):
        return self._apply(tf.nn.depth_to_space, y), self._zeros(y)

    def _forward_event_shape(self, input_shape):
        # Unknown rank or sizes stay unknown, as TFP's Reshape answers; known odd sizes
        # are refused as `forward` refuses them.
        if input_shape.rank is None:
            return input_shape
        height, width, channels = input_shape[-3:]
        if height is not None and width is not None:
            check_squeezable(height, width)
        return input_shape[:-3].concatenate(
            [_times(height, 0.5), _times(width, 0.5), _times(channels, 4)]
        )

    def _forward_event_shape_tensor(self, input_shape):
        return tf.concat([input_shape[:-3], input_shape[-3:-1] // 2, input_shape[-1:] * 4], 0)

    def _inverse_event_shape(self, output_shape):
        if output_shape.rank is None:
            return output_shape
        height, width, channels = output_shape[-3:]
        if channels is not None and channels % 4:
            raise ValueError(
                f"Squeeze's inverse turns 4 channels into a 2×2 patch, so the channels must "
                f"be a multiple of 4; got {channels}."
            )
        return output_shape[:-3].concatenate(
            [_times(height, 2), _times(width, 2), _times(channels, 0.25)]
        )

    def _inverse_event_shape_tensor(self, output_shape):
        return tf.concat([output_shape[:-3], output_shape[-3:-1] * 2, output_shape[-1:] // 4], 0)


def _times(size, factor):
    """size·factor for a known size (an int), None for an unknown one."""
    return None if size is None else int(size * factor)
