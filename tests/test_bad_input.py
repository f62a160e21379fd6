"""The bad-input matrix: each row gets a clear error naming the problem, raised before
anything is written or any weight changes."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfp_flows import cli, flows
from tfp_flows.export import describe, export_saved_model

F32 = "float32"


def _export_twice(model, tmp_path):
    export_saved_model(model, tmp_path, "m", version=1)
    export_saved_model(model, tmp_path, "m", version=1)


def _export_into_a_file(model, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    export_saved_model(model, tmp_path / "a_file", "m")


def _corrupt_keras_file(model, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"not a zip file")
    cli.load_run(tmp_path / "run")


def _corrupt_saved_model(model, tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    describe(tmp_path / "m")


def _dataset(array, batch_size=4):
    return tf.data.Dataset.from_tensor_slices(np.asarray(array)).batch(batch_size)


def _frame(array, columns=("a", "b")):
    return pd.DataFrame(np.asarray(array), columns=list(columns))


def _generator(*batches):
    def generate():
        for batch in batches:
            yield (np.asarray(batch, F32),)

    return generate()


def _nan_at(rows, row, width=2):
    x = np.random.default_rng(0).standard_normal((rows, width)).astype(F32)
    x[row, 0] = np.nan
    return x


def _fit_quietly(model, data, **kwargs):
    return model.fit(data, verbose=0, shuffle=False, **kwargs)


GOOD = np.random.default_rng(1).standard_normal((8, 2)).astype(F32)

# (row, action(model, tmp_path), error type, message pattern)
ROWS = [
    (
        "fit: wrong event size",
        lambda m, t: m.fit(np.zeros((4, 3), F32)),
        ValueError,
        r"x has event shape \(3,\)",
    ),
    (
        "fit: wrong rank",
        lambda m, t: m.fit(np.zeros((2,), F32)),
        ValueError,
        r"x must have shape \[N, 2\]",
    ),
    (
        "fit: integer dtype",
        lambda m, t: m.fit(np.zeros((4, 2), "int64")),
        ValueError,
        "x must be floating point, got dtype int64",
    ),
    (
        "fit: NaN row",
        lambda m, t: m.fit(np.array([[0, 1], [np.nan, 0], [1, 1]], F32)),
        ValueError,
        "NaN or Inf in 1 of 3 rows; the first is row 1",
    ),
    (
        "fit: Inf row",
        lambda m, t: m.fit(np.array([[0, 1], [0, 1], [1, np.inf]], F32)),
        ValueError,
        "the first is row 2",
    ),
    ("fit: empty data", lambda m, t: m.fit(np.zeros((0, 2), F32)), ValueError, "x is empty"),
    (
        "fit: NaN validation data",
        lambda m, t: m.fit(np.zeros((8, 2), F32), validation_data=np.full((4, 2), np.nan, F32)),
        ValueError,
        "validation_data has NaN",
    ),
    (
        "evaluate: wrong event size",
        lambda m, t: m.evaluate(np.zeros((4, 5), F32)),
        ValueError,
        r"event shape \(5,\)",
    ),
    (
        "log_prob: wrong event size",
        lambda m, t: m.log_prob(np.zeros((4, 3), F32)),
        ValueError,
        r"event shape \(3,\)",
    ),
    ("log_prob: rank 0", lambda m, t: m.log_prob(np.float32(1.0)), ValueError, "rank 0"),
    (
        "log_prob: integer tensor",
        lambda m, t: m.log_prob(tf.zeros((4, 2), tf.int32)),
        ValueError,
        "floating point, got dtype int32",
    ),
    ("log_prob: strings", lambda m, t: m.log_prob([["a", "b"]]), ValueError, "floating point"),
    (
        "log_prob: complex",
        lambda m, t: m.log_prob(np.array([[1 + 2j, 0j]])),
        ValueError,
        "floating point, got dtype complex128",
    ),
    (
        "log_prob: integer array",
        lambda m, t: m.log_prob(np.zeros((4, 2), "int32")),
        ValueError,
        "floating point, got dtype int32",
    ),
    (
        "inverse: wrong event size",
        lambda m, t: m.inverse(np.zeros((1, 4), F32)),
        ValueError,
        r"event shape \(4,\)",
    ),
    ("sample: n = 0", lambda m, t: m.sample(0), ValueError, "positive integer, got 0"),
    ("sample: n < 0", lambda m, t: m.sample(-3), ValueError, "positive integer, got -3"),
    ("sample: n = 2.5", lambda m, t: m.sample(2.5), ValueError, "positive integer, got 2.5"),
    ("sample: n = True", lambda m, t: m.sample(True), ValueError, "positive integer"),
    (
        "sample: tensor n = 0",
        lambda m, t: m.sample(tf.constant(0)),
        ValueError,
        "positive integer, got 0",
    ),
    (
        "sample: vector n",
        lambda m, t: m.sample(tf.constant([2, 3])),
        ValueError,
        "positive integer scalar",
    ),
    ("sample: bad seed", lambda m, t: m.sample(3, seed=[1.5, 2.0]), ValueError, "stateless int32"),
    # Sample weights: honoured, so checked like the data.
    (
        "fit: sample_weight of the wrong length",
        lambda m, t: m.fit(GOOD, sample_weight=np.ones(5, F32), verbose=0),
        ValueError,
        r"sample_weight must hold one weight per example, shape \[8\], got shape \(5,\)",
    ),
    (
        "fit: NaN sample_weight",
        lambda m, t: m.fit(GOOD, sample_weight=np.full(8, np.nan, F32), verbose=0),
        ValueError,
        "sample_weight must be finite and non-negative; 8 of 8 are not",
    ),
    (
        "fit: negative sample_weight",
        lambda m, t: m.fit(GOOD, sample_weight=-np.eye(8)[2], verbose=0),
        ValueError,
        "the first is -1.0 at index 2",
    ),
    (
        "fit: all-zero sample_weight",
        lambda m, t: m.fit(GOOD, sample_weight=np.zeros(8), verbose=0),
        ValueError,
        "sample_weight is zero for every example",
    ),
    (
        "evaluate: sample_weight of the wrong length",
        lambda m, t: m.evaluate(GOOD, sample_weight=np.ones(9), verbose=0),
        ValueError,
        r"one weight per example, shape \[8\]",
    ),
    (
        "fit: class_weight",
        lambda m, t: m.fit(GOOD, class_weight={0: 1.0}, verbose=0),
        ValueError,
        "class_weight does not apply to a density model",
    ),
    # Tabular data: pandas gets the checks arrays get.
    (
        "fit: DataFrame with a NaN row",
        lambda m, t: m.fit(_frame(_nan_at(8, 3)), verbose=0),
        ValueError,
        "x has NaN or Inf in 1 of 8 rows; the first is row 3",
    ),
    (
        "fit: empty DataFrame",
        lambda m, t: m.fit(_frame(np.zeros((0, 2), F32)), verbose=0),
        ValueError,
        "x is empty",
    ),
    (
        "fit: DataFrame of the wrong width",
        lambda m, t: m.fit(_frame(np.zeros((8, 3), F32), "abc"), verbose=0),
        ValueError,
        r"x has event shape \(3,\)",
    ),
    (
        "fit: DataFrame with a text column",
        lambda m, t: m.fit(
            pd.DataFrame({"size": [1.0, 2.0], "city": ["paris", "oslo"]}),
            verbose=0,
        ),
        ValueError,
        r"x has non-numeric columns: 'city' \(",
    ),
    (
        "evaluate: DataFrame with a NaN row",
        lambda m, t: m.evaluate(_frame(_nan_at(8, 5)), verbose=0),
        ValueError,
        "the first is row 5",
    ),
    (
        "log_prob: Series (one column for a 2-D flow)",
        lambda m, t: m.log_prob(_frame(GOOD)["a"]),
        ValueError,
        r"x has event shape \(1,\)",
    ),
    (
        "fit: rows of different lengths",
        lambda m, t: m.fit([[0.0, 1.0], [2.0]], verbose=0),
        ValueError,
        "x is not a rectangular array",
    ),
    (
        "fit: ragged tensor",
        lambda m, t: m.fit(tf.ragged.constant([[0.0, 1.0], [2.0]]), verbose=0),
        ValueError,
        "x is a tf.RaggedTensor",
    ),
    (
        "log_prob: sparse tensor",
        lambda m, t: m.log_prob(tf.sparse.from_dense(GOOD)),
        ValueError,
        "x is a sparse SparseTensor",
    ),
    # Datasets and generators: checked batch by batch (here the first batch is bad).
    (
        "fit: dataset with a NaN batch",
        lambda m, t: _fit_quietly(m, _dataset(_nan_at(8, 1))),
        ValueError,
        "a batch of x has NaN or Inf values in epoch 1, one of batches 1-2: training "
        "stopped before that batch changed any weight",
    ),
    (
        "fit: dataset of the wrong width",
        lambda m, t: _fit_quietly(m, _dataset(np.zeros((8, 3), F32))),
        ValueError,
        r"the data yields a batch where x has event shape \(3,\)",
    ),
    (
        "fit: dataset of strings",
        lambda m, t: _fit_quietly(m, _dataset([["a", "b"]] * 4)),
        ValueError,
        "the data yields batches of x of dtype string",
    ),
    (
        "fit: dataset of ragged batches",
        lambda m, t: _fit_quietly(
            m, tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[0.0, 1.0], [2.0]])).batch(2)
        ),
        ValueError,
        "the data yields RaggedTensor batches",
    ),
    (
        "fit: dataset of (x, labels) for an unconditional flow",
        lambda m, t: _fit_quietly(
            m, tf.data.Dataset.from_tensor_slices((GOOD, np.arange(8.0, dtype=F32))).batch(4)
        ),
        ValueError,
        r"this flow is not conditional, but the data yields \(x, y\) pairs",
    ),
    (
        "fit: empty dataset",
        lambda m, t: _fit_quietly(m, _dataset(np.zeros((0, 2), F32))),
        ValueError,
        "the data yielded no batches",
    ),
    (
        "fit: generator with a NaN batch",
        lambda m, t: _fit_quietly(m, _generator(_nan_at(4, 0), GOOD[:4])),
        ValueError,
        "a batch of x has NaN or Inf values",
    ),
    (
        "evaluate: dataset with a NaN batch",
        lambda m, t: m.evaluate(_dataset(_nan_at(8, 6)), verbose=0),
        ValueError,
        "a batch of x has NaN or Inf values: evaluation stopped",
    ),
    (
        "fit: sample_weight with a dataset",
        lambda m, t: m.fit(_dataset(GOOD), sample_weight=np.ones(8), verbose=0),
        ValueError,
        "sample_weight goes with array data",
    ),
    (
        "initialize_from_data: NaN batch",
        lambda m, t: m.initialize_from_data(_nan_at(4, 2)),
        ValueError,
        "the initialisation batch has NaN or Inf in 1 of 4 rows",
    ),
    # Integers that would wrap in int32.
    (
        "sample: n beyond int32",
        lambda m, t: m.sample(2**32 + 3),
        ValueError,
        "n must be at most 2147483647, got 4294967299",
    ),
    (
        "sample: numpy int64 n beyond int32",
        lambda m, t: m.sample(np.int64(2**31)),
        ValueError,
        "n must be at most 2147483647",
    ),
    (
        "sample: int64 tensor n beyond int32",
        lambda m, t: m.sample(tf.constant(2**31 + 5, tf.int64)),
        ValueError,
        "n must be at most 2147483647",
    ),
    ("sample: negative seed", lambda m, t: m.sample(3, seed=-1), ValueError, r"seed must be"),
    (
        "sample: seed beyond 64 bits",
        lambda m, t: m.sample(3, seed=2**64),
        ValueError,
        r"seed must be an int in \[0, 2\*\*64\)",
    ),
    (
        "sample: seed pair beyond int32",
        lambda m, t: m.sample(3, seed=np.array([0, 2**31], np.int64)),
        ValueError,
        "does not fit in int32",
    ),
    (
        "sample: infinite temperature",
        lambda m, t: m.sample(3, temperature=float("inf")),
        ValueError,
        "temperature must be positive and finite",
    ),
    (
        "sample: NaN temperature",
        lambda m, t: m.sample(3, temperature=float("nan")),
        ValueError,
        "temperature must be positive",
    ),
    (
        "factory: num_layers beyond reason",
        lambda m, t: flows.realnvp(2, num_layers=2**40),
        ValueError,
        "num_layers must be a positive integer no larger than 10000",
    ),
    (
        "factory: hidden units of 0",
        lambda m, t: flows.realnvp(2, hidden_units=(64, 0)),
        ValueError,
        "each of hidden_units must be a positive integer",
    ),
    # Degenerate data for standardisation.
    (
        "standardize: a constant column",
        lambda m, t: flows.realnvp(2, standardize=np.c_[GOOD[:, 0], np.full(8, 3.0)]),
        ValueError,
        r"columns \[1\] of the data are constant \(column 1 is always 3.0\)",
    ),
    (
        "standardize: a column float32 cannot resolve",
        lambda m, t: flows.realnvp(2, standardize=np.c_[GOOD[:, 0], 1e4 + 1e-7 * np.arange(8.0)]),
        ValueError,
        "vary too little for float32",
    ),
    (
        "standardize: NaN",
        lambda m, t: flows.realnvp(2, standardize=_nan_at(8, 4)),
        ValueError,
        "standardize has NaN or Inf in 1 of 8 rows",
    ),
    ("export: existing version", _export_twice, FileExistsError, "already exists"),
    (
        "export: max_samples of 0",
        lambda m, t: export_saved_model(m, t, "m", max_samples=0),
        ValueError,
        "max_samples must be a positive integer",
    ),
    (
        "export: version beyond int64",
        lambda m, t: export_saved_model(m, t, "m", version=2**63),
        ValueError,
        "version must be a positive integer no larger than",
    ),
    (
        "export: path through a file",
        _export_into_a_file,
        OSError,
        "cannot create the export folder",
    ),
    (
        "export: bad version",
        lambda m, t: export_saved_model(m, t, "m", version=0),
        ValueError,
        "positive integer",
    ),
    (
        "load: missing .keras",
        lambda m, t: cli.load_run(t / "nope"),
        FileNotFoundError,
        "no trained model at .*nope",
    ),
    ("load: corrupted .keras", _corrupt_keras_file, ValueError, "cannot load the model at .*run"),
    (
        "load: missing SavedModel",
        lambda m, t: describe(t / "none"),
        FileNotFoundError,
        "no SavedModel versions .*none",
    ),
    (
        "load: corrupted SavedModel",
        _corrupt_saved_model,
        ValueError,
        "cannot load the SavedModel at .*m/1",
    ),
]


@pytest.mark.parametrize(("row", "action", "error", "message"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(row, action, error, message, tmp_path):
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2)
    model.compile(keras.optimizers.Adam(1e-2))
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(error, match=message):
        action(model, tmp_path)
    for weight, old in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), old, err_msg=f"{row}: {weight.path}")
    leftovers = [p for p in tmp_path.rglob("*") if p.is_dir() and p.name.isdigit()]
    if row.startswith("export"):  # at most the one good version written before the refusal
        assert [p.name for p in leftovers] in ([], ["1"])


def test_float64_data_into_a_float32_model_is_cast_not_refused():
    # The documented decision: float data of another precision is cast.
    model = flows.planar(2, num_layers=2)
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.testing.assert_allclose(model.log_prob(x), model.log_prob(x.astype(F32)))
    model.compile()
    assert np.isfinite(model.fit(x, epochs=1, verbose=0).history["loss"]).all()


X, CONTEXT = np.zeros((8, 2), F32), np.zeros((8, 3), F32)

# The same promises for a conditional flow p(x | context), context size 3.
CONDITIONAL_ROWS = [
    ("fit: no context", lambda m: m.fit(X), "conditional on a context of size 3"),
    (
        "fit: a dataset without contexts",
        lambda m: m.fit(tf.data.Dataset.from_tensor_slices(X).batch(4), shuffle=False, verbose=0),
        "conditional on a context of size 3",
    ),
    ("fit: context of the wrong size", lambda m: m.fit(X, X), r"flow takes contexts of size 3"),
    ("fit: one context row per example", lambda m: m.fit(X, CONTEXT[:5]), "has 8 rows but"),
    (
        "fit: NaN in a context",
        lambda m: m.fit(X, np.where(np.eye(8, 3) > 0, np.nan, 0).astype(F32)),
        "context has NaN or Inf in 3 of 8 rows; the first is row 0",
    ),
    (
        "fit: integer labels as context",
        lambda m: m.fit(X, np.zeros((8, 3), "int64")),
        "context must be floating point.*to_categorical",
    ),
    ("log_prob: no context", lambda m: m.log_prob(X), "but none was given: pass context="),
    ("sample: no context", lambda m: m.sample(3), "but none was given"),
    ("inverse: no context", lambda m: m.inverse(X), "but none was given"),
    (
        "log_prob: context of the wrong size",
        lambda m: m.log_prob(X, context=np.zeros((8, 2), F32)),
        r"context has event shape \(2,\)",
    ),
    ("predict: x alone", lambda m: m.predict(X, verbose=0), "pass \\(x, context\\) pairs"),
    (
        "log_prob: NaN in a context",
        lambda m: m.log_prob(X, context=np.where(np.eye(8, 3) > 0, np.nan, 0).astype(F32)),
        "context has NaN or Inf in 3 of 8 rows; the first is row 0",
    ),
    (
        "sample: Inf in a context",
        lambda m: m.sample(2, context=np.array([[0.0, np.inf, 0.0]], F32)),
        "context has NaN or Inf in 1 of 1 rows",
    ),
    (
        "forward: NaN in one context for all",
        lambda m: m.forward(X, context=np.array([0.0, np.nan, 1.0], F32)),
        "context has NaN or Inf",
    ),
    (
        "fit: sample_weight of the wrong length",
        lambda m: m.fit(X, CONTEXT, sample_weight=np.ones(3)),
        r"sample_weight must hold one weight per example, shape \[8\]",
    ),
    (
        "fit: a dataset with a NaN context",
        lambda m: m.fit(
            tf.data.Dataset.from_tensor_slices(
                (X, np.where(np.eye(8, 3) > 0, np.nan, 0).astype(F32))
            ).batch(4),
            verbose=0,
        ),
        "a batch of context has NaN or Inf values in epoch 1, one of batches 1-2",
    ),
]


@pytest.mark.parametrize(
    ("row", "action", "message"), CONDITIONAL_ROWS, ids=[r[0] for r in CONDITIONAL_ROWS]
)
def test_bad_input_conditional(row, action, message):
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2, context_size=3)
    model.compile(keras.optimizers.Adam(1e-2))
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=message):
        action(model)
    for weight, old in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), old, err_msg=f"{row}: {weight.path}")


def test_context_for_an_unconditional_flow_is_refused():
    model = flows.realnvp(2, num_layers=2)
    with pytest.raises(ValueError, match="not conditional"):
        model.log_prob(X, context=CONTEXT)
    model.compile()
    with pytest.raises(ValueError, match="not conditional and takes no targets or context"):
        model.fit(X, CONTEXT)


def test_conditional_layers_must_agree():
    from tfp_flows import FlowModel, layers

    with pytest.raises(ValueError, match="disagree on the context size"):
        FlowModel(
            [
                layers.AffineCouplingLayer([True, False], context_size=2),
                layers.AffineCouplingLayer([False, True], context_size=3),
            ],
            event_shape=(2,),
        )
    with pytest.raises(ValueError, match="distinct names"):
        FlowModel(
            [
                layers.AffineCouplingLayer([True, False], context_size=2, name="same"),
                layers.AffineCouplingLayer([False, True], context_size=2, name="same"),
            ],
            event_shape=(2,),
        )
    with pytest.raises(ValueError, match="PlanarLayer cannot be conditional"):
        layers.PlanarLayer(context_size=2)
    with pytest.raises(ValueError, match="context_size must be a positive integer"):
        layers.AffineCouplingLayer([True, False], context_size=0)
