"""One masked autoregressive bijector for every transformer (MAF, NSF-AR); inverted, IAF."""

import tensorflow as tf

from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.coupling import raw_parameters


class MaskedAutoregressive(FlowBijector):
    """An autoregressive elementwise map of a vector event, in TFP's MAF convention.

    forward (base → data, sampling): x_i = g(z_i; θ_i(x_<i)), with the raw
    parameters θ = conditioner(x, **kwargs) of an autoregressive network
    (output i depends on x_<i only, e.g. `tfp_flows.layers.MADE`) and g the
    `transformer`: the affine one gives MAF (Papamakarios et al. 2017),
    x_i = z_i·exp(s_i) + t_i with s soft clamped as in `AffineCoupling`; the
    rational-quadratic spline gives NSF-AR, the autoregressive neural spline
    flow (Durkan et al. 2019).

    Directions: closed form both ways wherever the transformer's are (affine
    and spline: both), and so are the log-dets, log|det dx/dz| = Σ log g'.
    The inverse (density, data → base), z_i = g⁻¹(x_i; θ_i(x_<i)), takes ONE
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
        Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.

    Arguments:
        conditioner: any callable taking x of shape [..., D] (and the
            bijector kwargs, e.g. a conditioning `context`) and returning the
            raw parameters [..., D·P] in the transformer's layout (or, for the
            affine transformer, a tuple (shift, log_scale) of [..., D] each),
            those of element i depending on x_<i only; a Keras network in
            practice.
        transformer: a `Transformer` or a name ("affine", "spline").

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
        conditioner,
        transformer="affine",
        validate_args=False,
        name="masked_autoregressive",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._conditioner = conditioner
            self._transformer = transformers_lib.get(transformer)
            super().__init__(
                forward_min_event_ndims=1,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @property
    def conditioner(self):
        return self._conditioner

    @property
    def shift_and_log_scale_fn(self):
        return self._conditioner

    @property
    def transformer(self):
        return self._transformer

    def _forward_and_log_det(self, z, **kwargs):
        def step(x):
            raw = raw_parameters(self._conditioner(x, **kwargs))
            return self._transformer.forward_and_log_det(raw, z)

        # After k passes x_<k is exact (x_i needs only x_<i): D - 1 passes in the
        # loop, and the D-th gives the last element and the log-dets of the result.
        event_size = z.shape[-1] if z.shape.rank is not None else None
        if event_size is None:
            event_size = tf.shape(z)[-1]
        _, x = tf.while_loop(
            lambda i, x: i < event_size - 1,
            lambda i, x: (i + 1, step(x)[0]),
            (tf.constant(0), tf.zeros_like(z)),
        )
        x, log_det = step(x)
        return x, tf.reduce_sum(log_det, axis=-1)

    def _inverse_and_log_det(self, x, **kwargs):
        raw = raw_parameters(self._conditioner(x, **kwargs))
        z, log_det = self._transformer.inverse_and_log_det(raw, x)
        return z, tf.reduce_sum(log_det, axis=-1)
