"""A fixed elementwise affine map of a vector event, the standardising last step."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


class ScaleAndShift(tfb.Bijector):
    """y = x·scale + shift per dimension, scale > 0: `tfb.Chain([tfb.Shift, tfb.Scale])`.

    The same map as the TFP chain, with its constant log-det Σ log scale written
    out. The scale and shift stay NumPy values until a method runs, so each
    trace holds them as graph constants: TFP's own bijectors hold eager tensors,
    which a traced function captures as inputs (tf2onnx then asks for them as
    inputs) and whose log-det reduction TFLite's converter folds to the first
    dimension's term alone.

    Example:
        >>> import tensorflow as tf
        >>> b = ScaleAndShift([2.0, 3.0], [1.0, -1.0])
        >>> [float(v) for v in b.forward(tf.constant([1.0, 1.0]))]
        [3.0, 2.0]
        >>> round(float(b.forward_log_det_jacobian(tf.constant([1.0, 1.0]), 1)), 4)  # log 6
        1.7918
    """

    def __init__(self, scale, shift, validate_args=False, name="scale_and_shift"):
        parameters = dict(locals())
        self._scale_values = np.asarray(scale)
        self._shift_values = np.asarray(shift)
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

    def _constants(self, dtype):
        return (
            tf.constant(self._scale_values, dtype),
            tf.constant(self._shift_values, dtype),
            tf.constant(np.sum(np.log(self._scale_values)), dtype),
        )

    def _forward(self, x):
        scale, shift, _ = self._constants(x.dtype)
        return x * scale + shift

    def _inverse(self, y):
        scale, shift, _ = self._constants(y.dtype)
        return (y - shift) / scale

    def _forward_log_det_jacobian(self, x):
        return self._constants(x.dtype)[2]

    def _inverse_log_det_jacobian(self, y):
        return -self._constants(y.dtype)[2]
