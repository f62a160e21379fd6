"""Input checks that raise a clear ValueError naming the problem.

Nothing upstream validates for us: TFP broadcasts or truncates silently and
Keras 3 `fit` accepts an empty array. Every public entry point of `FlowModel`
goes through one of these before any computation or weight update.

Floating inputs of another precision are cast to the model's dtype (float64
data into a float32 model is the common case); non-float inputs are refused,
since integer data such as pixel counts needs dequantising first.
"""

import numbers

import numpy as np
import tensorflow as tf


def check_events(x, event_shape, dtype, argument="x"):
    """Returns x as a tensor of `dtype` after checking its dtype and event shape."""
    if not tf.is_tensor(x):
        x = np.asarray(x)
    _check_float(x.dtype, argument)
    _check_event_shape(tf.TensorShape(x.shape), event_shape, argument)
    return tf.cast(x, dtype)


def check_context(context, context_size, dtype):
    """Returns a conditional flow's context as a tensor of `dtype`, shape [..., context_size]."""
    if context is None:
        raise ValueError(
            f"this flow is conditional on a context of size {context_size}, but none was "
            "given: pass context=... (an array of shape [..., "
            f"{context_size}])."
        )
    if not tf.is_tensor(context):
        context = np.asarray(context)
    _check_float(context.dtype, "context")
    _check_event_shape(tf.TensorShape(context.shape), (context_size,), "context")
    return tf.cast(context, dtype)


def check_batch_shapes_broadcast(points_batch, context_batch, argument="x"):
    """Raises a ValueError naming both shapes when a context cannot pair with the points."""
    try:
        tf.broadcast_static_shape(tf.TensorShape(points_batch), tf.TensorShape(context_batch))
    except ValueError:
        raise ValueError(
            f"the context's batch shape {tuple(context_batch)} does not broadcast with "
            f"{argument}'s {tuple(points_batch)}: pass one context per example, or one "
            "for all."
        ) from None


def is_array(x):
    """True for in-memory arrays (which the checks here inspect), False for datasets etc."""
    return isinstance(x, (np.ndarray, list)) or tf.is_tensor(x)


def _check_float(dtype, argument):
    try:
        floating, name = tf.as_dtype(dtype).is_floating, tf.as_dtype(dtype).name
    except TypeError:  # e.g. numpy's unicode strings have no TF dtype
        floating, name = False, str(dtype)
    if not floating:
        hint = (
            "cast it to float; one-hot encode class labels with keras.utils.to_categorical"
            if argument == "context"
            else "dequantise integer data first"
        )
        raise ValueError(f"{argument} must be floating point, got dtype {name} ({hint}).")


def _check_event_shape(shape, event_shape, argument):
    rank = len(event_shape)
    if shape.rank is None:
        return
    if shape.rank < rank:
        raise ValueError(
            f"{argument} has rank {shape.rank} (shape {tuple(shape)}), but one event has "
            f"shape {tuple(event_shape)}: pass an array of shape [..., "
            f"{', '.join(map(str, event_shape))}]."
        )
    trailing = tuple(shape[-rank:])
    if any(d is not None and d != e for d, e in zip(trailing, event_shape)):
        raise ValueError(
            f"{argument} has event shape {trailing} (array shape {tuple(shape)}), but the "
            + (
                f"flow takes contexts of size {event_shape[0]}."
                if argument == "context"
                else f"flow models events of shape {tuple(event_shape)}."
            )
        )


def check_training_data(x, event_shape, argument="x"):
    """Checks in-memory training data before `fit` or `evaluate` touches a weight.

    Datasets, generators and other Keras data sources pass through unchanged;
    arrays (or a tuple whose first item is the array) must be float, of shape
    [N, *event_shape] with N > 0, and finite.
    """
    if isinstance(x, tuple):
        return (check_training_data(x[0], event_shape, argument),) + x[1:]
    if not is_array(x):
        return x
    array = np.asarray(x)
    _check_float(array.dtype, argument)
    expected = len(event_shape) + 1
    if array.ndim != expected:
        raise ValueError(
            f"{argument} must have shape [N, {', '.join(map(str, event_shape))}], "
            f"got shape {array.shape}."
        )
    _check_event_shape(tf.TensorShape(array.shape), event_shape, argument)
    if array.shape[0] == 0:
        raise ValueError(f"{argument} is empty: there is nothing to train or evaluate on.")
    finite = np.isfinite(array).reshape(len(array), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{argument} has NaN or Inf in {len(bad)} of {len(array)} rows; the first is "
            f"row {bad[0]}: {array[bad[0]].tolist()}."
        )
    return x if tf.is_tensor(x) else array


def check_sample_count(n):
    """Returns n as an int32 scalar tensor after checking it is a positive integer."""
    if tf.is_tensor(n):
        if not n.dtype.is_integer or n.shape.rank != 0:
            raise ValueError(
                f"n must be a positive integer scalar, got {n.dtype.name} of shape {n.shape}."
            )
        if tf.executing_eagerly() and int(n) <= 0:
            raise ValueError(f"n must be a positive integer, got {int(n)}.")
        return tf.cast(n, tf.int32)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    if n <= 0:
        raise ValueError(f"n must be a positive integer, got {n}.")
    return tf.constant(int(n), tf.int32)


def check_context_size(context_size):
    """Returns a layer's or model's `context_size` as an int, or None (not conditional)."""
    if context_size is None:
        return None
    if (
        isinstance(context_size, bool)
        or not isinstance(context_size, numbers.Integral)
        or context_size < 1
    ):
        raise ValueError(f"context_size must be a positive integer or None, got {context_size!r}.")
    return int(context_size)
