"""Contexts of conditional flows: the one place that broadcasts them and routes them to steps.

A conditional flow p(x | c) takes a context vector c [..., C] whose batch
shape broadcasts with the points' (one context per point, or one for all).
`FlowModel`, the networks inside the steps and the export all pair points
with contexts through `broadcast`, and reach every conditional step of a
`tfb.Chain` through `bijector_kwargs`.
"""

import tensorflow as tf


def broadcast(values, context, event_ndims):
    """values [*b1, *event] and context [*b2, C] broadcast to one batch shape b.

    Returns (values [*b, *event], context [*b, C]); the context is cast to
    the values' dtype.
    """
    context = tf.cast(context, values.dtype)
    shape = tf.shape(values)
    rank = values.shape.rank if values.shape.rank is not None else tf.rank(values)
    batch, event = shape[: rank - event_ndims], shape[rank - event_ndims :]
    # The broadcast batch shape, as the shape of a sum of zeros: the same answer as
    # tf.broadcast_dynamic_shape, without its BroadcastArgs op, which ONNX lacks.
    batch = tf.shape(tf.zeros(batch, tf.int32) + tf.zeros(tf.shape(context)[:-1], tf.int32))
    return (
        tf.broadcast_to(values, tf.concat([batch, event], axis=0)),
        tf.broadcast_to(context, tf.concat([batch, tf.shape(context)[-1:]], axis=0)),
    )


def bijector_kwargs(steps, context):
    """{bijector name: {"context": context}} for the conditional steps among `steps`.

    TFP's `tfb.Chain` routes keyword arguments to its bijectors by name:
    `chain.forward(z, **bijector_kwargs(steps, c))`.
    """
    return {
        step.bijector.name: {"context": context}
        for step in steps
        if getattr(step, "conditional", False)
    }


def nan_where_not_finite(values, context, event_ndims):
    """values [*batch, *event] with NaN wherever the context row [*batch, C] has NaN or Inf."""
    finite = tf.reduce_all(tf.math.is_finite(context), axis=-1)
    finite = tf.reshape(finite, tf.concat([tf.shape(finite), tf.ones([event_ndims], tf.int32)], 0))
    return tf.where(finite, values, tf.constant(float("nan"), values.dtype))
