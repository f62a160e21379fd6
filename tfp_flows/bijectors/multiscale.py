"""The multi-scale architecture of RealNVP and Glow: squeeze, steps, factor out half."""

import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector
from tfp_flows.bijectors.squeeze import Squeeze


class MultiScale(FlowBijector):
    """A multi-scale flow over images [..., H, W, C] (Dinh et al. 2017; Kingma & Dhariwal 2018).

    Level l squeezes its input (space to depth), applies its steps, then
    hands half of the channels to level l + 1 and keeps ("factors out") the
    other half, which the deeper levels never touch; the last level keeps
    everything. In the normalizing (inverse) direction, for level l:

        h = squeeze(x); h = steps_l⁻¹(h); (a, f) = split(h); a = level_{l+1}⁻¹(a);
        z = unsqueeze(concat(a, f))

    and the forward (sampling) direction runs the same in reverse, so the
    latent z has the image's shape. The log-det is the sum of the steps'.
    Directions are closed form wherever the steps' are.

    Arguments:
        levels: a list, one entry per level, of lists of bijectors in the
            forward order (base → data), each acting on that level's squeezed
            shape: level l sees [H/2^(l+1), W/2^(l+1), 4·C·2^l].
    """

    def __init__(self, levels, validate_args=False, name="multi_scale"):
        parameters = dict(locals())
        if not levels or not all(levels):
            raise ValueError("MultiScale needs at least one level, each with at least one step.")
        with tf.name_scope(name) as name:
            self._levels = [list(steps) for steps in levels]
            self._squeeze = Squeeze()
            super().__init__(
                forward_min_event_ndims=3,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @property
    def levels(self):
        return self._levels

    def _forward_and_log_det(self, z, **kwargs):
        return self._level(0, z, "forward", kwargs)

    def _inverse_and_log_det(self, x, **kwargs):
        return self._level(0, x, "inverse", kwargs)

    def inverse_visiting(self, x, before_step, **kwargs):
        """The inverse of x, calling before_step(step, values) with the values reaching each step.

        For data-dependent initialisation (ActNorm): run eagerly, it lets a
        step set its parameters from its inputs just before it is applied.
        """
        return self._level(0, x, "inverse", kwargs, before_step)[0]

    def _level(self, index, x, direction, kwargs, before_step=None):
        h = self._squeeze.forward(x)
        log_det = tf.zeros(tf.shape(x)[:-3], x.dtype)
        steps = self._levels[index]
        last = index == len(self._levels) - 1
        if direction == "inverse":
            h, log_det = self._steps(reversed(steps), h, "inverse", kwargs, log_det, before_step)
        if not last:
            active, factored = tf.split(h, 2, axis=-1)
            active, deeper = self._level(index + 1, active, direction, kwargs, before_step)
            h, log_det = tf.concat([active, factored], axis=-1), log_det + deeper
        if direction == "forward":
            h, log_det = self._steps(steps, h, "forward", kwargs, log_det)
        return self._squeeze.inverse(h), log_det

    @staticmethod
    def _steps(steps, h, direction, kwargs, log_det, before_step=None):
        for step in steps:
            if before_step is not None:
                before_step(step, h)
            log_det_fn = getattr(step, f"{direction}_log_det_jacobian")
            # Every step gets the kwargs (a `context`); those without a network ignore them.
            log_det += log_det_fn(h, event_ndims=3, **kwargs)
            h = getattr(step, direction)(h, **kwargs)
        return h, log_det
