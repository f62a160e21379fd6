"""The continuous flow layer and its vector field: a time-embedded MLP with exact JVPs."""

import math

import keras
import tensorflow as tf

from tfp_flows import context as context_lib
from tfp_flows.bijectors.continuous import (
    ContinuousFlow,
    check_solver_options,
    check_tolerance_for_dtype,
)
from tfp_flows.layers.base import FlowLayer
from tfp_flows.layers.coupling import bounded_inputs, hidden_bias_initializer
from tfp_flows.validation import check_context_size, check_integer

TRAINING_TRACES = ("exact", "hutchinson")


def _silu(a):
    sigmoid = tf.sigmoid(a)
    return a * sigmoid, sigmoid


# name -> (a -> (activation, auxiliary value), (a, activation, auxiliary) -> derivative).
# The activation is computed by the same ops with and without the derivative, so a solve
# with the trace follows the same trajectory as one without.
ACTIVATIONS = {
    "silu": (_silu, lambda a, y, sigmoid: sigmoid + y * (1.0 - sigmoid)),
    "tanh": (lambda a: (tf.tanh(a), None), lambda a, y, _: 1.0 - y * y),
    "softplus": (lambda a: (tf.nn.softplus(a), None), lambda a, y, _: tf.sigmoid(a)),
    "elu": (
        lambda a: (tf.nn.elu(a), None),
        lambda a, y, _: tf.where(a > 0, tf.ones_like(a), y + 1.0),
    ),
    "sigmoid": (lambda a: (tf.sigmoid(a), None), lambda a, y, _: y * (1.0 - y)),
}


@keras.saving.register_keras_serializable(package="tfp_flows")
class TimeEmbeddedMLP(keras.layers.Layer):
    """A vector field v(x, t [, context]) for vectors: an MLP of [x, time features, context].

    The time enters as 2F sinusoidal features cos(kπt), sin(kπt), k = 1..F
    (as zuko's CNF does); a context, when `context_size` is set, is
    concatenated too. The output layer starts at zero, so a flow using this
    field starts as the identity map; hidden biases start spread out (see
    `tfp_flows.layers.coupling.hidden_bias_initializer`).

    `network(x, t, context=None)` returns v [..., D] for x [..., D] and a
    time t, a scalar or one per row. `network.velocity_and_jvp(x, t,
    tangents)` also returns the Jacobian-vector products J·u for tangents
    u [..., K, D] (J = ∂v/∂x), propagated forward through the layers in the
    same pass, so the exact trace (K = D, u = I) costs D small products per
    layer instead of D backward passes; `ContinuousFlow` uses it.

    Arguments:
        hidden_units: widths of the hidden layers.
        activation: a smooth activation: "silu", "tanh", "softplus", "elu", "sigmoid".
        time_frequencies: F, the number of sinusoidal time frequencies.
        context_size: makes the field conditional on a context of this size.
    """

    def __init__(
        self,
        hidden_units=(64, 64),
        activation="silu",
        time_frequencies=4,
        context_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = tuple(
            check_integer(units, "each of hidden_units") for units in hidden_units
        )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r} for a vector field; choose one of "
                f"{', '.join(ACTIVATIONS)} (smooth, with the derivative the exact trace needs)."
            )
        self.activation = activation
        self.time_frequencies = check_integer(time_frequencies, "time_frequencies", minimum=0)
        self.context_size = check_context_size(context_size)

    def build(self, input_shape):
        self.event_size = int(input_shape[-1])
        width = self.event_size + 2 * self.time_frequencies + (self.context_size or 0)
        self.kernels, self.biases = [], []
        for i, units in enumerate(self.hidden_units):
            self.kernels.append(
                self.add_weight(
                    shape=(width, units), initializer="glorot_uniform", name=f"kernel_{i}"
                )
            )
            self.biases.append(
                self.add_weight(
                    shape=(units,), initializer=hidden_bias_initializer(width), name=f"bias_{i}"
                )
            )
            width = units
        self.output_kernel = self.add_weight(
            shape=(width, self.event_size), initializer="zeros", name="output_kernel"
        )
        self.output_bias = self.add_weight(
            shape=(self.event_size,), initializer="zeros", name="output_bias"
        )

    def time_features(self, t, rows):
        """[rows, 2F]: cos(kπt), sin(kπt) for k = 1..F, t a scalar or [rows]."""
        t = tf.broadcast_to(tf.cast(t, self.compute_dtype), [rows])
        frequencies = math.pi * tf.range(1, self.time_frequencies + 1, dtype=self.compute_dtype)
        angles = t[:, None] * frequencies
        return tf.concat([tf.cos(angles), tf.sin(angles)], axis=-1)

    # --- The field as a function of its weights ------------------------------------
    # `ContinuousFlow` compiles one solve per architecture (`solver_key`) and passes the
    # weights in (`weight_values`, `with_weights`), so new layers cost no new trace.

    @property
    def solver_key(self):
        """What fixes the field's computation besides its weights: hashable."""
        return (
            type(self).__name__,
            self.event_size,
            self.hidden_units,
            self.activation,
            self.time_frequencies,
            self.context_size,
            self.compute_dtype,
        )

    def _ordered_weights(self):
        return [w for pair in zip(self.kernels, self.biases) for w in pair] + [
            self.output_kernel,
            self.output_bias,
        ]

    def weight_values(self):
        """The weights' current values (tensors, read now), in the order `with_weights` takes."""
        # `.value` is the backend tf.Variable: a tf.function would capture it, not its value.
        return [tf.convert_to_tensor(w.value) for w in self._ordered_weights()]

    def with_weights(self, weights):
        """The field computed from `weights` (tensors, as `weight_values` orders them)."""
        return _FieldWithWeights(self, list(weights))

    def _activations(self, weights, x, t, context):
        """Pre-activations and activations of the hidden layers, and the output v, for x [N, D]."""
        parts = [bounded_inputs(x), self.time_features(t, tf.shape(x)[0])]
        if self.context_size is not None:
            parts.append(context)
        hidden = tf.concat(parts, axis=-1)
        forward = ACTIVATIONS[self.activation][0]
        layers = []
        for kernel, bias in zip(weights[:-2:2], weights[1:-2:2]):
            pre = tf.nn.bias_add(tf.matmul(hidden, kernel), bias)
            hidden, auxiliary = forward(pre)
            layers.append((pre, hidden, auxiliary))
        return layers, tf.nn.bias_add(tf.matmul(hidden, weights[-2]), weights[-1])

    def _flat(self, x, t, context):
        """x as [N, D], t as a scalar or [N], the context as [N, C]; and x's leading shape."""
        x = tf.convert_to_tensor(x, self.compute_dtype)
        if self.context_size is None:
            if context is not None:
                raise ValueError(f"{self.name} is not conditional but was given a context.")
        else:
            if context is None:
                raise ValueError(
                    f"{self.name} is conditional on a context of size {self.context_size}, "
                    "but none was given."
                )
            x, context = context_lib.broadcast(x, context, event_ndims=1)
            context = tf.reshape(tf.cast(context, self.compute_dtype), [-1, self.context_size])
        leading = tf.shape(x)[:-1]
        t = tf.convert_to_tensor(t, self.compute_dtype)
        if t.shape.rank:
            t = tf.reshape(tf.broadcast_to(t, leading), [-1])
        return tf.reshape(x, [-1, self.event_size]), t, context, leading

    def velocity_with(self, weights, x, t, context=None):
        flat, t, context, leading = self._flat(x, t, context)
        _, velocity = self._activations(weights, flat, t, context)
        return tf.reshape(velocity, tf.concat([leading, [self.event_size]], axis=0))

    def velocity_and_jvp_with(self, weights, x, t, tangents, context=None):
        flat, t, context, _ = self._flat(x, t, context)
        tangents = tf.convert_to_tensor(tangents, self.compute_dtype)
        layers, velocity = self._activations(weights, flat, t, context)
        derivative = ACTIVATIONS[self.activation][1]
        # The time features and the context do not move with x: only the first
        # kernel's rows for x carry the tangents into the network.
        kernels = list(weights[::2])
        kernels[0] = kernels[0][: self.event_size]
        products = tangents
        for kernel, (pre, hidden, auxiliary) in zip(kernels, layers):
            slope = derivative(pre, hidden, auxiliary)
            products = tf.tensordot(products, kernel, 1) * slope[:, None, :]
        products = tf.tensordot(products, kernels[-1], 1)
        rows = tf.concat([tf.shape(flat)[:1], tf.shape(products)[1:]], axis=0)
        products = tf.broadcast_to(products, rows)  # tangents shared by all rows
        return velocity, products

    def call(self, x, t, context=None):
        return self.velocity_with(self.weight_values(), x, t, context)

    def velocity_and_jvp(self, x, t, tangents, context=None):
        """(v [N, D], J·u [N, K, D]) for x [N, D] and tangents u [N or 1, K, D], J = ∂v/∂x."""
        return self.velocity_and_jvp_with(self.weight_values(), x, t, tangents, context)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "time_frequencies": self.time_frequencies,
            "context_size": self.context_size,
        }


class _FieldWithWeights:
    """A `TimeEmbeddedMLP`'s field computed from given weight tensors."""

    def __init__(self, network, weights):
        self.network, self.weights = network, weights

    def __call__(self, x, t, context=None):
        return self.network.velocity_with(self.weights, x, t, context)

    def velocity_and_jvp(self, x, t, tangents, context=None):
        return self.network.velocity_and_jvp_with(self.weights, x, t, tangents, context)


@keras.saving.register_keras_serializable(package="tfp_flows")
class ContinuousFlowLayer(FlowLayer):
    """Owns the vector field of a `tfp_flows.bijectors.ContinuousFlow` (a CNF step).

    The field is a `TimeEmbeddedMLP` whose last layer starts at zero, so the
    step starts as the identity. Both directions are numerical (an ODE
    solve, see `ContinuousFlow`); the log-det uses the exact trace. Train it
    by maximum likelihood like any step, or by flow matching through
    `tfp_flows.continuous.ContinuousFlowModel` (`tfp_flows.continuous.cnf`).

    Arguments:
        hidden_units, activation, time_frequencies: the field's network (see
            `TimeEmbeddedMLP`).
        solver, num_steps, rtol, atol, max_num_steps: see `ContinuousFlow`.
        training_trace: "exact" (default) or "hutchinson": the trace used in
            maximum-likelihood training steps only (Hutchinson's estimate
            with one Rademacher probe per row); every other call is exact.
        context_size: makes the field conditional on a context vector of
            this size (see `FlowLayer`).

    Under a mixed precision policy the field computes in the variable dtype:
    an ODE solve in 16 bits would not be invertible to any useful accuracy.

    Example:
        >>> from tfp_flows import FlowModel
        >>> layer = ContinuousFlowLayer(hidden_units=(8,), solver="rk4", num_steps=4)
        >>> FlowModel([layer], event_shape=(2,)).log_prob([[0.0, 0.0]]).numpy().round(4)
        array([-1.8379], dtype=float32)
    """

    supports_context = True

    def __init__(
        self,
        hidden_units=(64, 64),
        activation="silu",
        time_frequencies=4,
        solver="dopri5",
        num_steps=16,
        rtol=1e-5,
        atol=1e-5,
        max_num_steps=1000,
        training_trace="exact",
        context_size=None,
        **kwargs,
    ):
        super().__init__(context_size=context_size, **kwargs)
        check_solver_options(solver, num_steps, rtol, atol, max_num_steps)
        check_tolerance_for_dtype(rtol, self.dtype_policy.variable_dtype)
        if training_trace not in TRAINING_TRACES:
            raise ValueError(
                f"unknown training_trace {training_trace!r}; choose one of "
                f"{', '.join(TRAINING_TRACES)}."
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r} for a vector field; choose one of "
                f"{', '.join(ACTIVATIONS)}."
            )
        self.hidden_units = tuple(
            check_integer(units, "each of hidden_units") for units in hidden_units
        )
        self.activation = activation
        self.time_frequencies = check_integer(time_frequencies, "time_frequencies", minimum=0)
        self.solver = solver
        self.num_steps = int(num_steps)
        self.rtol, self.atol = float(rtol), float(atol)
        self.max_num_steps = int(max_num_steps)
        self.training_trace = training_trace

    def build_weights(self, event_size):
        self.network = TimeEmbeddedMLP(
            self.hidden_units,
            self.activation,
            self.time_frequencies,
            self.context_size,
            dtype=self.dtype_policy.variable_dtype,
            name="network",
        )
        self.network.build((None, event_size))

    def make_bijector(self):
        return ContinuousFlow(
            self.network,
            solver=self.solver,
            num_steps=self.num_steps,
            rtol=self.rtol,
            atol=self.atol,
            max_num_steps=self.max_num_steps,
            name=self.name,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "time_frequencies": self.time_frequencies,
            "solver": self.solver,
            "num_steps": self.num_steps,
            "rtol": self.rtol,
            "atol": self.atol,
            "max_num_steps": self.max_num_steps,
            "training_trace": self.training_trace,
        }
