"""The baselines: TFP's built-in flows around tfp_flows' own Keras 3 networks.

A comparison of implementations is fair only if both sides run the same
function from the same weights. So each built-in flow here is assembled from
TFP's own bijectors around the very networks tfp_flows' layers build
(`tfp_flows.layers.MLP`, `MADE`, with the transformer's output scaling), in
the same order, so that with the same seed both systems start from identical
weights (`same_start` checks it); the raw network outputs become the
bijector's parameters through tfp_flows' own parametrisation
(`tfp_flows.bijectors.transformers`: `Affine.shift_and_log_scale`,
`RationalQuadraticSpline.tfp_bijector`), not a copy of it.

- coupling flows, `coupling_flow`: `tfb.RealNVP` couplings, each followed
  by a `tfb.Permute` swapping the halves (so coupling i conditions on the
  same half, in the same order, as tfp_flows' coupling i); the affine
  transformer through `shift_and_log_scale_fn` (RealNVP), any other through
  `bijector_fn` (the spline: NSF with `tfb.RationalQuadraticSpline`);
- autoregressive flows, `autoregressive_flow`: `tfb.MaskedAutoregressiveFlow`
  steps on tfp_flows' Keras 3 `MADE` (TFP's `tfb.AutoregressiveNetwork` is
  a tf_keras layer, never trained under Keras 3), the event reversed between
  steps; affine (MAF) or spline (NSF-AR).

`BuiltinFlow` is the Keras model that owns the networks: trained by Keras
`fit` like tfp_flows' `FlowModel`, or by the loop a TFP user writes by hand
(`tf_function_step`: `tf.GradientTape` and `optimizer.apply_gradients` in
a `@tf.function`, as TFP's tutorials teach).
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.layers import MADE, MLP, ScaleAndShiftLayer

tfb = tfp.bijectors
tfd = tfp.distributions

NAMES = {
    "realnvp": "tfb.RealNVP",
    "nsf": "tfb.RealNVP + tfb.RationalQuadraticSpline",
    "maf": "tfb.MaskedAutoregressiveFlow",
    "nsf_ar": "tfb.MaskedAutoregressiveFlow + tfb.RationalQuadraticSpline",
}


class BuiltinFlow(keras.Model):
    """A flow of TFP's built-in bijectors whose networks (Keras 3 layers) this model owns.

    `steps` are bijectors base → data that call `networks`; `standardize`
    (training data) adds tfp_flows' fixed standardising last step
    (`ScaleAndShiftLayer.from_data`). `model(x)` is log p(x); `fit` minimises
    the mean negative log-likelihood, as `FlowModel`'s does.
    """

    def __init__(self, networks, steps, dim, standardize=None, **kwargs):
        super().__init__(**kwargs)
        self.networks = networks
        self.loss_tracker = keras.metrics.Mean(name="loss")
        if standardize is not None:
            last = ScaleAndShiftLayer.from_data(standardize, name="standardize")
            last.build((None, dim))
            steps = [*steps, last.bijector]
        base = tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=[dim])
        # `steps` is base → data; Chain applies its last bijector first.
        self.distribution = tfd.TransformedDistribution(base, tfb.Chain(steps[::-1]))
        self.built = True

    def call(self, inputs):
        return self.distribution.log_prob(inputs)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self.distribution.log_prob(x))
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


# --- The networks, as tfp_flows' layers build them ---------------------------------


def _output_scale(transformer, num_elements, fan_in):
    scale = transformer.raw_scale(num_elements, fan_in)
    return None if scale is None else scale.tolist()


def coupling_network(transformer, num_conditioning, num_transformed, hidden_units, name):
    """`CouplingLayer`'s network: an MLP of x_a to x_b's raw parameters, built."""
    fan_in = hidden_units[-1] if hidden_units else num_conditioning
    network = MLP(
        transformer.raw_size(num_transformed),
        hidden_units,
        output_scale=_output_scale(transformer, num_transformed, fan_in),
        name=name,
    )
    network.build((None, num_conditioning))
    return network


def autoregressive_network(transformer, dim, hidden_units, name):
    """`MaskedAutoregressiveLayer`'s network: a MADE to the raw parameters, built."""
    fan_in = hidden_units[-1] if hidden_units else dim
    network = MADE(
        hidden_units,
        parameters=transformer.num_parameters,
        layout=transformer.layout,
        output_scale=_output_scale(transformer, dim, fan_in),
        name=name,
    )
    network.build((None, dim))
    return network


# --- The flows ------------------------------------------------------------------------


def _swap_halves(dim):
    if dim % 2:
        raise ValueError(f"the built-in couplings here need an even event size, got {dim}.")
    return tfb.Permute(list(range(dim // 2, dim)) + list(range(dim // 2)))


def coupling_flow(
    dim, transformer="affine", num_layers=8, hidden_units=(64, 64), standardize=None, **options
):
    """`tfb.RealNVP` couplings, the halves swapped after each: `flows.realnvp` / `flows.nsf`.

    `transformer` and its `options` as for tfp_flows' factories ("affine"
    with `log_scale_clamp`, "spline" with `num_bins`, `bound`, ...).
    """
    transformer = transformers_lib.get(transformer, **options)
    half = dim // 2
    swap = _swap_halves(dim)
    networks = [
        coupling_network(transformer, half, dim - half, tuple(hidden_units), f"net_{i}")
        for i in range(num_layers)
    ]
    steps = []
    for network in networks:
        if isinstance(transformer, transformers_lib.Affine):
            # RealNVP's own affine path; the clamp is tfp_flows' (3·tanh(s/3) by default).
            def shift_and_log_scale(x, output_units, network=network):
                return transformer.shift_and_log_scale(network(x))

            coupling = tfb.RealNVP(num_masked=half, shift_and_log_scale_fn=shift_and_log_scale)
        else:

            def bijector(x, input_depth, network=network):
                return transformer.tfp_bijector(network(x), dim - half)

            coupling = tfb.RealNVP(num_masked=half, bijector_fn=bijector)
        steps += [coupling, swap]
    if num_layers % 2:  # back to the data's own order, as after tfp_flows' last coupling
        steps.append(swap)
    return BuiltinFlow(networks, steps, dim, standardize)


def autoregressive_flow(
    dim, transformer="affine", num_layers=5, hidden_units=(64, 64), standardize=None, **options
):
    """`tfb.MaskedAutoregressiveFlow` steps on MADEs, reversed between: `flows.maf`.

    The affine transformer gives MAF (through `shift_and_log_scale_fn`), the
    spline NSF-AR (through `bijector_fn`).
    """
    transformer = transformers_lib.get(transformer, **options)
    networks = [
        autoregressive_network(transformer, dim, tuple(hidden_units), f"made_{i}")
        for i in range(num_layers)
    ]
    reverse = tfb.Permute(list(range(dim))[::-1])
    steps = []
    for i, network in enumerate(networks):
        if i:
            steps.append(reverse)
        if isinstance(transformer, transformers_lib.Affine):

            def shift_and_log_scale(x, network=network):
                return transformer.shift_and_log_scale(network(x))

            steps.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=shift_and_log_scale))
        else:

            def bijector(x, network=network):
                return transformer.tfp_bijector(network(x), dim)

            steps.append(tfb.MaskedAutoregressiveFlow(bijector_fn=bijector))
    return BuiltinFlow(networks, steps, dim, standardize)


# --- Checks and the hand-written loop ------------------------------------------------


def same_start(ours, theirs, points, seed=0, noise=0.01):
    """Whether two models built with the same seed start alike and compute the same function.

    Are all initial weights equal, and the initial log p on `points`? The
    output layers start at zero, so the latter alone says little; hence also
    the largest log p difference after adding the same noise (σ = `noise`)
    to every weight of both. Changes the models' weights.
    """
    a_weights, b_weights = ours.trainable_weights, theirs.trainable_weights
    shapes_match = [tuple(a.shape) for a in a_weights] == [tuple(b.shape) for b in b_weights]
    same_weights = shapes_match and all(
        np.array_equal(a.numpy(), b.numpy()) for a, b in zip(a_weights, b_weights)
    )
    points = tf.constant(points)

    def largest_difference():
        a, b = (model.distribution.log_prob(points).numpy() for model in (ours, theirs))
        return float(np.max(np.abs(a - b))), float(np.max(np.abs(a)))

    initial, _ = largest_difference()
    perturbed, scale = math.nan, math.nan
    if shapes_match:
        rng = np.random.default_rng(seed)
        for a, b in zip(a_weights, b_weights):
            delta = noise * rng.standard_normal(a.shape).astype(np.float32)
            a.assign(a.numpy() + delta)
            b.assign(b.numpy() + delta)
        perturbed, scale = largest_difference()
    return {
        "same_initial_weights": bool(same_weights),
        "initial_log_prob_max_abs_diff": initial,
        "perturbed_log_prob_max_abs_diff": perturbed,
        "perturbed_log_prob_max_abs": scale,
        "equivalent": bool(same_weights and perturbed <= 1e-4 * max(1.0, scale)),
    }


def tf_function_step(model, optimizer, jit_compile=False):
    """The training step a TFP user writes by hand, as TFP's tutorials teach it.

    A `@tf.function` that takes a batch, computes the mean negative
    log-likelihood of `model.distribution` under a `tf.GradientTape` and
    applies the gradients with `optimizer.apply_gradients` over the model's
    (Keras 3) trainable variables; it returns the loss. No Keras `fit`.
    `jit_compile` compiles the step with XLA.
    """
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function(jit_compile=jit_compile)
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.distribution.log_prob(x))
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    return train_step
