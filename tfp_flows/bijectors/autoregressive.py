"""Masked autoregressive flow step (MAF, Papamakarios et al. 2017); inverted, IAF."""

import tensorflow as tf

from tfp_flows.bijectors.affine_coupling import soft_clamp
from tfp_flows.bijectors.base import FlowBijector


class MaskedAutoregressive(FlowBijector):
    """Affine autoregressive map of a vector event, in TFP's MAF convention.

    forward (base → data, sampling): x_i = z_i·exp(s_i(x_<i)) + t_i(x_<i),
    with (t, s) = shift_and_log_scale_fn(x, **kwargs) an autoregressive
    network (output i depends on x_<i only, e.g. `tfp_flows.layers.MADE`).
    The log-scale is soft clamped, s = c·tanh(s_raw/c), as in `AffineCoupling`.

    Directions: both closed form, and both log-dets: log|det dx/dz| = Σ s_i.
    The inverse (density, data → base), z = (x − t(x))·exp(−s(x)), takes ONE
    pass of the network. The forward (sampling) takes D sequential passes for
    an event of size D: pass k fixes x_k, which the later ones condition on
    (a `tf.while_loop`, so it runs in a tf.function, with XLA and in an
    exported SavedModel). `tfb.Invert(MaskedAutoregressive(...))` is an
    inverse autoregressive flow (IAF, Kingma et al. 2016): one-pass sampling,
    D-pass density. Invert passes the bijector kwargs (a `context`) through.

    References:
        Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density
        Estimation", NeurIPS 2017.
        Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved
        Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.

    Arguments:
        shift_and_log_scale_fn: any callable taking x of shape [..., D] (and
            the bijector kwargs, e.g. a conditioning `context`) and returning
            (shift, log_scale), each of shape [..., D], output i depending on
            x_<i only; a Keras network in practice.
        log_scale_clamp: c above, or None for no clamp.

    Example:
        >>> import tensorflow as tf
        >>> def shift_and_log_scale(x):  # t_1 = x_0, every other t and s zero
        ...     return tf.pad(x[..., :1], [[0, 0], [1, 0]]), tf.zeros_like(x)
        >>> maf = MaskedAutoregressive(shift_and_log_scale)
        >>> x = maf.forward(tf.constant([[1.0, 2.0]]))
        >>> [float(v) for v in x[0]], [float(v) for v in maf.inverse(x)[0]]
        ([1.0, 3.0], [1.0, 2.0])
    """

    def __init__(
        self,
        shift_and_log_scale_fn,
        log_scale_clamp=3.0,
        validate_args=False,
        name="masked_autoregressive",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._shift_and_log_scale_fn = shift_and_log_scale_fn
            self._log_scale_clamp = log_scale_clamp
            super().__init__(
                forward_min_event_ndims=1,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @property
    def shift_and_log_scale_fn(self):
        return self._shift_and_log_scale_fn

    def _shift_and_log_scale(self, x, **kwargs):
        shift, log_scale = self._shift_and_log_scale_fn(x, **kwargs)
        return shift, soft_clamp(log_scale, self._log_scale_clamp)

    def _forward_and_log_det(self, z, **kwargs):
        def step(x):
            shift, log_scale = self._shift_and_log_scale(x, **kwargs)
            return z * tf.exp(log_scale) + shift, log_scale

        # After k passes x_<k is exact (x_i needs only x_<i): D - 1 passes in the
        # loop, and the D-th gives the last element and the log-scales of the result.
        event_size = z.shape[-1] if z.shape.rank is not None else None
        if event_size is None:
            event_size = tf.shape(z)[-1]
        _, x = tf.while_loop(
            lambda i, x: i < event_size - 1,
            lambda i, x: (i + 1, step(x)[0]),
            (tf.constant(0), tf.zeros_like(z)),
        )
        x, log_scale = step(x)
        return x, tf.reduce_sum(log_scale, axis=-1)

    def _inverse_and_log_det(self, x, **kwargs):
        shift, log_scale = self._shift_and_log_scale(x, **kwargs)
        return (x - shift) * tf.exp(-log_scale), -tf.reduce_sum(log_scale, axis=-1)
