"""The monotone rational-quadratic spline (Gregory & Delbourgo 1982), value and log-det in one pass.

The same map as TFP's `tfb.RationalQuadraticSpline` (identity tails, end
slopes 1), written for the shape a coupling has, [N, n, K] knots for [N, n]
points: one bin search and one selection serve both the value and its
log-derivative, where the TFP bijector builds them in separate passes with
a general broadcasting search. `tests/test_nsf_maf.py` checks both against TFP.
"""

import tensorflow as tf


def _select(one_hot, *knot_values):
    """The values of the selected bin: Σ_k one_hot_k·v_k, per point."""
    return [tf.reduce_sum(one_hot * v, axis=-1) for v in knot_values]


def rational_quadratic_spline(points, widths, heights, slopes, bound, inverse=False):
    """g(points) (or g⁻¹) and log|g'| there, elementwise.

    The spline maps [-bound, bound] onto itself through K bins and is the
    identity outside (log-derivative 0 there).

    Arguments:
        points: [..., n] inputs (y when `inverse`).
        widths, heights: [..., n, K] positive bin widths and heights, each
            summing to 2·bound over the bins.
        slopes: [..., n, K − 1] positive derivatives at the interior knots
            (1 at both ends).
        bound: the spline acts on [-bound, bound].
        inverse: compute x = g⁻¹(y) and log|dx/dy| instead.

    Returns:
        (values, log_det), both shaped as `points`.
    """
    dtype = points.dtype
    bound = tf.constant(bound, dtype)
    right_x = tf.cumsum(widths, axis=-1) - bound  # right edge of each bin
    right_y = tf.cumsum(heights, axis=-1) - bound
    # The end slopes are 1. Concatenated, not tf.pad(..., constant_values=1): under
    # tf.vectorized_map TensorFlow's pfor converter drops pad's constant (values go wrong).
    ones = tf.ones_like(slopes[..., :1])
    left_slopes = tf.concat([ones, slopes], axis=-1)
    right_slopes = tf.concat([slopes, ones], axis=-1)

    inside = tf.abs(points) < bound  # as TFP: the ends themselves follow the tails
    clipped = tf.clip_by_value(points, -bound, bound)  # finite gradients outside
    knots = right_y if inverse else right_x
    # The bin: how many interior knots lie at or below the point.
    index = tf.reduce_sum(tf.cast(clipped[..., None] >= knots[..., :-1], tf.int32), axis=-1)
    one_hot = tf.one_hot(index, tf.shape(widths)[-1], dtype=dtype)
    x_k1, y_k1, w, h, d_k, d_k1 = _select(
        one_hot, right_x, right_y, widths, heights, left_slopes, right_slopes
    )
    x_k, y_k = x_k1 - w, y_k1 - h
    s = h / w  # the bin's mean slope
    curvature = d_k + d_k1 - 2.0 * s

    if inverse:
        dy = clipped - y_k
        a = h * (s - d_k) + dy * curvature
        b = h * d_k - dy * curvature
        c = -s * dy
        discriminant = tf.maximum(b * b - 4.0 * a * c, 0.0)
        theta = 2.0 * c / (-b - tf.sqrt(discriminant))  # the stable root in [0, 1]
        theta = tf.clip_by_value(theta, 0.0, 1.0)
        values = x_k + theta * w
    else:
        theta = tf.clip_by_value((clipped - x_k) / w, 0.0, 1.0)
    between = theta * (1.0 - theta)
    denominator = s + curvature * between
    if not inverse:
        values = y_k + h * (s * theta * theta + d_k * between) / denominator
    log_derivative = (
        2.0 * tf.math.log(s)
        + tf.math.log(d_k1 * theta * theta + 2.0 * s * between + d_k * (1.0 - theta) ** 2)
        - 2.0 * tf.math.log(denominator)
    )
    if inverse:
        log_derivative = -log_derivative
    return (
        tf.where(inside, values, points),
        tf.where(inside, log_derivative, tf.zeros_like(log_derivative)),
    )
