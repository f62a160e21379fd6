"""ActNorm (Kingma & Dhariwal, "Glow", NeurIPS 2018): a per-channel affine map."""

import contextlib

import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector

_initializing = False


@contextlib.contextmanager
def data_dependent_initialization():
    """Within this block, an eager inverse pass initialises every ActNorm it meets.

    `FlowModel.fit` runs one such pass over the first batch before training
    (see `FlowModel.initialize_from_data`).
    """
    global _initializing
    previous, _initializing = _initializing, True
    try:
        yield
    finally:
        _initializing = previous


class ActNorm(FlowBijector):
    """y = x·exp(log_scale) + shift per channel of an image [..., H, W, C].

    Both directions are closed form; log|det dy/dx| = H·W·Σ log_scale.

    Data-dependent initialisation: pass `initializer`, a callable taking the
    data-side values y [..., H, W, C]. During an eager inverse inside
    `data_dependent_initialization()` it is called first, so that it can set
    shift and log_scale (owned by a Keras layer) to the mean and log std of
    its input per channel: the inverse then returns zero-mean, unit-variance
    channels on that batch.

    Arguments:
        log_scale, shift: float tensors [C] (or variables' values).
        initializer: optional callable, see above.
    """

    def __init__(self, log_scale, shift, initializer=None, validate_args=False, name="act_norm"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._log_scale, self._shift = log_scale, shift
            self._initializer = initializer
            super().__init__(
                forward_min_event_ndims=3,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    def _log_det(self, x):
        pixels = tf.cast(tf.shape(x)[-3] * tf.shape(x)[-2], x.dtype)
        log_det = pixels * tf.reduce_sum(tf.convert_to_tensor(self._log_scale, x.dtype))
        return tf.broadcast_to(log_det, tf.shape(x)[:-3])

    def _forward_and_log_det(self, x, **kwargs):
        log_scale = tf.convert_to_tensor(self._log_scale, x.dtype)
        shift = tf.convert_to_tensor(self._shift, x.dtype)
        return x * tf.exp(log_scale) + shift, self._log_det(x)

    def _inverse_and_log_det(self, y, **kwargs):
        if _initializing and self._initializer is not None and tf.executing_eagerly():
            self._initializer(y)
        log_scale = tf.convert_to_tensor(self._log_scale, y.dtype)
        shift = tf.convert_to_tensor(self._shift, y.dtype)
        return (y - shift) * tf.exp(-log_scale), -self._log_det(y)
