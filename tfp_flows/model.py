"""`FlowModel`: a Keras 3 model whose distribution is a TFP TransformedDistribution.

The model composes the pieces that live elsewhere: input checks and the
adaptation of Keras data (`tfp_flows.validation`), context broadcasting and
routing (`tfp_flows.context`), data-dependent initialisation (the flow
layers' `initialize_from_data` hook) and the one training step shared with
`tfp_flows.variational.ReverseKL` (`gradient_step`).
"""

import functools
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import context as context_lib
from tfp_flows import validation
from tfp_flows.bijectors.base import FlowChain
from tfp_flows.layers import FlowLayer
from tfp_flows.layers.base import split_mixed_policy

tfb = tfp.bijectors
tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="tfp_flows")
class FlowModel(keras.Model):
    """A normalizing flow as a Keras model, trained by maximum likelihood with `fit`.

    `flow_layers` are applied in order in the forward (sampling) direction,
    base → data: `flow_layers[-1]` is the step nearest the data. Each item is
    a `FlowLayer` (which owns its weights) or a fixed `tfb.Bijector` with no
    weights. `model.distribution` is a genuine `tfd.TransformedDistribution`
    of the base distribution through a `tfb.Chain` of the steps' bijectors
    (`FlowChain`, whose cache is tape-aware), base → data, so it
    composes with the rest of TFP.

    Training minimises the mean negative log-likelihood (nats per example);
    `fit` reports it as `loss`, and as `bits_per_dim` = loss / (D·ln 2).
    `model(x)` and `model.predict(x)` return log p(x) per example.

    Conditional flows: when flow layers are built with `context_size=C`, the
    model is a conditional density p(x | c) for a context vector c of size C
    (a one-hot class, observed data, ...). Every method then takes
    `context`, a float array [..., C] whose batch shape broadcasts with the
    data's: `log_prob(x, context=c)`, `sample(n, context=c)` (shape
    [n, *batch, D] for contexts of batch shape `batch`), `forward`, `inverse`.
    `fit(x, c)` trains on (x, context) pairs: the context takes the place of
    Keras' targets, so a `tf.data.Dataset` of `(x, context)` or
    `(x, context, sample_weight)` works too; `model((x, c))` and
    `model.predict((x, c))` return log p(x | c). With TFP directly:
    `model.distribution.log_prob(x, bijector_kwargs=model.bijector_kwargs(c))`.

    Arguments:
        flow_layers: the flow's steps, base → data.
        event_shape: shape of one example, e.g. `(2,)`. May be omitted when
            `base_distribution` is given.
        base_distribution: any `tfd.Distribution` over that event shape;
            a standard normal by default.
        **kwargs: passed to `keras.Model` (`name`, `dtype`, ...).

    Example:
        >>> import numpy as np
        >>> from tfp_flows import FlowModel, layers
        >>> model = FlowModel([layers.PlanarLayer() for _ in range(4)], event_shape=(2,))
        >>> model.log_prob(np.zeros((3, 2), np.float32)).shape
        TensorShape([3])
        >>> from tfp_flows.bijectors import half_mask
        >>> conditional = FlowModel(
        ...     [layers.AffineCouplingLayer(half_mask(2), context_size=3)], event_shape=(2,))
        >>> conditional.sample(5, context=np.eye(3, dtype=np.float32), seed=0).shape
        TensorShape([5, 3, 2])
    """

    def __init__(self, flow_layers, event_shape=None, base_distribution=None, **kwargs):
        super().__init__(**kwargs)
        # A mixed policy is the flow layers' business (their networks compute in 16
        # bits); the model's data, base distribution, log-dets and loss stay float32.
        self._given_dtype_policy = split_mixed_policy(self)
        if base_distribution is not None:
            _check_base_distribution(base_distribution, self.dtype)
        self.event_shape = _event_shape(event_shape, base_distribution)
        self.event_size = int(np.prod(self.event_shape))
        self.flow_layers = _check_flow_layers(flow_layers, self.event_shape, self.dtype)
        self.context_size = _context_size(self.flow_layers)
        self._custom_base = base_distribution is not None
        self.base_distribution = base_distribution or tfd.Sample(
            tfd.Normal(tf.constant(0.0, self.dtype), tf.constant(1.0, self.dtype)),
            sample_shape=self.event_shape,
            name="standard_normal",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.bits_per_dim_tracker = keras.metrics.Mean(name="bits_per_dim")
        # Compiled eager entry points and the data adapter, kept out of Keras' tracking.
        object.__setattr__(self, "_compiled", {})
        object.__setattr__(
            self,
            "_data",
            validation.DataAdapter(
                self.event_shape, self.context_size, self.dtype, self._check_values
            ),
        )
        self._chunk_size = 65536 if len(self.event_shape) == 1 else 1024
        events = (None,) + self.event_shape
        # A conditional model's inputs are (x, context) pairs (Keras' default
        # SavedModel signature is traced from the shapes given here).
        self.build((events, (None, self.context_size)) if self.conditional else events)

    def build(self, input_shape):
        if self.conditional:
            input_shape = input_shape[0]
        bijectors = []
        for step in self.flow_layers:
            if isinstance(step, FlowLayer):
                if not step.built:
                    step.build(input_shape)
                bijectors.append(step.bijector)
            else:
                bijectors.append(step)
        self._distribution = tfd.TransformedDistribution(
            self.base_distribution, FlowChain(bijectors[::-1], name="flow"), name=self.name
        )
        self.built = True

    @property
    def distribution(self):
        """The flow as a `tfd.TransformedDistribution` (base → data)."""
        return self._distribution

    @property
    def bijector(self):
        """The flow's `tfb.Chain`, mapping base → data with `forward`."""
        return self._distribution.bijector

    @property
    def conditional(self):
        return self.context_size is not None

    @property
    def chunk_size(self):
        """Most rows one compiled call takes: larger eager inputs run in chunks of this many.

        Bounds the memory of `log_prob`, `sample`, `forward` and `inverse` on
        millions of points to their inputs and outputs plus one chunk's
        activations. 65536 for vector events, 1024 for images.
        """
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value):
        self._chunk_size = validation.check_integer(value, "chunk_size")

    def bijector_kwargs(self, context):
        """The `bijector_kwargs` that route `context` to every conditional step."""
        return context_lib.bijector_kwargs(self.flow_layers, context)

    # --- Densities, samples, maps ------------------------------------------

    def log_prob(self, x, context=None):
        """log p(x) (or log p(x | context)) per example, exact; x has shape [..., *event_shape].

        Every input gets the right answer: a row with NaN gives NaN; a row
        with ±Inf, or outside the support of a bounded flow (an image flow's
        stretched pixel range, see `LogitLayer`), gives -inf (density 0). A
        context with NaN or Inf is refused eagerly; inside a graph (an
        export) its rows give NaN.
        """
        x = validation.check_events(x, self.event_shape, self.dtype)
        args = self._conditional_args(x, context)
        return self._run_batched("log_prob", self._guarded_log_prob, x, *args)

    def prob(self, x, context=None):
        return tf.exp(self.log_prob(x, context))

    def bits_per_dim(self, x, context=None):
        """−log₂ p(x) / D per example."""
        return -self.log_prob(x, context) / (self.event_size * math.log(2.0))

    def sample(self, n, seed=None, context=None, temperature=None):
        """Draws `n` samples; the same `seed` gives the same ones.

        `seed` is an int in [0, 2**64) or a stateless seed, two int32 values
        (`[1, 2]`); distinct int seeds give distinct samples. Seeds are
        stateless: `model.sample(5, seed=42)` repeats exactly, unlike TFP's
        `model.distribution.sample(5, seed=42)`, whose int seeds are stateful.
        A conditional flow draws n per context: shape [n, *batch, *event_shape]
        for a context of shape [*batch, C]. `temperature` T scales the base
        samples before mapping them (Glow's "temperature": T < 1 trades
        diversity for typical-looking samples); None samples the model itself.
        More than `chunk_size` rows are drawn in chunks, each from its own
        seed split off `seed`.
        """
        n = validation.check_sample_count(n)
        seed = None if seed is None else validation.check_seed(seed)
        name = "sample" if seed is None else "sample_seeded"
        if temperature is not None:
            temperature = validation.check_temperature(temperature, self.dtype)
            name += "_tempered"
        args = (temperature, *self._context_args(context))
        if not tf.executing_eagerly():
            return self._sample(n, seed, *args)
        rows = int(np.prod(args[1].shape[:-1])) if self.conditional else 1
        per_call, total = max(1, self.chunk_size // max(rows, 1)), int(n)
        if total <= per_call:
            return self._run(name, self._sample, n, seed, *args)
        count = math.ceil(total / per_call)
        seeds = (
            [None] * count
            if seed is None
            else tf.unstack(tf.random.experimental.stateless_split(seed, count))
        )
        sizes = [per_call] * (count - 1) + [total - per_call * (count - 1)]
        parts = [
            self._run(name, self._sample, tf.constant(size, tf.int32), chunk_seed, *args)
            for size, chunk_seed in zip(sizes, seeds)
        ]
        return tf.concat(parts, axis=0)

    def forward(self, z, context=None):
        """Maps base-space points to data space (the sampling direction)."""
        return self._mapped("forward", z, context, with_log_det=False)

    def inverse(self, x, context=None):
        """Maps data to base space (the normalizing direction); NaN outside a bounded support."""
        return self._mapped("inverse", x, context, with_log_det=False)

    def forward_and_log_det(self, z, context=None):
        """(x, log|det ∂x/∂z|) per example: the forward map and its log-determinant."""
        return self._mapped("forward", z, context, with_log_det=True)

    def inverse_and_log_det(self, x, context=None):
        """(z, log|det ∂z/∂x|) per example: the inverse map and its log-determinant."""
        return self._mapped("inverse", x, context, with_log_det=True)

    def _mapped(self, direction, points, context, with_log_det):
        argument = "z" if direction == "forward" else "x"
        points = validation.check_events(points, self.event_shape, self.dtype, argument=argument)
        args = self._conditional_args(points, context, argument)
        name = direction + ("_and_log_det" if with_log_det else "")
        return self._run_batched(name, self._transform(direction, with_log_det), points, *args)

    # --- Data-dependent initialisation ---------------------------------------

    @property
    def needs_data_initialization(self):
        """True while a step (ActNorm) waits to initialise from data; `fit` then does it."""
        return any(
            layer.needs_data_initialization
            for step in self.flow_layers
            if isinstance(step, FlowLayer)
            for layer in step.walk()
        )

    def initialize_from_data(self, x, context=None):
        """Data-dependent initialisation (ActNorm) from a batch x; `fit` does it by itself.

        Runs one eager pass in the normalizing direction in which every flow
        layer still waiting to initialise from data (`needs_data_initialization`)
        gets the values reaching it (`FlowLayer.initialize_from_data`) before
        it is applied. Steps already initialised are left alone. The batch
        must be finite (a NaN would become a NaN weight).
        """
        x = validation.check_training_data(x, self.event_shape, "the initialisation batch")
        (context,) = self._conditional_args(tf.convert_to_tensor(x), context) or (None,)
        values = tf.cast(x, self.dtype)

        def visit(layer, reaching):
            if layer.needs_data_initialization:
                layer.initialize_from_data(reaching)

        for step in reversed(self.flow_layers):
            if not isinstance(step, FlowLayer):
                values = step.inverse(values)
                continue
            kwargs = {"context": context} if step.conditional else {}
            values = step.inverse_visiting(values, visit, **kwargs)

    # --- Internals: contexts, guarded answers, compiled calls ----------------

    def _check_values(self, x, argument="x"):
        """The data-side step's check of training data (e.g. a declared pixel range)."""
        nearest_data = self._nearest_data_layer()
        if nearest_data is not None and (not tf.is_tensor(x) or tf.executing_eagerly()):
            nearest_data.check_data(x, argument)

    def _nearest_data_layer(self):
        nearest_data = self.flow_layers[-1] if self.flow_layers else None
        return nearest_data if isinstance(nearest_data, FlowLayer) else None

    def _context_args(self, context):
        """() for an unconditional flow, (context,) checked for a conditional one."""
        if not self.conditional:
            if context is not None:
                raise ValueError(
                    "this flow is not conditional (no flow layer has a context_size), "
                    "but a context was given."
                )
            return ()
        return (validation.check_context(context, self.context_size, self.dtype),)

    def _conditional_args(self, points, context, argument="x"):
        """(context,) checked against the points' batch shape, or () if unconditional."""
        args = self._context_args(context)
        if args:
            validation.check_batch_shapes_broadcast(
                points.shape[: points.shape.rank - len(self.event_shape)],
                args[0].shape[:-1],
                argument,
            )
        return args

    def _conditioned(self, points, context):
        """(points, context, bijector kwargs), points and context broadcast to one batch shape."""
        if context is None:
            return points, None, {}
        points, context = context_lib.broadcast(points, context, len(self.event_shape))
        return points, context, self.bijector_kwargs(context)

    def _log_prob(self, x, context=None):
        """The flow's log-density of x, unguarded: for checked data (training).

        With the default standard normal base this is the change of variables
        written out, log N(z; 0, I) + log|det ∂z/∂x| with z the chain's
        inverse, rather than TFP's `TransformedDistribution.log_prob`: the same
        numbers without its shape-broadcasting ops, which cost time on small
        batches and which some runtimes (ONNX) cannot convert.
        """
        x, _, kwargs = self._conditioned(x, context)
        if self._custom_base:
            return self._distribution.log_prob(x, bijector_kwargs=kwargs)
        event_ndims = len(self.event_shape)
        z = self.bijector.inverse(x, **kwargs)
        log_det = self.bijector.inverse_log_det_jacobian(x, event_ndims=event_ndims, **kwargs)
        axes = list(range(-event_ndims, 0))
        log_normal = -0.5 * tf.reduce_sum(tf.square(z), axis=axes)
        return log_normal + (log_det - 0.5 * self.event_size * math.log(2.0 * math.pi))

    def _support(self):
        """(low, high) when the data-side step accepts only values in that open box, else None."""
        nearest_data = self._nearest_data_layer()
        return None if nearest_data is None else nearest_data.support

    def _inside_support(self, x):
        """True per event where every value lies in the support's open box (None: no bounds)."""
        support = self._support()
        if support is None:
            return None
        low, high = support
        return tf.reduce_all((x > low) & (x < high), axis=list(range(-len(self.event_shape), 0)))

    def _guarded_log_prob(self, x, context=None):
        """`_log_prob` with the right answer for every input (see `log_prob`)."""
        axes = list(range(-len(self.event_shape), 0))
        nan_row = tf.reduce_any(tf.math.is_nan(x), axis=axes)
        valid = tf.reduce_all(tf.math.is_finite(x), axis=axes)
        safe_value = 0.0
        inside = self._inside_support(x)
        if inside is not None:
            valid &= inside
            safe_value = 0.5 * sum(self._support())
        # Invalid rows run through the flow at a safe point, so that neither they nor
        # their gradients can turn into NaN, and are then given their answer.
        safe = tf.where(self._per_event(valid), x, tf.constant(safe_value, x.dtype))
        log_prob = self._log_prob(safe, context)
        log_prob = tf.where(valid, log_prob, tf.constant(-np.inf, log_prob.dtype))
        log_prob = tf.where(nan_row, tf.constant(np.nan, log_prob.dtype), log_prob)
        if context is not None:
            log_prob = context_lib.nan_where_not_finite(log_prob, context, 0)
        return log_prob

    def _per_event(self, rows):
        """A boolean [*batch] as [*batch, 1, ..., 1], to select whole events."""
        ones = tf.ones([len(self.event_shape)], tf.int32)
        return tf.reshape(rows, tf.concat([tf.shape(rows), ones], axis=0))

    def _sample(self, n, seed, temperature=None, context=None):
        if context is None and temperature is None:
            return self._distribution.sample(n, seed=seed)
        # TFP samples the base with the distribution's batch shape, which knows
        # nothing of the context's: draw [n, *batch] base points and map them.
        shape = [n] if context is None else tf.concat([[n], tf.shape(context)[:-1]], axis=0)
        z = self.base_distribution.sample(shape, seed=seed)
        if temperature is not None:
            z = z * temperature
        z, context, kwargs = self._conditioned(z, context)
        samples = self.bijector.forward(z, **kwargs)
        if context is not None:
            samples = context_lib.nan_where_not_finite(samples, context, len(self.event_shape))
        return samples

    def _transform(self, direction, with_log_det=False):
        event_ndims = len(self.event_shape)

        def transform(points, context=None):
            points, context, kwargs = self._conditioned(points, context)
            outputs = [getattr(self.bijector, direction)(points, **kwargs)]
            if with_log_det:
                log_det = getattr(self.bijector, f"{direction}_log_det_jacobian")
                outputs.append(log_det(points, event_ndims=event_ndims, **kwargs))
            inside = self._inside_support(points) if direction == "inverse" else None
            if inside is not None:  # no inverse outside the support
                outputs[0] = tf.where(self._per_event(inside), outputs[0], np.nan)
                outputs[1:] = [tf.where(inside, part, np.nan) for part in outputs[1:]]
            if context is not None:
                outputs = [
                    context_lib.nan_where_not_finite(part, context, ndims)
                    for part, ndims in zip(outputs, [event_ndims, 0])
                ]
            return tuple(outputs) if with_log_det else outputs[0]

        return transform

    def _run(self, name, fn, *args):
        """Runs fn in graph mode: compiled once per model when called eagerly."""
        if not tf.executing_eagerly():
            return fn(*args)
        if name not in self._compiled:
            # TF counts traces per code object, so the few traces of many models'
            # functions would add up to a false retracing warning; a partial has no
            # code object and is counted on its own.
            self._compiled[name] = tf.function(functools.partial(fn), reduce_retracing=True)
        return self._compiled[name](*args)

    def _run_batched(self, name, fn, points, *context):
        """`_run` over points [*batch, *event] (and a context), in chunks of `chunk_size` rows."""
        if not tf.executing_eagerly():
            return fn(points, *context)
        event_ndims = len(self.event_shape)
        batch_shape = points.shape[: points.shape.rank - event_ndims]
        if context:
            batch_shape = tf.broadcast_static_shape(batch_shape, context[0].shape[:-1])
        rows, size = batch_shape.num_elements(), self.chunk_size
        if rows <= size:
            return self._run(name, fn, points, *context)
        event = points.shape[points.shape.rank - event_ndims :]
        points = tf.reshape(tf.broadcast_to(points, batch_shape + event), [rows, *event])
        if context:
            shape = batch_shape + context[0].shape[-1:]
            context = (tf.reshape(tf.broadcast_to(context[0], shape), [rows, -1]),)
        parts = [
            self._run(name, fn, points[i : i + size], *(c[i : i + size] for c in context))
            for i in range(0, rows, size)
        ]
        merged = tf.nest.map_structure(lambda *chunks: tf.concat(chunks, axis=0), *parts)
        return tf.nest.map_structure(
            lambda part: tf.reshape(part, batch_shape.concatenate(part.shape[1:])), merged
        )

    # --- Keras: call, predict, fit, evaluate ---------------------------------

    def call(self, inputs):
        if self.conditional:
            x, context = self._data.split(inputs)
            return self._guarded_log_prob(tf.cast(x, self.dtype), tf.cast(context, self.dtype))
        return self._guarded_log_prob(tf.cast(inputs, self.dtype))

    def predict_step(self, data):
        # Keras' default drops the second item of a dataset element as a target;
        # for a conditional flow it is the context.
        x, context, _ = keras.utils.unpack_x_y_sample_weight(data)
        if self.conditional and context is not None:
            return self((x, context))
        return self(x)

    def compute_output_shape(self, input_shape):
        if self.conditional and isinstance(input_shape, (tuple, list)) and len(input_shape) == 2:
            if isinstance(input_shape[0], (tuple, list)):
                input_shape = input_shape[0]
        return tuple(input_shape)[: -len(self.event_shape)]

    @property
    def metrics(self):
        return [self.loss_tracker, self.bits_per_dim_tracker]

    def _negative_log_likelihood(self, data):
        """Σ −w·log p(x) over this replica's batch (checked), and the batch's total weight w."""
        x, context, sample_weight = self._data.batch(data)
        log_prob = self._log_prob(x, context)
        if sample_weight is None:
            return -tf.reduce_sum(log_prob), tf.cast(tf.size(log_prob), self.dtype)
        weight = tf.reshape(sample_weight, tf.shape(log_prob))
        return -tf.reduce_sum(weight * log_prob), tf.reduce_sum(weight)

    def _update_metrics(self, nll_sum, total_weight):
        # Weighted by the batch's weight, so an epoch's figure is the exact mean
        # over its examples even when the last batch is partial (or, on several
        # replicas, when a replica's share of it is empty).
        nll = tf.math.divide_no_nan(nll_sum, total_weight)
        self.loss_tracker.update_state(nll, sample_weight=total_weight)
        self.bits_per_dim_tracker.update_state(
            nll / (self.event_size * math.log(2.0)), sample_weight=total_weight
        )
        results = {metric.name: metric.result() for metric in self.metrics}
        if _multi_worker(self.distribute_strategy):
            # Keras 3 averages step outputs across workers along axis 0, which a scalar
            # lacks (tensorflow/tensorflow#72388): hand it [1]-vectors, it returns scalars.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def train_step(self, data):
        terms = gradient_step(
            self.optimizer,
            self.trainable_variables,
            lambda: self._negative_log_likelihood(data),
            self.losses,
        )
        return self._update_metrics(*terms)

    def test_step(self, data):
        return self._update_metrics(*self._negative_log_likelihood(data))

    def compile(self, optimizer="adam", steps_per_execution="auto", **kwargs):
        """`keras.Model.compile` with an optimizer (no loss: the loss is the NLL).

        `steps_per_execution="auto"` (the default; Keras' own default is 1) lets
        `fit` run several training steps per compiled call: small flows are
        bound by Keras' per-call overhead, not by their arithmetic. `fit` picks
        the largest divisor of the epoch's steps up to `AUTOMATIC_STEPS` (so the
        progress bar and callbacks stay on epoch boundaries), and one step per
        call when the epoch's length is unknown (a generator, a dataset of
        unknown size), when a callback's batch hooks must see every step
        (any callback but Keras' and tfp_flows' epoch-level ones) and under a
        mirrored strategy over several devices or workers (Keras' multi-step loop
        fails there). Pass an int to choose yourself, 1 for Keras'
        behaviour.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                "FlowModel trains by maximum likelihood and takes no `loss`; "
                "compile it with an optimizer only."
            )
        self._automatic_steps = steps_per_execution == "auto"
        if not self._automatic_steps:
            kwargs["steps_per_execution"] = validation.check_integer(
                steps_per_execution, "steps_per_execution"
            )
        if self._given_dtype_policy.compute_dtype == "float16":
            # Keras' own rule for "mixed_float16" models, which this model's float32
            # policy would skip: scale the loss so that float16 gradients don't underflow.
            optimizer = keras.optimizers.get(optimizer)
            if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and getattr(self, "_automatic_steps", False):
            config["steps_per_execution"] = "auto"
        return config

    def _choose_steps_per_execution(self, arguments):
        """Sets the automatic steps per compiled call for this `fit` (see `compile`)."""
        if not getattr(self, "_automatic_steps", False):
            return
        steps = validation.steps_per_epoch(arguments)
        callbacks = arguments.get("callbacks") or []
        every_step = any(not _epoch_level(callback) for callback in callbacks)
        # Keras' loop over several steps per call fails under mirrored strategies (one
        # or several workers: "You must feed a value for placeholder tensor
        # 'while/cond/Placeholder'", a plain Dense model too): one step per call there.
        several = (
            steps is not None and not every_step and not _mirrored(self.distribute_strategy)
        )
        chosen = steps_per_call(steps, AUTOMATIC_STEPS) if several else 1
        if chosen != self.steps_per_execution:
            self.steps_per_execution = chosen
            # Keras traces the loop over steps with the count in it: trace anew.
            self.train_function = self.test_function = self.predict_function = None

    def compile_from_config(self, config):
        # Keras skips compiling a loaded model whose class overrides `compile`;
        # ours only adds a check, so restore the optimizer (and its state) as usual.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, after checking the data; same arguments.

        Array-likes (NumPy, lists, pandas, tensors) are checked before
        training: shape, dtype, finite, non-empty; `sample_weight` (one
        finite, non-negative weight per example) is honoured. Batches of a
        `tf.data.Dataset` or generator are checked as they arrive: a bad one
        stops training with a `ValueError` naming it, and the model keeps the
        weights of the last good batch. For a conditional flow `y` is the
        context (or pass x as an (x, context) pair).
        """
        arguments = self._data.call_arguments("fit", self, args, kwargs)
        self._choose_steps_per_execution(arguments)
        if self.needs_data_initialization:
            batch = self._data.first_batch(
                arguments["x"], arguments["y"], arguments.get("batch_size")
            )
            self.initialize_from_data(*batch)
        with validation.batch_checks("training", self.steps_per_execution) as checks:
            arguments["callbacks"] = [*(arguments.get("callbacks") or []), checks.callback]
            return super().fit(**arguments)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`: the mean NLL (weighted by `sample_weight`), checked as `fit`."""
        arguments = self._data.call_arguments("evaluate", self, args, kwargs)
        with validation.batch_checks("evaluation"):
            return super().evaluate(**arguments)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`: log p(x) per example (NaN for rows with NaN), shapes checked."""
        return super().predict(self._data.predict_inputs(x), *args, **kwargs)

    # --- Serialisation ---------------------------------------------------

    def get_config(self):
        for step in self.flow_layers:
            if not isinstance(step, FlowLayer):
                raise ValueError(
                    f"cannot serialise the fixed bijector {step.name!r}: wrap it in a "
                    "FlowLayer (see tfp_flows.layers.PermuteLayer) to save the model."
                )
        if self._custom_base:
            raise ValueError(
                "cannot serialise a custom base distribution: subclass FlowModel and "
                "override get_config/from_config to rebuild it."
            )
        return {
            **super().get_config(),
            "dtype": keras.dtype_policies.serialize(self._given_dtype_policy),
            "flow_layers": [keras.saving.serialize_keras_object(s) for s in self.flow_layers],
            "event_shape": list(self.event_shape),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["flow_layers"] = [
            keras.saving.deserialize_keras_object(s) for s in config["flow_layers"]
        ]
        config["event_shape"] = tuple(config["event_shape"])
        return cls(**config)


def _mirrored(strategy):
    """True under a (multi-worker) mirrored strategy over several replicas."""
    mirrored = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    return _multi_worker(strategy) or (
        isinstance(strategy, mirrored) and strategy.num_replicas_in_sync > 1
    )


def _multi_worker(strategy):
    """True under a MultiWorkerMirroredStrategy that spans several workers."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()
    )


# The most training steps per compiled call that compile(steps_per_execution="auto") picks.
AUTOMATIC_STEPS = 20


def steps_per_call(steps_per_epoch, most=10):
    """Training steps per compiled call: the largest divisor of the epoch up to `most`.

    Several steps per call save Keras' per-step overhead on small flows; a
    divisor of the epoch keeps Keras' progress bar and callbacks on epoch
    boundaries (12 steps at 10 per call would show "20/12").
    """
    return max(d for d in range(1, most + 1) if steps_per_epoch % d == 0)


_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")


def _epoch_level(callback):
    """True for a callback that works as well with several steps per compiled call.

    Keras calls batch hooks once per compiled call. Callbacks whose batch hooks
    do nothing, or only look at an epoch's running figures (a NaN loss), or that
    declare `works_with_steps_per_execution`, are unaffected by it.
    """
    if getattr(callback, "works_with_steps_per_execution", False):
        return True
    callbacks = keras.callbacks
    if isinstance(callback, (callbacks.BackupAndRestore, callbacks.ModelCheckpoint)):
        return callback.save_freq == "epoch"
    if isinstance(callback, callbacks.TensorBoard):
        return callback.update_freq == "epoch"
    if isinstance(callback, (callbacks.TerminateOnNaN, callbacks.History, callbacks.ProgbarLogger)):
        return True
    base = keras.callbacks.Callback
    return all(getattr(type(callback), hook) is getattr(base, hook) for hook in _BATCH_HOOKS)


def gradient_step(optimizer, variables, loss_terms, losses=()):
    """One optimizer step on the global batch's mean loss, under any `tf.distribute` strategy.

    The training step of `FlowModel` (maximum likelihood) and of
    `tfp_flows.variational.ReverseKL` (reverse KL). `loss_terms()` returns
    this replica's summed loss and its weight (Σ −w·log p and Σ w, or the
    sum of ELBO terms and their count); the loss is the sum over replicas
    divided by the total weight, plus the regularisation `losses`, scaled
    for mixed precision. Replicas' gradients are summed, and a replica may
    hold fewer examples (or none) of a last batch. Returns loss_terms' values.
    """
    replica = tf.distribute.get_replica_context()
    with tf.GradientTape() as tape:
        total, weight = loss_terms()
        loss = tf.math.divide_no_nan(total, replica.all_reduce("sum", weight))
        if losses:
            loss += tf.add_n(losses) / replica.num_replicas_in_sync
        loss = optimizer.scale_loss(loss)
    optimizer.apply(tape.gradient(loss, variables), variables)
    return total, weight


def _check_flow_layers(flow_layers, event_shape, dtype):
    flow_layers = list(flow_layers)
    for step in flow_layers:
        if not isinstance(step, (FlowLayer, tfb.Bijector)):
            raise TypeError(
                "flow_layers must be tfp_flows FlowLayers or fixed tfb.Bijectors, "
                f"got {type(step).__name__}."
            )
        if not isinstance(step, FlowLayer):
            continue
        if step.event_ndims > len(event_shape):
            raise ValueError(
                f"{step.name} acts on events of rank {step.event_ndims} (images are height × "
                f"width × channels), but the model's events have shape {event_shape}."
            )
        if step.dtype_policy.variable_dtype != dtype:
            raise ValueError(
                f"{step.name} has dtype {step.dtype_policy.variable_dtype} but the model "
                f"has {dtype}: pass the same dtype to both."
            )
    return flow_layers


def _context_size(flow_layers):
    """The context size shared by the conditional flow layers, or None if there are none."""
    conditional = [s for s in flow_layers if isinstance(s, FlowLayer) and s.conditional]
    sizes = {step.context_size for step in conditional}
    if len(sizes) > 1:
        raise ValueError(
            "the conditional flow layers disagree on the context size: "
            + ", ".join(f"{step.name}: {step.context_size}" for step in conditional)
        )
    names = [step.name for step in conditional]
    if len(set(names)) != len(names):
        raise ValueError(
            f"conditional flow layers need distinct names (the context reaches each "
            f"bijector by name), got {names}."
        )
    return sizes.pop() if sizes else None


def _event_shape(event_shape, base_distribution):
    if base_distribution is not None:
        base_shape = tuple(base_distribution.event_shape.as_list())
        if event_shape is not None and tuple(np.atleast_1d(event_shape)) != base_shape:
            raise ValueError(
                f"event_shape {tuple(event_shape)} does not match the base distribution's "
                f"event shape {base_shape}."
            )
        event_shape = base_shape
    if event_shape is None:
        raise ValueError("FlowModel needs an event_shape (or a base_distribution).")
    event_shape = tuple(int(d) for d in np.atleast_1d(event_shape))
    if any(d < 1 for d in event_shape):
        raise ValueError(f"event_shape must hold positive sizes, got {event_shape}.")
    return event_shape


def _check_base_distribution(base, dtype):
    if not isinstance(base, tfd.Distribution):
        raise TypeError(f"base_distribution must be a tfd.Distribution, got {type(base).__name__}.")
    if base.dtype != dtype:
        raise ValueError(
            f"the base distribution has dtype {base.dtype.name} but the model has {dtype}: "
            "pass the same dtype to both."
        )
    if base.trainable_variables:
        raise ValueError(
            "the base distribution holds tf.Variables, which Keras 3 would silently never "
            "train (only weights of Keras layers are); use a fixed base distribution, or "
            "put the trainable part in a flow layer next to the base."
        )
