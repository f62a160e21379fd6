"""Reversal of a vector event, the permutation MAF puts between its steps."""

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


class Reverse(tfb.Bijector):
    """y = x[..., ::-1]: TFP's `tfb.Permute([D − 1, ..., 0])`, computed by `tf.reverse`.

    The same map as the `tfb.Permute`, made cheaper to train through: with a
    batch of unknown size, the gradient of `tf.gather` (which `tfb.Permute`
    uses) takes ~25 graph ops, that of `tf.reverse` one. The log-det is 0.

    Example:
        >>> import tensorflow as tf
        >>> [float(v) for v in Reverse().forward(tf.constant([1.0, 2.0, 3.0]))]
        [3.0, 2.0, 1.0]
    """

    def __init__(self, validate_args=False, name="reverse"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            super().__init__(
                forward_min_event_ndims=1,
                is_constant_jacobian=True,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    def _forward(self, x):
        return tf.reverse(x, axis=[-1])

    def _inverse(self, y):
        return tf.reverse(y, axis=[-1])

    def _forward_log_det_jacobian(self, x):
        return tf.zeros([], dtype=x.dtype)

    def _inverse_log_det_jacobian(self, y):
        return tf.zeros([], dtype=y.dtype)
