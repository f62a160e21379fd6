"""ActNorm (Kingma & Dhariwal, "Glow", NeurIPS 2018): a per-channel affine map."""

import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector


class ActNorm(FlowBijector):
    """y = x·exp(log_scale) + shift per channel of an image [..., H, W, C].

    Both directions are closed form; log|det dy/dx| = H·W·Σ log_scale.

    Data-dependent initialisation is the owning layer's business
    (`ActNormLayer.initialize_from_data`, which `FlowModel.fit` calls with the
    values reaching the step on the first batch).

    Arguments:
        log_scale, shift: float tensors [C] (or variables' values).
    """

    def __init__(self, log_scale, shift, validate_args=False, name="act_norm"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._log_scale, self._shift = log_scale, shift
            super().__init__(
                forward_min_event_ndims=3,
                is_constant_jacobian=True,  # log|det| depends on the parameters, not on x
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
        log_scale = tf.convert_to_tensor(self._log_scale, y.dtype)
        shift = tf.convert_to_tensor(self._shift, y.dtype)
        return (y - shift) * tf.exp(-log_scale), -self._log_det(y)
