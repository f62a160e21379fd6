"""Vectorised root finding for the numerical inverses."""

import numpy as np
import tensorflow as tf


def increasing_root(fn, lower, upper, max_iterations=100):
    """Finds x in [lower, upper] with fn(x) = 0 for an increasing scalar fn.

    Newton's method with a bisection safeguard, elementwise over a batch: a
    Newton step that leaves the bracket [lower, upper] is replaced by the
    bracket's midpoint, so the iteration always converges (Numerical Recipes
    `rtsafe`). It stops when every element's step is at the dtype's precision,
    or after `max_iterations`. The loop is a `tf.while_loop`, so it traces,
    exports and compiles with XLA.

    Arguments:
        fn: callable, x -> (f(x), f'(x)), elementwise; f increasing on the
            bracket with f(lower) <= 0 <= f(upper).
        lower, upper: tensors of one shape bracketing the root.
        max_iterations: bound on the loop.

    Returns:
        The root, with no gradient: see `implicit_newton_step` for that.
    """
    lower = tf.stop_gradient(lower)
    upper = tf.stop_gradient(upper)
    tolerance = 4.0 * _epsilon(lower.dtype)

    def body(i, x, lower, upper, previous_step, _):
        value, slope = fn(x)
        lower = tf.where(value < 0, x, lower)
        upper = tf.where(value > 0, x, upper)
        newton = x - value / tf.where(slope > 0, slope, tf.ones_like(slope))
        # Bisect where Newton leaves the bracket or does not at least halve its
        # last step (it can cycle inside the bracket), as rtsafe does.
        bisect = (
            (newton < lower)
            | (newton > upper)
            | (slope <= 0)
            | (tf.abs(2.0 * value) > tf.abs(previous_step * slope))
        )
        new_x = tf.where(bisect, _midpoint(lower, upper), newton)
        new_x = tf.where(value == 0, x, new_x)
        step = new_x - x
        # reduce_any, not reduce_max: a NaN row (NaN input) must not stop the others.
        running = tf.reduce_any(tf.abs(step) / (1.0 + tf.abs(x)) > tolerance)
        return i + 1, new_x, lower, upper, step, running

    def cond(i, x, lower, upper, previous_step, running):
        return (i < max_iterations) & running

    _, root, _, _, _, _ = tf.while_loop(
        cond,
        body,
        (tf.constant(0), _midpoint(lower, upper), lower, upper, upper - lower, tf.constant(True)),
    )
    return tf.stop_gradient(root)


def implicit_newton_step(fn, root):
    """One differentiable Newton step from a converged, gradient-free root.

    At a root r of f(x; theta), r - f(r)/f'(r) equals r in value, and its
    gradient is -(df/dtheta)/f'(r): exactly the implicit-function-theorem
    gradient of the root. So gradients flow to the parameters (and inputs) of
    the equation without differentiating through the loop.
    """
    value, slope = fn(root)
    return root - value / slope


def _midpoint(lower, upper):
    """(lower + upper)/2 without overflow for brackets near the dtype's largest values."""
    return lower + 0.5 * (upper - lower)


def _epsilon(dtype):
    return float(np.finfo(dtype.as_numpy_dtype).eps)
