"""Variational inference: fit a flow q to an unnormalised target p̃ by reverse KL.

KL(q‖p) = E_q[log q(x) − log p̃(x)] + log Z, where p = p̃ / Z. The expectation
(the negative ELBO) is estimated with reparameterised samples x = f(z),
z ~ base, so its gradient flows through the flow's forward map and forward
log-det only: planar flows, whose inverse is numerical, train at full speed.
The ELBO is a lower bound on log Z, tight exactly when q = p.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from tfp_flows import validation
from tfp_flows.model import FlowModel, gradient_step


class ReverseKL(keras.Model):
    """Trains a `FlowModel` to approximate exp(target_log_prob_fn) / Z with Keras' `fit`.

    `fit` needs no data: each step draws `batch_size` samples from the flow
    (stateless seeds from `seed`, so runs repeat exactly) and takes a step on
    loss = mean(log q(x) − target_log_prob_fn(x)), the negative ELBO. It
    reports `loss` and takes Keras' usual `epochs`, `steps_per_epoch`,
    `callbacks` and `verbose` (a progress bar by default). The flow keeps its
    weights: use `trainer.flow` (save it, sample it, score with it) afterwards.

    A target that returns NaN or ±Inf at a sampled point, or values of the
    wrong shape, stops training with a `ValueError` naming the problem; the
    step that met it changes no weight.

    Under a `tf.distribute` strategy each replica draws `batch_size` samples
    of its own per step. The same seed repeats a run for one `jit_compile`
    setting: XLA's stateless random numbers differ from TensorFlow's.

    Arguments:
        flow: an unconditional `FlowModel` (q).
        target_log_prob_fn: callable mapping a float tensor [n, *event_shape]
            to log p̃ of each point, [n]; TensorFlow ops only (it is traced).
        batch_size: samples per step.
        seed: int; the same seed gives the same training run.

    Example:
        >>> from tfp_flows import flows
        >>> flow = flows.realnvp(2, num_layers=2, hidden_units=(8,))
        >>> trainer = ReverseKL(flow, lambda x: -0.5 * tf.reduce_sum((x - 1.0) ** 2, -1))
        >>> trainer.compile(keras.optimizers.Adam(1e-2))
        >>> history = trainer.fit(epochs=1, steps_per_epoch=5, verbose=0)
        >>> len(history.history["loss"])
        1
    """

    def __init__(self, flow, target_log_prob_fn, batch_size=256, seed=0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(flow, FlowModel):
            raise TypeError(f"flow must be a FlowModel, got {type(flow).__name__}.")
        if flow.conditional:
            raise ValueError("ReverseKL fits an unconditional flow; this one takes a context.")
        if not callable(target_log_prob_fn):
            raise TypeError("target_log_prob_fn must be callable.")
        self.flow = flow
        self.target_log_prob_fn = target_log_prob_fn
        self.batch_size = validation.check_integer(batch_size, "batch_size")
        self.seed = validation.check_integer(seed, "seed", minimum=0, maximum=validation.INT32_MAX)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True  # nothing to build: the flow is built, and there is no call()
        self._step = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="step"
        )

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _negative_elbo_terms(self, n, seed):
        """log q(x) − log p̃(x) for n samples x ~ q, checked finite."""
        x, log_q = self.flow.distribution.experimental_sample_and_log_prob(n, seed=seed)
        log_p = self._target(x)
        return log_q - log_p

    def _target(self, x):
        log_p = tf.convert_to_tensor(self.target_log_prob_fn(x))
        self._check_target_shape(x, log_p)
        return tf.debugging.check_numerics(tf.cast(log_p, self.flow.dtype), _NON_FINITE_TARGET)

    def train_step(self, data):
        # A fresh stateless seed per step, and per replica under tf.distribute.
        replica = tf.distribute.get_replica_context()
        seed = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(self.seed, tf.int64), self._step.value]),
            replica.replica_id_in_sync_group,
        )
        self._step.assign_add(1)

        def loss_terms():
            terms = self._negative_elbo_terms(self.batch_size, tf.cast(seed, tf.int32))
            return tf.reduce_sum(terms), tf.cast(tf.size(terms), terms.dtype)

        total, count = gradient_step(
            self.optimizer, self.flow.trainable_variables, loss_terms, self.flow.losses
        )
        self.loss_tracker.update_state(total / count)
        return {"loss": self.loss_tracker.result()}

    def fit(self, epochs=1, steps_per_epoch=100, **kwargs):
        """Keras' `fit` over `epochs` × `steps_per_epoch` steps of fresh samples; no data."""
        for name in ("x", "y", "validation_data", "validation_split", "sample_weight"):
            value = kwargs.pop(name, None)
            if value is not None and not (name == "validation_split" and value == 0):
                raise ValueError(f"ReverseKL.fit takes no data ({name}): it samples the flow.")
        kwargs.pop("shuffle", None)  # nothing to shuffle
        self._probe_target()
        # Steps carry no data, but tf.distribute splits a batch axis across replicas.
        replicas = self.distribute_strategy.num_replicas_in_sync
        steps = tf.data.Dataset.from_tensors(tf.zeros([replicas])).repeat()
        try:
            return super().fit(
                steps, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False, **kwargs
            )
        except tf.errors.InvalidArgumentError as error:
            if _NON_FINITE_TARGET not in str(error):
                raise
            raise ValueError(
                "target_log_prob_fn returned NaN or ±Inf at points sampled from the flow; "
                "training stopped before that step changed any weight. Make the target "
                "finite wherever the flow can put samples (the whole space)."
            ) from error

    def _probe_target(self):
        # Eagerly, before the first step: a wrong shape or a NaN is named here
        # with the offending point, instead of deep inside a traced step.
        x = self.flow.sample(min(self.batch_size, 64), seed=self.seed)
        log_p = tf.convert_to_tensor(self.target_log_prob_fn(x))
        self._check_target_shape(x, log_p)
        bad = ~np.isfinite(np.asarray(log_p, np.float64))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"target_log_prob_fn returned {float(log_p[first])} at "
                f"x = {np.asarray(x[first]).tolist()} (a sample of the flow): it must be "
                "finite wherever the flow can put samples."
            )

    def _check_target_shape(self, x, log_p):
        expected = x.shape[: -len(self.flow.event_shape)]
        if not log_p.dtype.is_floating or not log_p.shape.is_compatible_with(expected):
            raise ValueError(
                f"target_log_prob_fn must return one float log-density per point, shape "
                f"{expected.as_list()}, got {log_p.dtype.name} of shape {log_p.shape.as_list()}."
            )

    def elbo(self, num_samples=10000, seed=1):
        """Monte Carlo ELBO = E_q[log p̃ − log q] ≤ log Z, and its standard error."""
        terms = -self._sample_terms(num_samples, seed)
        return float(terms.mean()), float(terms.std() / np.sqrt(num_samples))

    def log_normalizer(self, num_samples=10000, seed=1):
        """Importance-sampling estimate of log Z = log E_q[p̃/q] (q as the proposal).

        Consistent, and tighter than the ELBO; it is only as good as q's tails.
        """
        log_weights = -self._sample_terms(num_samples, seed)
        return float(np.logaddexp.reduce(log_weights) - np.log(num_samples))

    def _sample_terms(self, num_samples, seed):
        num_samples = validation.check_integer(num_samples, "num_samples")
        seed = validation.check_integer(seed, "seed", minimum=0, maximum=validation.INT32_MAX)
        seed = tf.constant([self.seed, seed], tf.int32)
        if not hasattr(self, "_terms_fn"):
            object.__setattr__(
                self,
                "_terms_fn",
                # A partial: traced on its own, not counted with other trainers' (see model.py).
                tf.function(functools.partial(self._negative_elbo_terms), reduce_retracing=True),
            )
        return self._terms_fn(tf.constant(num_samples), seed).numpy().astype(np.float64)


_NON_FINITE_TARGET = "tfp_flows: target_log_prob_fn returned NaN or Inf"
