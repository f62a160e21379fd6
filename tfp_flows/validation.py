"""Input adaptation and checks: one path for every input a user can pass.

Nothing upstream validates for us: TFP broadcasts or truncates silently, Keras
3 `fit` accepts an empty array, drops `sample_weight` when there are no
targets and casts strings deep inside a graph. Every public entry point of
`FlowModel` (and the CLI, and the export) goes through the functions here,
which either return the input in the one form the model computes with or
raise a `ValueError` naming the problem, before any computation or weight
update:

* `as_array`: NumPy arrays, lists, pandas DataFrames and Series, tf.Tensors
  become arrays (or stay tensors); ragged and sparse inputs are refused by
  name; a DataFrame's non-numeric columns are named.
* `check_events`, `check_context`, `check_training_data`,
  `check_sample_weight`: dtype, event shape, emptiness and finiteness.
* `check_batch`: the same promises for batches that a `tf.data.Dataset` or a
  generator yields during training, checked inside the traced step (static
  shapes and dtypes when traced, finiteness in every step).
* `check_sample_count`, `check_seed`, `check_integer`: integers are
  range-checked before they reach int32.

Floating inputs of another precision are cast to the model's dtype (float64
data into a float32 model is the common case); non-float inputs are refused,
since integer data such as pixel counts needs dequantising first.
"""

import numbers
import warnings

import numpy as np
import tensorflow as tf

from tfp_flows.checks import INT32_MAX, check_creatable, check_integer  # noqa: F401

# In-graph checks raise InvalidArgumentError with this prefix; `FlowModel.fit`
# turns it back into a ValueError naming the problem.
BATCH_CHECK_MARKER = "tfp_flows batch check:"


class BadBatchError(ValueError):
    """A batch from a dataset or generator failed a check during `fit`/`evaluate`."""


# --- Array-likes ------------------------------------------------------------


def _is_dataframe(x):
    module = type(x).__module__ or ""
    return module.startswith("pandas") and type(x).__name__ in ("DataFrame", "Series")


def is_array(x):
    """True for in-memory array-likes (checked here), False for datasets, generators, etc."""
    return (
        isinstance(x, (np.ndarray, list, np.generic, numbers.Number))
        or tf.is_tensor(x)
        or _is_dataframe(x)
        or isinstance(x, (tf.RaggedTensor, tf.SparseTensor))
        or _is_scipy_sparse(x)
    )


def _is_scipy_sparse(x):
    return (type(x).__module__ or "").startswith("scipy.sparse")


def as_array(x, argument="x"):
    """`x` as a NumPy array or a dense tf.Tensor, or a ValueError naming why it can't be.

    Lists and pandas objects become NumPy arrays (pandas' missing values NaN);
    ragged and sparse inputs are refused, since a flow's events have one fixed
    shape; a DataFrame's non-numeric columns are named.
    """
    if isinstance(x, tf.RaggedTensor):
        raise ValueError(
            f"{argument} is a tf.RaggedTensor: a flow's events all have one shape; pad the "
            f"rows to one length (x.to_tensor()) or pass a dense array."
        )
    if isinstance(x, tf.SparseTensor) or _is_scipy_sparse(x):
        raise ValueError(
            f"{argument} is a sparse {type(x).__name__}: pass a dense array (e.g. "
            "tf.sparse.to_dense(x) or x.toarray())."
        )
    if tf.is_tensor(x):
        return x
    if _is_dataframe(x):
        return _from_pandas(x, argument)
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except ValueError as error:  # e.g. lists of rows of different lengths
        raise ValueError(
            f"{argument} is not a rectangular array ({error}): every event must have the "
            "same shape."
        ) from None


def _from_pandas(frame, argument):
    import pandas as pd

    columns = frame.to_frame() if isinstance(frame, pd.Series) else frame
    bad = [
        f"{name!r} ({dtype})"
        for name, dtype in columns.dtypes.items()
        if not (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))
    ]
    if bad:
        raise ValueError(
            f"{argument} has non-numeric columns: {', '.join(bad)}; encode or drop them "
            "before fitting a density."
        )
    return columns.to_numpy(dtype=np.float64, na_value=np.nan)  # a Series is one column


# --- Events and contexts ----------------------------------------------------


def check_events(x, event_shape, dtype, argument="x"):
    """Returns x as a tensor of `dtype` after checking its dtype and event shape."""
    x = as_array(x, argument)
    _check_float(x.dtype, argument)
    _check_event_shape(tf.TensorShape(x.shape), event_shape, argument)
    return tf.cast(x, dtype)


def check_context(context, context_size, dtype):
    """Returns a conditional flow's context as a tensor of `dtype`, shape [..., context_size].

    An eager context with NaN or Inf is refused (a missing value in a context
    has no density to give); inside a graph `finite_rows` marks such rows.
    """
    if context is None:
        raise ValueError(
            f"this flow is conditional on a context of size {context_size}, but none was "
            "given: pass context=... (an array of shape [..., "
            f"{context_size}])."
        )
    context = as_array(context, "context")
    _check_float(context.dtype, "context")
    _check_event_shape(tf.TensorShape(context.shape), (context_size,), "context")
    if not tf.is_tensor(context) or tf.executing_eagerly():
        _check_finite_rows(np.asarray(context).reshape(-1, context_size), "context")
    return tf.cast(context, dtype)


def finite_rows(values, event_ndims):
    """True where every value of an event is finite: [..., *event] -> [...]."""
    finite = tf.math.is_finite(values)
    return tf.reduce_all(finite, axis=list(range(-event_ndims, 0))) if event_ndims else finite


def check_batch_shapes_broadcast(points_batch, context_batch, argument="x"):
    """Raises a ValueError naming both shapes when a context cannot pair with the points."""
    try:
        tf.broadcast_static_shape(tf.TensorShape(points_batch), tf.TensorShape(context_batch))
    except ValueError:
        raise ValueError(
            f"the context's batch shape {tuple(context_batch)} does not broadcast with "
            f"{argument}'s {tuple(points_batch)}: pass one context per example, or one "
            "for all."
        ) from None


def _check_float(dtype, argument):
    try:
        floating, name = tf.as_dtype(dtype).is_floating, tf.as_dtype(dtype).name
    except TypeError:  # e.g. numpy's unicode strings have no TF dtype
        floating, name = False, str(dtype)
    if not floating:
        hint = (
            "cast it to float; one-hot encode class labels with keras.utils.to_categorical"
            if argument == "context"
            else "dequantise integer data first"
        )
        raise ValueError(f"{argument} must be floating point, got dtype {name} ({hint}).")


def _check_event_shape(shape, event_shape, argument):
    rank = len(event_shape)
    if shape.rank is None:
        return
    if shape.rank < rank:
        raise ValueError(
            f"{argument} has rank {shape.rank} (shape {tuple(shape)}), but one event has "
            f"shape {tuple(event_shape)}: pass an array of shape [..., "
            f"{', '.join(map(str, event_shape))}]."
        )
    trailing = tuple(shape[-rank:]) if rank else ()
    if any(d is not None and d != e for d, e in zip(trailing, event_shape)):
        raise ValueError(
            f"{argument} has event shape {trailing} (array shape {tuple(shape)}), but the "
            + (
                f"flow takes contexts of size {event_shape[0]}."
                if argument == "context"
                else f"flow models events of shape {tuple(event_shape)}."
            )
        )


def _check_finite_rows(rows, argument):
    """rows: [N, ...] NumPy array; raises naming the count and the first bad row."""
    finite = np.isfinite(rows).reshape(len(rows), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{argument} has NaN or Inf in {len(bad)} of {len(rows)} rows; the first is "
            f"row {bad[0]}: {rows[bad[0]].tolist()}."
        )


# --- Training data ----------------------------------------------------------


def check_training_data(x, event_shape, argument="x"):
    """Checks in-memory training data before `fit` or `evaluate` touches a weight.

    Datasets, generators and other Keras data sources pass through unchanged
    (their batches get `check_batch` inside the step); array-likes (or a tuple
    whose first item is one) must be float, of shape [N, *event_shape] with
    N > 0, and finite. Returns a NumPy array (a tensor stays a tensor).
    """
    if isinstance(x, tuple):
        return (check_training_data(x[0], event_shape, argument),) + x[1:]
    if not is_array(x):
        return x
    x = as_array(x, argument)
    array = np.asarray(x)
    _check_float(array.dtype, argument)
    expected = len(event_shape) + 1
    if array.ndim != expected:
        raise ValueError(
            f"{argument} must have shape [N, {', '.join(map(str, event_shape))}], "
            f"got shape {array.shape}."
        )
    _check_event_shape(tf.TensorShape(array.shape), event_shape, argument)
    if array.shape[0] == 0:
        raise ValueError(f"{argument} is empty: there is nothing to train or evaluate on.")
    _check_finite_rows(array, argument)
    return x if tf.is_tensor(x) else array


def check_sample_weight(sample_weight, num_examples, argument="sample_weight"):
    """One finite, non-negative weight per example, not all zero; returns a float array [N]."""
    weights = as_array(sample_weight, argument)
    weights = np.asarray(weights)
    if weights.dtype == bool or not np.issubdtype(weights.dtype, np.number):
        raise ValueError(f"{argument} must hold numbers, got dtype {weights.dtype}.")
    if weights.ndim == 2 and weights.shape[1] == 1:
        weights = weights[:, 0]
    if weights.ndim != 1 or len(weights) != num_examples:
        raise ValueError(
            f"{argument} must hold one weight per example, shape [{num_examples}], got "
            f"shape {weights.shape}."
        )
    weights = weights.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if len(bad):
        raise ValueError(
            f"{argument} must be finite and non-negative; {len(bad)} of {num_examples} are "
            f"not, the first is {weights[bad[0]]} at index {bad[0]}."
        )
    if not weights.sum() > 0:
        raise ValueError(f"{argument} is zero for every example: there is nothing to fit.")
    return weights


def warn_degenerate_columns(x, argument="x", stacklevel=3):
    """Warns when a column of tabular data [N, D] is constant or takes very few values.

    A flow fitted to a constant column, or to a column of a few discrete
    values, has a density that grows without bound there: its NLL falls and
    falls and means nothing. Only 2-D data is inspected.
    """
    message = degenerate_columns_message(x, argument)
    if message:
        warnings.warn(message, UserWarning, stacklevel=stacklevel)


def degenerate_columns_message(x, argument="x"):
    """The warning text of `warn_degenerate_columns`, or None when the columns look continuous."""
    array = np.asarray(x)
    if array.ndim != 2 or len(array) < 2:
        return None
    constant = [j for j in range(array.shape[1]) if np.ptp(array[:, j]) == 0]
    if constant:
        return (
            f"{argument} has constant columns {constant} (e.g. column {constant[0]} is always "
            f"{float(array[0, constant[0]])!r}): a density there is a point mass, so the NLL falls "
            "without bound; drop those columns."
        )
    if len(array) >= 100:
        few = [j for j in range(array.shape[1]) if len(np.unique(array[:, j])) <= len(array) // 50]
        if few:
            counts = len(np.unique(array[:, few[0]]))
            return (
                f"{argument} has columns {few} that take few distinct values (column {few[0]}: "
                f"{counts} values in {len(array)} rows): a continuous density of discrete data "
                "grows without bound; dequantise them (add uniform noise of one unit) or drop "
                "them."
            )
    return None


def check_batch(x, event_shape, dtype, argument="x"):
    """In a traced step, the checks `check_training_data` makes of arrays, for one batch.

    At trace time: a ValueError for a ragged, sparse or non-float batch or one
    of the wrong event shape. In every step: an assertion that the batch is
    finite, whose failure stops the step before any weight changes (`FlowModel`
    turns it into a `BadBatchError`). Returns the batch cast to `dtype`.
    """
    if isinstance(x, (tf.RaggedTensor, tf.SparseTensor)):
        raise BadBatchError(
            f"the data yields {type(x).__name__} batches of {argument}: a flow's events all have "
            "one shape; pad or densify the batches."
        )
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise BadBatchError(
            f"the data yields batches of {argument} of dtype {x.dtype.name}: a flow needs "
            "floating-point values (dequantise integer data first)."
        )
    shape = x.shape
    if shape.rank is not None and shape.rank != len(event_shape) + 1:
        raise BadBatchError(
            f"the data yields batches of {argument} of shape {shape.as_list()}, but a batch of "
            f"events must have shape [batch, {', '.join(map(str, event_shape))}]."
        )
    try:
        _check_event_shape(shape, event_shape, argument)
    except ValueError as error:
        raise BadBatchError(f"the data yields a batch where {error}") from None
    assertion = tf.debugging.assert_all_finite(
        x, f"{BATCH_CHECK_MARKER} a batch of {argument} has NaN or Inf values"
    )
    return tf.cast(assertion, dtype)


def check_batch_weights(sample_weight, dtype):
    """In a traced step: sample weights finite and non-negative (an assertion), cast."""
    sample_weight = tf.cast(sample_weight, dtype)
    finite = tf.debugging.assert_all_finite(
        sample_weight, f"{BATCH_CHECK_MARKER} a batch of sample_weight has NaN or Inf values"
    )
    with tf.control_dependencies(
        [
            tf.debugging.assert_non_negative(
                finite, message=f"{BATCH_CHECK_MARKER} a batch of sample_weight has negative values"
            )
        ]
    ):
        return tf.identity(finite)


def bad_batch_message(error):
    """The text after the marker of an in-graph batch check, or None for other errors."""
    text = str(getattr(error, "message", error))
    if BATCH_CHECK_MARKER not in text:
        return None
    return text.split(BATCH_CHECK_MARKER, 1)[1].split("\n", 1)[0].split(" : ")[0].strip()


# --- Integers ---------------------------------------------------------------


def check_sample_count(n, maximum=INT32_MAX):
    """Returns n as an int32 scalar tensor after checking it is an integer in [1, maximum]."""
    if tf.is_tensor(n):
        if not n.dtype.is_integer or n.shape.rank != 0:
            raise ValueError(
                f"n must be a positive integer scalar, got {n.dtype.name} of shape {n.shape}."
            )
        if tf.executing_eagerly():
            _check_count_range(int(n), maximum)
        elif n.dtype != tf.int32:
            raise ValueError(f"n must be an int32 tensor inside a graph, got {n.dtype.name}.")
        return tf.cast(n, tf.int32)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    _check_count_range(int(n), maximum)
    return tf.constant(int(n), tf.int32)


def check_temperature(temperature, dtype):
    """A sampling temperature as a scalar tensor of `dtype`: positive and finite."""
    if tf.is_tensor(temperature) and not tf.executing_eagerly():
        return tf.cast(temperature, dtype)
    values = np.asarray(temperature)
    if values.shape != () or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    if not (np.isfinite(values) and values > 0):
        raise ValueError(f"temperature must be positive and finite, got {values.item()!r}.")
    return tf.constant(values.item(), dtype)


def _check_count_range(n, maximum):
    if n <= 0:
        raise ValueError(f"n must be a positive integer, got {n}.")
    if n > maximum:
        raise ValueError(f"n must be at most {maximum}, got {n}.")


SEED_HELP = "an int in [0, 2**64) or a stateless int32[2] seed"


def check_seed(seed):
    """A stateless int32[2] seed from an int in [0, 2**64) (its two 32-bit halves) or a pair.

    Distinct int seeds give distinct stateless seeds; an int below 2**31 gives
    [0, seed], as TFP's stateless samplers expect.
    """
    if tf.is_tensor(seed) and not tf.executing_eagerly():
        if seed.dtype != tf.int32 or not seed.shape.is_compatible_with([2]):
            raise ValueError(f"seed must be {SEED_HELP}, got {seed.dtype.name} {seed.shape}.")
        return seed
    if isinstance(seed, (numbers.Integral,)) and not isinstance(seed, (bool, np.bool_)):
        seed = int(seed)
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be {SEED_HELP}, got {seed}.")
        high, low = divmod(seed, 2**32)
        return tf.constant([_as_int32(high), _as_int32(low)], tf.int32)
    values = np.asarray(seed)
    if values.shape != (2,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"seed must be {SEED_HELP}, got {values.dtype} of shape {values.shape}.")
    if ((values < -(2**31)) | (values > INT32_MAX)).any():
        raise ValueError(f"seed must be {SEED_HELP}; {values.tolist()} does not fit in int32.")
    return tf.constant(values.astype(np.int32))


def _as_int32(word):
    """A 32-bit word as the int32 with the same bits."""
    return word - 2**32 if word >= 2**31 else word


def check_context_size(context_size):
    """Returns a layer's or model's `context_size` as an int, or None (not conditional)."""
    if context_size is None:
        return None
    if (
        isinstance(context_size, bool)
        or not isinstance(context_size, numbers.Integral)
        or context_size < 1
    ):
        raise ValueError(f"context_size must be a positive integer or None, got {context_size!r}.")
    return int(context_size)


# --- The data of FlowModel's fit, evaluate and predict -------------------------


class DataAdapter:
    """What `FlowModel.fit`, `evaluate`, `predict` and its train and test steps take.

    Array-likes are checked before Keras sees them, datasets and generators
    batch by batch inside the step (`batch`). A conditional flow's context
    rides where Keras puts targets (or in an (x, context) pair); an
    unconditional flow's sample weights ride with an empty placeholder target
    [N, 0], since Keras drops `sample_weight` when there are no targets.

    Arguments:
        event_shape, context_size, dtype: the model's.
        check_values: callable(x, argument) that checks training data values
            (the data-side step's domain, e.g. a declared pixel range).
    """

    def __init__(self, event_shape, context_size, dtype, check_values):
        self.event_shape = tuple(event_shape)
        self.context_size = context_size
        self.dtype = dtype
        self.check_values = check_values

    @property
    def conditional(self):
        return self.context_size is not None

    # --- Calls of fit and evaluate ------------------------------------------------

    def call_arguments(self, method, model, args, kwargs):
        """The arguments of a call of Keras' `fit` or `evaluate`, named and checked.

        Refuses `class_weight`, checks and adapts x, y, sample_weight and
        validation_data, and warns about degenerate columns of training data.
        """
        import inspect

        import keras

        signature = inspect.signature(getattr(keras.Model, method))
        arguments = dict(signature.bind_partial(model, *args, **kwargs).arguments)
        arguments.pop("self")
        arguments.update(arguments.pop("kwargs", {}))
        if arguments.pop("class_weight", None) is not None:
            raise ValueError(
                "class_weight does not apply to a density model (there are no classes to "
                "weight); pass one sample_weight per example instead."
            )
        x, y, weight = self.adapt(
            arguments.pop("x", None), arguments.pop("y", None), arguments.pop("sample_weight", None)
        )
        arguments.update(x=x, y=y, sample_weight=weight)
        if method == "fit" and not is_array(x):
            # Keras ignores (and warns about) shuffle=True, its default, for a dataset.
            arguments.setdefault("shuffle", False)
        if arguments.get("validation_data") is not None:
            arguments["validation_data"] = self.adapt_validation(arguments["validation_data"])
        if method == "fit" and is_array(x):
            warn_degenerate_columns(np.asarray(x), stacklevel=4)
        return arguments

    def is_pair(self, inputs):
        """True for (x, context); a plain list of two rows of x is not a pair."""
        if isinstance(inputs, tuple):
            return len(inputs) == 2
        return (
            isinstance(inputs, list)
            and len(inputs) == 2
            and np.ndim(inputs[0]) == len(self.event_shape) + 1
        )

    def split(self, inputs, context=None):
        """(x, context) from a conditional model's inputs: a pair, a dict, or x with the context."""
        if context is None and isinstance(inputs, dict):
            inputs = (inputs.get("x"), inputs.get("context"))
        if context is None and self.is_pair(inputs):
            inputs, context = inputs
        if context is None:
            raise ValueError(
                f"this flow is conditional on a context of size {self.context_size}: pass "
                "(x, context) pairs, e.g. fit(x, context) or predict((x, context))."
            )
        return inputs, context

    def adapt(self, x, y, sample_weight, argument="x"):
        """(x, y, sample_weight) for Keras: arrays checked, the context as y, weights kept."""
        if self.conditional:
            if y is None and self.is_pair(x):
                x, y = x
        elif y is not None:
            raise ValueError(
                "this flow is not conditional and takes no targets or context; "
                "pass the data as x only."
            )
        if not is_array(x):
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight goes with array data; a dataset or generator yields "
                    "(x, context, sample_weight) itself."
                )
            return x, y, None
        x = check_training_data(x, self.event_shape, argument)
        self.check_values(x, argument)
        if self.conditional:
            if y is None:
                raise ValueError(
                    f"this flow is conditional on a context of size {self.context_size}: "
                    "pass it as fit(x, context) (or evaluate(x, context))."
                )
            y = check_training_data(y, (self.context_size,), "context")
            if len(y) != len(x):
                raise ValueError(
                    f"{argument} has {len(x)} rows but the context has {len(y)}: pass one "
                    "context row per example."
                )
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, len(x))
            if y is None:
                y = np.zeros((len(x), 0), np.asarray(x).dtype)  # the placeholder target
        return x, y, sample_weight

    def adapt_validation(self, validation_data):
        if isinstance(validation_data, tf.data.Dataset):
            return validation_data
        if not isinstance(validation_data, (tuple, list)) or (
            not self.conditional and not isinstance(validation_data, tuple)
        ):
            validation_data = (validation_data,)
        if not is_array(validation_data[0]):
            return validation_data  # a PyDataset, generator, ...: checked batch by batch
        if len(validation_data) > 3:
            raise ValueError(
                "validation_data must be x, (x, context) or (x, context, sample_weight), "
                f"got {len(validation_data)} arrays."
            )
        x, y, weight = (*validation_data, None, None)[:3]
        if self.conditional and y is None:
            raise ValueError(
                "validation_data of a conditional flow must be (x, context) or "
                "(x, context, sample_weight)."
            )
        x, y, weight = self.adapt(x, y, weight, "validation_data")
        return (x, y, weight) if weight is not None else ((x, y) if y is not None else x)

    def predict_inputs(self, x):
        """predict's x checked for shape and dtype (rows with NaN are allowed: they give NaN)."""
        if self.conditional and self.is_pair(x):
            shapes, names = (self.event_shape, (self.context_size,)), ("x", "context")
            return tuple(
                check_events(part, shape, self.dtype, name).numpy()
                for part, shape, name in zip(x, shapes, names)
            )
        if is_array(x):
            return check_events(x, self.event_shape, self.dtype).numpy()
        return x

    def first_batch(self, x, context, batch_size):
        """(x, context) of the first batch `fit` will see, for data-dependent initialisation."""
        import keras

        if isinstance(x, tf.data.Dataset):
            x, context, _ = keras.utils.unpack_x_y_sample_weight(next(iter(x)))
            if isinstance(x, (tuple, list)) and context is None:
                x, context = x
        elif not is_array(x):
            raise ValueError(
                "this flow initialises from data (ActNorm): call "
                "model.initialize_from_data(batch) before fitting on a generator or PyDataset."
            )
        else:
            size = batch_size or 32  # Keras' default batch size
            x, context = x[:size], None if context is None else context[:size]
        if context is not None and np.shape(context)[-1] == 0:
            context = None  # the placeholder target of sample weights
        return x, context

    # --- Batches inside the train and test steps ----------------------------------

    def batch(self, data):
        """(x, context or None, sample_weight or None) of one batch, checked (see `check_batch`)."""
        import keras

        x, context, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.conditional:
            x, context = self.split(x, context)
            context = check_batch(context, (self.context_size,), self.dtype, "context")
        elif context is not None and not _is_placeholder(context):
            raise BadBatchError(
                "this flow is not conditional, but the data yields (x, y) pairs: drop y "
                "(dataset.map(lambda x, y: x)), or build the flow with context_size to "
                "condition on it. To weight examples, pass fit(x, sample_weight=w)."
            )
        else:
            context = None
        x = check_batch(x, self.event_shape, self.dtype)
        if sample_weight is not None:
            sample_weight = check_batch_weights(sample_weight, self.dtype)
        return x, context, sample_weight


def steps_per_epoch(arguments):
    """The training steps of one epoch of a `fit` call's arguments, or None when unknown."""
    import math

    if arguments.get("steps_per_epoch"):
        return int(arguments["steps_per_epoch"])
    x = arguments.get("x")
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        return cardinality if cardinality > 0 else None
    if not is_array(x):
        return None
    num_examples = len(x)
    split = arguments.get("validation_split") or 0.0
    if split:
        num_examples = int(math.ceil(num_examples * (1.0 - split)))  # as Keras splits
    return max(1, math.ceil(num_examples / (arguments.get("batch_size") or 32)))


def _is_placeholder(y):
    """True for the empty target [N, 0] that carries an unconditional flow's sample weights."""
    return tf.is_tensor(y) and y.shape.rank is not None and y.shape.rank >= 1 and y.shape[-1] == 0


class batch_checks:  # noqa: N801 - used as a context manager, like contextlib's
    """Around Keras' fit or evaluate: a failed in-graph batch check becomes a `BadBatchError`.

    The error names the check and, for training, where it stopped (epoch,
    batch); `callback` is a Keras callback to add to the call, which counts
    them. Training that ran epochs but saw no batch is refused too.
    """

    def __init__(self, phase, steps_per_call=1):
        import keras

        class Progress(keras.callbacks.Callback):
            works_with_steps_per_execution = True  # it counts calls: enough to name a batch

            def __init__(self):
                super().__init__()
                self.epochs, self.batches, self.epoch, self.batch = 0, 0, 0, -1

            def on_epoch_begin(self, epoch, logs=None):
                self.epochs, self.epoch, self.batch = self.epochs + 1, epoch, -1

            def on_train_batch_end(self, batch, logs=None):
                self.batches, self.batch = self.batches + 1, batch

        self.phase, self.steps_per_call = phase, steps_per_call
        self.callback = Progress()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        progress = self.callback
        if error is None:
            if self.phase == "training" and progress.epochs and not progress.batches:
                raise ValueError(
                    "the data yielded no batches: nothing was trained (is the dataset empty, "
                    "or exhausted by an earlier epoch? Use dataset.repeat() with "
                    "steps_per_epoch)."
                )
            return False
        if not isinstance(error, tf.errors.InvalidArgumentError):
            return False
        message = bad_batch_message(error)
        if message is None:
            return False
        where = ""
        if self.phase == "training":
            first, last = progress.batch + 2, progress.batch + 1 + self.steps_per_call
            batches = f"batch {first}" if first == last else f"one of batches {first}-{last}"
            where = f" in epoch {progress.epoch + 1}, {batches}"
        raise BadBatchError(
            f"{message}{where}: {self.phase} stopped before that batch changed any weight (the "
            "model keeps the weights of the last good batch); clean or filter the data."
        ) from None
