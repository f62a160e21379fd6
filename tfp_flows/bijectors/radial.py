"""Radial flow (Rezende & Mohamed, 2015) with an exact inverse."""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import assert_util, dtype_util, tensor_util

from tfp_flows.bijectors.base import FlowBijector


class Radial(FlowBijector):
    """Radial flow: y = z + β̂·h(α, r)·(z − z0), h = 1/(α + r), r = ‖z − z0‖.

    `beta` is reparameterised to β̂ = −α + softplus(β) > −α, which makes the
    map strictly invertible (Rezende & Mohamed 2015, appendix A).

    Directions:
        forward (base → data): closed form, with
        log|det| = (D − 1)·log(1 + β̂h) + log(1 + β̂h − β̂r/(α + r)²).
        inverse (data → base): closed form as well. Taking norms,
        ‖y − z0‖ = r·(1 + β̂/(α + r)), a quadratic in r with exactly one
        non-negative root, computed in the cancellation-free form; then
        z = z0 + (y − z0)/(1 + β̂h(r)).

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.

    Arguments:
        z0: float tensor of shape [..., D], the centre.
        alpha: positive float tensor of shape [...] (pass e.g.
            `tfp.util.DeferredTensor(raw, tf.math.softplus)` to train it).
        beta: unconstrained float tensor of shape [...].

    Example:
        >>> import tensorflow as tf
        >>> flow = Radial(z0=[0.0, 1.0], alpha=0.5, beta=2.0)
        >>> x = tf.constant([[0.2, -1.0]])
        >>> bool(tf.reduce_all(tf.abs(flow.inverse(flow.forward(x)) - x) < 1e-5))
        True
    """

    def __init__(self, z0, alpha, beta, validate_args=False, name="radial"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([z0, alpha, beta], dtype_hint=tf.float32)
            self._z0 = tensor_util.convert_nonref_to_tensor(z0, dtype=dtype, name="z0")
            self._alpha = tensor_util.convert_nonref_to_tensor(alpha, dtype=dtype, name="alpha")
            self._beta = tensor_util.convert_nonref_to_tensor(beta, dtype=dtype, name="beta")
            super().__init__(
                forward_min_event_ndims=1,
                dtype=dtype,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict(
            z0=tfp.util.ParameterProperties(event_ndims=1),
            alpha=tfp.util.ParameterProperties(event_ndims=0),
            beta=tfp.util.ParameterProperties(event_ndims=0),
        )

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args or is_init == tensor_util.is_ref(self._alpha):
            return []
        return [assert_util.assert_positive(self._alpha, message="alpha must be positive.")]

    @property
    def z0(self):
        return self._z0

    @property
    def alpha(self):
        return self._alpha

    @property
    def beta(self):
        return self._beta

    def _params(self):
        alpha = tf.convert_to_tensor(self._alpha)
        beta_hat = tf.math.softplus(tf.convert_to_tensor(self._beta)) - alpha
        return tf.convert_to_tensor(self._z0), alpha, beta_hat

    def _log_det(self, r, alpha, beta_hat, event_size):
        h = 1.0 / (alpha + r)
        scale = 1.0 + beta_hat * h
        # β̂·r·h² as (β̂·h)·(r·h): no r² to overflow far from the centre, and r·h = 1
        # for a norm that overflowed to Inf.
        r_h = tf.where(tf.math.is_inf(r), tf.ones_like(r), r * h)
        return (event_size - 1.0) * tf.math.log(scale) + tf.math.log(scale - (beta_hat * h) * r_h)

    def _forward_and_log_det(self, x):
        z0, alpha, beta_hat = self._params()
        offset = x - z0
        r = _norm(offset)
        y = z0 + (1.0 + beta_hat / (alpha + r))[..., tf.newaxis] * offset
        event_size = tf.cast(tf.shape(x)[-1], x.dtype)
        return y, self._log_det(r, alpha, beta_hat, event_size)

    def _inverse_and_log_det(self, y):
        z0, alpha, beta_hat = self._params()
        offset = y - z0
        r_y = _norm(offset)
        # r² + (α + β̂ − r_y)·r − α·r_y = 0: take the non-negative root without
        # cancelling two nearly equal numbers, and without squaring r_y (which
        # would overflow far from the centre).
        overflowed = tf.math.is_inf(r_y)  # a finite point whose norm exceeds the dtype
        finite_r_y = tf.where(overflowed, tf.zeros_like(r_y), r_y)
        linear = alpha + beta_hat - finite_r_y
        scale = tf.maximum(tf.abs(linear), 1.0)  # 1 near the centre: the plain formula
        discriminant = scale * tf.sqrt(
            tf.square(linear / scale) + 4.0 * alpha * ((finite_r_y / scale) / scale)
        )
        r = tf.where(
            linear > 0,
            2.0 * alpha * (finite_r_y / (linear + discriminant)),
            0.5 * (discriminant - linear),
        )
        r = tf.where(overflowed, r_y, r)
        x = z0 + offset / (1.0 + beta_hat / (alpha + r))[..., tf.newaxis]
        event_size = tf.cast(tf.shape(y)[-1], y.dtype)
        return x, -self._log_det(r, alpha, beta_hat, event_size)


def _norm(v):
    """Euclidean norm over the last axis, with a finite gradient at 0 and no overflow.

    The largest magnitude is factored out, so points far from the centre
    (coordinates beyond 1e19 in float32) keep a finite norm.
    """
    largest = tf.reduce_max(tf.abs(v), axis=-1)
    positive = largest > 0
    safe = tf.where(positive, largest, tf.ones_like(largest))
    squared = tf.reduce_sum(tf.square(v / safe[..., tf.newaxis]), axis=-1)
    squared = tf.where(positive, squared, tf.ones_like(squared))  # no 1/sqrt(0) in the gradient
    return tf.where(positive, safe * tf.sqrt(squared), tf.zeros_like(largest))
