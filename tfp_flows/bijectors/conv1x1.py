"""Invertible 1×1 convolution with an LU-decomposed weight (Kingma & Dhariwal, 2018)."""

import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector


class InvertibleConv1x1(FlowBijector):
    """y = W x at every pixel of an image [..., H, W, C], W = P·L·(U + diag(sign·exp(s))).

    P is a fixed permutation, L unit lower triangular, U strictly upper
    triangular, `sign` a fixed ±1 vector and s = `log_abs_diagonal`: the
    log-det costs O(C), H·W·Σ s, and W is invertible for any parameters.
    Both directions are closed form (the inverse by two triangular solves).

    Arguments:
        permutation: [C, C] permutation matrix P.
        lower: [C, C]; only its strictly lower triangle is used.
        upper: [C, C]; only its strictly upper triangle is used.
        log_abs_diagonal: [C], s above.
        sign: [C] of ±1.
    """

    def __init__(
        self,
        permutation,
        lower,
        upper,
        log_abs_diagonal,
        sign,
        validate_args=False,
        name="invertible_conv_1x1",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._permutation, self._lower, self._upper = permutation, lower, upper
            self._log_abs_diagonal, self._sign = log_abs_diagonal, sign
            super().__init__(
                forward_min_event_ndims=3,
                is_constant_jacobian=True,  # log|det| depends on the parameters, not on x
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    def _factors(self, dtype):
        lower = tf.convert_to_tensor(self._lower, dtype)
        size = tf.shape(lower)[0]
        identity = tf.eye(size, dtype=dtype)
        lower = tf.linalg.band_part(lower, -1, 0) - tf.linalg.band_part(lower, 0, 0) + identity
        upper = tf.convert_to_tensor(self._upper, dtype)
        diagonal = tf.convert_to_tensor(self._sign, dtype) * tf.exp(
            tf.convert_to_tensor(self._log_abs_diagonal, dtype)
        )
        upper = tf.linalg.band_part(upper, 0, -1) - tf.linalg.band_part(upper, 0, 0)
        upper += tf.linalg.diag(diagonal)
        return tf.convert_to_tensor(self._permutation, dtype), lower, upper

    def _log_det(self, x):
        pixels = tf.cast(tf.shape(x)[-3] * tf.shape(x)[-2], x.dtype)
        log_abs = tf.convert_to_tensor(self._log_abs_diagonal, x.dtype)
        return tf.broadcast_to(pixels * tf.reduce_sum(log_abs), tf.shape(x)[:-3])

    def _forward_and_log_det(self, x, **kwargs):
        permutation, lower, upper = self._factors(x.dtype)
        weight = permutation @ lower @ upper
        return tf.einsum("...c,kc->...k", x, weight), self._log_det(x)

    def _inverse_and_log_det(self, y, **kwargs):
        permutation, lower, upper = self._factors(y.dtype)
        identity = tf.eye(tf.shape(lower)[0], dtype=y.dtype)
        # W⁻¹ = U⁻¹ L⁻¹ Pᵀ, by triangular solves rather than a general inverse.
        inverse = tf.linalg.triangular_solve(
            upper, tf.linalg.triangular_solve(lower, identity, lower=True), lower=False
        ) @ tf.transpose(permutation)
        return tf.einsum("...c,kc->...k", y, inverse), -self._log_det(y)
