"""Rational-quadratic neural spline coupling (Durkan et al. 2019)."""

import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors.affine_coupling import Coupling
from tfp_flows.bijectors.rational_quadratic import rational_quadratic_spline

tfb = tfp.bijectors


def check_spline_arguments(num_bins, bound, min_bin_size=1e-3, min_slope=1e-3):
    """Raises a ValueError naming the first argument that makes no valid spline."""
    if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 2:
        raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}.")
    if not bound > 0:
        raise ValueError(f"bound must be positive, got {bound!r}.")
    if not 0 < min_bin_size * num_bins < 2 * bound:
        raise ValueError(
            f"min_bin_size must be positive and num_bins·min_bin_size below 2·bound, "
            f"got min_bin_size={min_bin_size!r} for {num_bins} bins on [-{bound}, {bound}]."
        )
    if not 0 < min_slope < 1:
        raise ValueError(f"min_slope must be in (0, 1), got {min_slope!r}.")


class SplineCoupling(Coupling):
    """Neural spline coupling over a boolean mask of a vector event.

    Positions where `mask` is True (x_a) pass through unchanged and condition
    the rest (x_b): y_a = x_a, and each y_b,j = g_j(x_b,j), where g_j is a
    monotone rational-quadratic spline of K bins on [-bound, bound] and the
    identity outside it (linear tails; the spline's end slopes are 1, so the
    map is C¹). The map is TFP's `tfb.RationalQuadraticSpline` (`spline`
    returns that bijector), computed by `rational_quadratic_spline`, which
    gives the value and the log-det in one pass. Its parameters come from
    `spline_parameters_fn(x_a, **kwargs)`: unconstrained values for K widths,
    K heights and K − 1 interior knot slopes per element:

        widths  = m + (2·bound − K·m)·softmax(raw widths),  m = min_bin_size
        heights = the same with the raw heights
        slopes  = min_slope + softplus(raw slopes + log(exp(1 − min_slope) − 1))

    so a network output of zero gives equal bins and every slope 1: the
    identity. Any raw values give a valid spline.

    Directions: forward and inverse are both closed form (the inverse solves
    a quadratic per element), and so are both log-dets:
    log|det dy/dx| = Σ_j log g_j'(x_b,j).

    References:
        Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.

    Arguments:
        spline_parameters_fn: any callable taking x_a of shape [..., n_a]
            (and the bijector kwargs, e.g. a conditioning `context`) and
            returning the raw parameters, of shape [..., n_b, 3K − 1] (or the
            same flattened to [..., n_b·(3K − 1)]): per transformed element,
            K widths, then K heights, then K − 1 slopes. A Keras network in
            practice.
        mask: boolean array of shape [D]; True marks the conditioning part.
            See `half_mask` and `parity_mask`. Both parts must be non-empty.
        num_bins: K, at least 2.
        bound: the spline acts on [-bound, bound].
        min_bin_size: the least width and height of a bin.
        min_slope: the least slope at a knot.

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
        parameters = dict(locals())
        check_spline_arguments(num_bins, bound, min_bin_size, min_slope)
        with tf.name_scope(name) as name:
            self._spline_parameters_fn = spline_parameters_fn
            self._num_bins = int(num_bins)
            self._bound = float(bound)
            self._min_bin_size = float(min_bin_size)
            self._min_slope = float(min_slope)
            # softplus(0 + offset) = 1 - min_slope: a zero raw slope is a slope of 1.
            self._slope_offset = math.log(math.expm1(1.0 - min_slope))
            super().__init__(mask, parameters, validate_args=validate_args, name=name)

    @property
    def spline_parameters_fn(self):
        return self._spline_parameters_fn

    @property
    def num_bins(self):
        return self._num_bins

    @property
    def bound(self):
        return self._bound

    def _spline_knots(self, x_a, **kwargs):
        """Bin widths, heights [N, n_b, K] and interior slopes [N, n_b, K − 1] given x_a."""
        num_bins, num_transformed = self._num_bins, len(self._transformed)
        raw = self._spline_parameters_fn(x_a, **kwargs)
        raw = tf.reshape(raw, [-1, num_transformed, 3 * num_bins - 1])
        raw_widths, raw_heights, raw_slopes = tf.split(
            raw, [num_bins, num_bins, num_bins - 1], axis=-1
        )
        span = 2.0 * self._bound - num_bins * self._min_bin_size
        return (
            self._min_bin_size + span * tf.math.softmax(raw_widths, axis=-1),
            self._min_bin_size + span * tf.math.softmax(raw_heights, axis=-1),
            self._min_slope + tf.math.softplus(raw_slopes + self._slope_offset),
        )

    def spline(self, x_a, **kwargs):
        """TFP's `tfb.RationalQuadraticSpline` of x_b given x_a, over a flat batch [N, n_b].

        The same map as this bijector's; for inspection and for checking the fused one.
        """
        widths, heights, slopes = self._spline_knots(x_a, **kwargs)
        return tfb.RationalQuadraticSpline(
            widths, heights, slopes, range_min=tf.constant(-self._bound, widths.dtype)
        )

    def _transform(self, x, inverse, **kwargs):
        x_a, x_b = self._split(x)
        # Fold the batch shape (which may be unknown in a tf.function traced with
        # reduce_retracing) into one axis: the knots are [N, n_b, K].
        flat_b = tf.reshape(x_b, [-1, len(self._transformed)])
        out_b, log_det = rational_quadratic_spline(
            flat_b, *self._spline_knots(x_a, **kwargs), self._bound, inverse=inverse
        )
        shape = tf.shape(x_b)
        return (
            self._merge_parts(x_a, tf.reshape(out_b, shape)),
            tf.reshape(tf.reduce_sum(log_det, axis=-1), shape[:-1]),
        )

    def _forward_and_log_det(self, x, **kwargs):
        return self._transform(x, inverse=False, **kwargs)

    def _inverse_and_log_det(self, y, **kwargs):
        return self._transform(y, inverse=True, **kwargs)
