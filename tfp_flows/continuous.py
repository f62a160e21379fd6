"""Continuous normalizing flows trained by flow matching or maximum likelihood, with `fit`.

`ContinuousFlowModel` is a `FlowModel` whose `train_step` is either
conditional flow matching (simulation-free regression of the vector field on
the velocity of straight paths from base to data points; Lipman et al. 2023,
optionally with minibatch optimal-transport pairs, Tong et al. 2023) or
maximum likelihood through the ODE solver (Chen et al. 2018; Grathwohl et al.
2019). Validation (`validation_data`, `evaluate`) always reports the exact
negative log-likelihood. `cnf(dim, ...)` builds a ready model.

References:
    Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018.
    Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud, "FFJORD: Free-form
    Continuous Dynamics for Scalable Reversible Generative Models", ICLR 2019.
    Lipman, Chen, Ben-Hamu, Nickel & Le, "Flow Matching for Generative
    Modeling", ICLR 2023.
    Tong, Malkin, Huguet, Zhang, Rector-Brooks, Fatras, Wolf & Bengio,
    "Improving and generalizing flow-based generative models with minibatch
    optimal transport", TMLR 2024 (arXiv 2302.00482, 2023).
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import validation
from tfp_flows.layers import FlowLayer, ScaleAndShiftLayer
from tfp_flows.layers.continuous import ContinuousFlowLayer
from tfp_flows.model import FlowModel, gradient_step

tfb = tfp.bijectors

TRAININGS = ("flow_matching", "maximum_likelihood")
PAIRINGS = (None, "sinkhorn", "hungarian")
SINKHORN_ITERATIONS = 50
# Entropic regularisation of the Sinkhorn pairing, relative to the batch's mean cost:
# small enough that the plan is nearly a permutation, large enough for 50 iterations.
SINKHORN_REGULARIZATION = 0.05


@keras.saving.register_keras_serializable(package="tfp_flows")
class ContinuousFlowModel(FlowModel):
    """A `FlowModel` with continuous steps, trained by flow matching or maximum likelihood.

    `training="flow_matching"` (default): each training step draws base
    points z (through the model's fixed steps before the continuous ones),
    maps the batch's data x into the continuous steps' own space (through
    the inverse of the fixed steps after them, e.g. a standardising
    `ScaleAndShiftLayer`), pairs them (independently, or by minibatch
    optimal transport with `pairing`), draws times s ~ U[0, 1] and regresses
    the field on the straight path x_s = (1 − s)·z + s·x (+ σ·ε) onto its
    velocity x − z: loss = mean over the event of (v(x_s, s) − (x − z))².
    No ODE is solved in training. With K continuous steps in a row, step k
    covers s ∈ [k/K, (k+1)/K] of the same path (its own time t = K·s − k,
    velocity (x − z)/K). Models with other trainable steps are refused: flow
    matching would never train them.

    `training="maximum_likelihood"`: the mean NLL, through the solver (as
    `FlowModel`), with the exact trace or, for layers built with
    `training_trace="hutchinson"`, Hutchinson's estimate in training steps.

    Either way `fit` reports the training loss as `loss` (the flow-matching
    regression loss, or the NLL), and validation (`validation_data` with
    `validation_freq`, `evaluate`) the exact NLL as `val_loss`.

    Arguments:
        flow_layers, event_shape, base_distribution: as for `FlowModel`.
        training: "flow_matching" or "maximum_likelihood".
        pairing: flow matching's pairs of base and data points within a
            batch: None (independent), "sinkhorn" (minibatch OT: pairs drawn
            from an entropic plan, 50 log-domain iterations, pure TensorFlow)
            or "hungarian" (an exact assignment by SciPy's
            `linear_sum_assignment`; not under `jit_compile`). Unconditional
            flows only: a pairing across contexts would bias p(x | c).
        sigma: σ ≥ 0, the noise around the straight paths (Tong et al.'s
            I-CFM); 0 for straight lines.
        **kwargs: `FlowModel`'s (`name`, `dtype`, ...).

    Example:
        >>> import numpy as np
        >>> from tfp_flows.layers import ContinuousFlowLayer
        >>> model = ContinuousFlowModel(
        ...     [ContinuousFlowLayer(hidden_units=(16,), solver="rk4", num_steps=4)],
        ...     event_shape=(2,))
        >>> model.compile(keras.optimizers.Adam(1e-2))
        >>> x = np.random.default_rng(0).normal(1.0, 0.5, (256, 2)).astype("float32")
        >>> history = model.fit(x, batch_size=64, epochs=2, validation_data=x, verbose=0)
        >>> sorted(history.history)
        ['loss', 'val_bits_per_dim', 'val_loss']
    """

    def __init__(
        self,
        flow_layers,
        event_shape=None,
        base_distribution=None,
        training="flow_matching",
        pairing=None,
        sigma=0.0,
        **kwargs,
    ):
        if training not in TRAININGS:
            raise ValueError(
                f"unknown training {training!r}; choose one of {', '.join(TRAININGS)}."
            )
        if pairing not in PAIRINGS:
            raise ValueError(
                f"unknown pairing {pairing!r}; choose one of None, 'sinkhorn', 'hungarian'."
            )
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating)):
            raise ValueError(f"sigma must be a non-negative number, got {sigma!r}.")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a non-negative finite number, got {sigma!r}.")
        super().__init__(flow_layers, event_shape, base_distribution, **kwargs)
        self.training = training
        self.pairing = pairing
        self.sigma = float(sigma)
        if training == "flow_matching":
            self._before, self._continuous, self._after = _flow_matching_split(self.flow_layers)
            if pairing is not None and self.conditional:
                raise ValueError(
                    f"pairing={pairing!r} pairs base and data points across a batch, which "
                    "for a conditional flow mixes contexts and biases p(x | c): use "
                    "pairing=None with a context."
                )
        elif pairing is not None or sigma:
            raise ValueError(
                "pairing and sigma are options of flow matching; this model trains by "
                "maximum likelihood."
            )

    def build(self, input_shape):
        if not hasattr(self, "_seeds"):  # FlowModel builds itself in __init__
            self._seeds = keras.random.SeedGenerator(name="training_seeds")
        super().build(input_shape)

    @property
    def continuous_layers(self):
        """The model's `ContinuousFlowLayer`s, base → data."""
        return [step for step in self.flow_layers if isinstance(step, ContinuousFlowLayer)]

    def _next_seed(self):
        return keras.random.randint([2], 0, validation.INT32_MAX, dtype="int32", seed=self._seeds)

    # --- Training ----------------------------------------------------------

    def train_step(self, data):
        if self.training == "flow_matching":
            terms = gradient_step(
                self.optimizer,
                self.trainable_variables,
                lambda: self._flow_matching_terms(data),
                self.losses,
            )
            self.loss_tracker.update_state(tf.math.divide_no_nan(*terms), sample_weight=terms[1])
            return {"loss": self.loss_tracker.result()}
        if not any(layer.training_trace == "hutchinson" for layer in self.continuous_layers):
            return super().train_step(data)
        terms = gradient_step(
            self.optimizer,
            self.trainable_variables,
            lambda: self._estimated_negative_log_likelihood(data),
            self.losses,
        )
        return self._update_metrics(*terms)

    def _flow_matching_terms(self, data):
        """Σ w·(regression loss) over the batch, and Σ w (see the class docstring)."""
        x, context, sample_weight = self._data.batch(data)
        x = tf.cast(x, self.dtype)
        for step in reversed(self._after):  # data → the continuous steps' space
            x = _bijector(step).inverse(x)
        rows = tf.shape(x)[0]
        seeds = tf.unstack(tf.random.experimental.stateless_split(self._next_seed(), 5))
        z = self.base_distribution.sample(rows, seed=seeds[0])
        for step in self._before:  # base → the continuous steps' space
            z = _bijector(step).forward(z)
        if self.pairing == "sinkhorn":
            z = sinkhorn_pairing(x, z, seeds[1])
        elif self.pairing == "hungarian":
            z = hungarian_pairing(x, z)
        s = tf.random.stateless_uniform([rows], seeds[2], dtype=self.dtype)
        path = (1.0 - s)[:, None] * z + s[:, None] * x
        if self.sigma:
            path += self.sigma * tf.random.stateless_normal(tf.shape(x), seeds[3], dtype=x.dtype)
        target = x - z
        blocks = len(self._continuous)
        if context is not None:
            context = tf.cast(context, self.dtype)
        if blocks == 1:
            error = self._continuous[0].network(path, s, context=context) - target
        else:
            # Step k covers s in [k/K, (k+1)/K]: its own time is K·s − k, its velocity 1/K.
            block = tf.minimum(tf.cast(tf.floor(s * blocks), tf.int32), blocks - 1)
            local = s * blocks - tf.cast(block, self.dtype)
            rows_of = tf.dynamic_partition(tf.range(rows), block, blocks)
            parts = []
            for k, layer in enumerate(self._continuous):
                pick = rows_of[k]
                part_context = None if context is None else tf.gather(context, pick)
                velocity = layer.network(
                    tf.gather(path, pick), tf.gather(local, pick), context=part_context
                )
                parts.append(blocks * velocity - tf.gather(target, pick))
            error = tf.dynamic_stitch(rows_of, parts)
        loss = tf.reduce_mean(tf.square(error), axis=-1)
        if sample_weight is None:
            return tf.reduce_sum(loss), tf.cast(rows, self.dtype)
        weight = tf.reshape(tf.cast(sample_weight, self.dtype), [-1])
        return tf.reduce_sum(weight * loss), tf.reduce_sum(weight)

    def _estimated_negative_log_likelihood(self, data):
        """As `FlowModel`'s NLL terms, with Hutchinson's trace where the layers ask for it."""
        x, context, sample_weight = self._data.batch(data)
        x, context, kwargs = self._conditioned(tf.cast(x, self.dtype), context)
        seeds = tf.unstack(
            tf.random.experimental.stateless_split(self._next_seed(), len(self.continuous_layers))
        )
        kwargs = {name: dict(value) for name, value in kwargs.items()}
        for layer, seed in zip(self.continuous_layers, seeds):
            if layer.training_trace == "hutchinson":
                kwargs.setdefault(layer.bijector.name, {})["hutchinson_seed"] = seed
        log_prob = self._distribution.log_prob(x, bijector_kwargs=kwargs)
        if sample_weight is None:
            return -tf.reduce_sum(log_prob), tf.cast(tf.size(log_prob), self.dtype)
        weight = tf.reshape(sample_weight, tf.shape(log_prob))
        return -tf.reduce_sum(weight * log_prob), tf.reduce_sum(weight)

    def compile(self, optimizer="adam", **kwargs):
        if self.pairing == "hungarian" and kwargs.get("jit_compile") not in (None, False, "auto"):
            raise ValueError(
                "pairing='hungarian' runs SciPy inside the training step, which XLA cannot "
                "compile: use jit_compile=False, or pairing='sinkhorn'."
            )
        if self.pairing == "hungarian":
            kwargs["jit_compile"] = False
        super().compile(optimizer, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "training": self.training,
            "pairing": self.pairing,
            "sigma": self.sigma,
        }


def _bijector(step):
    return step.bijector if isinstance(step, FlowLayer) else step


def _flow_matching_split(flow_layers):
    """(steps before, continuous steps, steps after), refusing what flow matching can't train."""
    indices = [i for i, step in enumerate(flow_layers) if isinstance(step, ContinuousFlowLayer)]
    if not indices:
        raise ValueError(
            "flow matching trains continuous flow layers (ContinuousFlowLayer), but this model "
            "has none: use training='maximum_likelihood'."
        )
    first, last = indices[0], indices[-1]
    between = [
        step for step in flow_layers[first : last + 1] if not isinstance(step, ContinuousFlowLayer)
    ]
    if between:
        raise ValueError(
            f"flow matching needs the continuous flow layers in a row (they share one path "
            f"from base to data), but {_name(between[0])} sits between them: move it before "
            "or after them, or train by maximum likelihood."
        )
    for step in flow_layers[:first] + flow_layers[last + 1 :]:
        weights = (
            step.trainable_weights if isinstance(step, FlowLayer) else step.trainable_variables
        )
        if weights:
            raise ValueError(
                f"flow matching trains only the continuous flow layers, but {_name(step)} has "
                f"{len(weights)} trainable weights it would never train: make that step fixed "
                "(e.g. a ScaleAndShiftLayer), or train by maximum likelihood "
                "(training='maximum_likelihood')."
            )
        if getattr(step, "conditional", False):
            raise ValueError(
                f"flow matching conditions only the continuous flow layers, but {_name(step)} "
                "takes a context: train by maximum likelihood."
            )
    return flow_layers[:first], flow_layers[first : last + 1], flow_layers[last + 1 :]


def _name(step):
    return f"{type(step).__name__} {step.name!r}"


# --- Minibatch optimal-transport pairs --------------------------------------------


def sinkhorn_pairing(
    x, z, seed, iterations=SINKHORN_ITERATIONS, regularization=SINKHORN_REGULARIZATION
):
    """z reordered so that row i pairs with x_i, drawn from an entropic OT plan between the rows.

    The cost is the squared distance; the plan of the uniform marginals is
    found by log-domain Sinkhorn iterations with ε = regularization × the
    mean cost, and each x_i draws its partner from its row of the plan (Tong
    et al.'s OT-CFM samples pairs from the plan the same way). No gradient
    flows through the pairing.
    """
    x, z = tf.stop_gradient(x), tf.stop_gradient(z)
    cost = tf.reduce_sum(tf.square(x[:, None, :] - z[None, :, :]), axis=-1)
    epsilon = regularization * tf.maximum(tf.reduce_mean(cost), tf.constant(1e-12, cost.dtype))
    log_kernel = -cost / epsilon
    n = tf.cast(tf.shape(x)[0], cost.dtype)
    log_marginal = -tf.math.log(n)
    f = tf.zeros_like(cost[:, 0])
    g = tf.zeros_like(cost[0])
    for _ in range(iterations):
        f = log_marginal - tf.reduce_logsumexp(log_kernel + g[None, :], axis=1)
        g = log_marginal - tf.reduce_logsumexp(log_kernel + f[:, None], axis=0)
    logits = log_kernel + g[None, :]  # row i of the plan, up to its normalisation
    partner = tf.random.stateless_categorical(tf.cast(logits, tf.float32), 1, seed)[:, 0]
    return tf.gather(z, partner)


def hungarian_pairing(x, z):
    """z reordered by the exact assignment minimising Σ |x_i − z_π(i)|² (SciPy), no gradient."""

    def assign(x, z):
        from scipy.optimize import linear_sum_assignment

        cost = ((x[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        return linear_sum_assignment(cost)[1].astype(np.int32)

    partner = tf.numpy_function(assign, [tf.stop_gradient(x), tf.stop_gradient(z)], tf.int32)
    return tf.gather(z, tf.reshape(partner, [-1]))


# --- The factory ------------------------------------------------------------------


def cnf(
    dim,
    num_layers=1,
    hidden_units=(64, 64),
    activation="silu",
    training="flow_matching",
    solver="dopri5",
    num_steps=16,
    rtol=1e-5,
    atol=1e-5,
    max_num_steps=1000,
    training_trace="exact",
    time_frequencies=4,
    pairing=None,
    sigma=0.0,
    standardize=None,
    context_size=None,
    **model_kwargs,
):
    """A continuous normalizing flow: `num_layers` ODE steps on time-embedded MLP fields.

    Trained by conditional flow matching (default) or maximum likelihood
    (see `ContinuousFlowModel`); `log_prob` is exact (see `ContinuousFlow`
    for what that means for a numerical solver), sampling and density each
    one ODE solve per step.

    Arguments:
        dim: event size.
        num_layers: continuous steps in a row (flow matching splits the path's
            time between them); one is usual.
        hidden_units, activation, time_frequencies: each step's field (see
            `TimeEmbeddedMLP`; an int means one layer).
        training: "flow_matching" or "maximum_likelihood".
        solver, num_steps, rtol, atol, max_num_steps: see `ContinuousFlow`.
        training_trace: "exact" or "hutchinson" (maximum likelihood only).
        pairing, sigma: flow matching's options (see `ContinuousFlowModel`).
        standardize: optional training data [N, dim]; its mean and std set a
            fixed last step, so the field works on standardised values
            (flow matching regresses there) while `log_prob` stays the
            density of the data in its own units.
        context_size: makes every step conditional on a context vector of
            this size: a flow for p(x | context).
        **model_kwargs: `FlowModel`'s arguments (`dtype`, `name`, ...).

    Example:
        >>> model = cnf(2, hidden_units=(16,), solver="rk4", num_steps=4)
        >>> model.sample(3, seed=0).shape
        TensorShape([3, 2])
    """
    from tfp_flows import flows  # the factories' shared checks (flows imports this module)

    flows._check_dim(dim, minimum=1, family="cnf")
    dtype = model_kwargs.get("dtype")
    steps = [
        ContinuousFlowLayer(
            flows._hidden_units(hidden_units),
            activation,
            time_frequencies,
            solver,
            num_steps,
            rtol,
            atol,
            max_num_steps,
            training_trace,
            context_size,
            dtype=dtype,
            name=f"cnf_{i}",
        )
        for i in range(flows._num_layers(num_layers))
    ]
    if standardize is not None:
        steps.append(ScaleAndShiftLayer.from_data(standardize, dtype=dtype, name="standardize"))
    return ContinuousFlowModel(
        steps,
        event_shape=(dim,),
        training=training,
        pairing=pairing,
        sigma=sigma,
        **model_kwargs,
    )
