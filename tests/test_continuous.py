"""Continuous flows: known fields against their closed forms, training by `fit`, saving, errors.

The generic step properties (round trips within the solver's tolerance, log-dets against
the autodiff Jacobian of the solved map, gradients reaching every weight, a layer's
`.keras` round trip) run for the registry's `cnf` and `cnf_conditional` entries in
tests/test_registry.py and tests/test_properties.py; this file checks what they cannot:
analytic maps and densities, the two trainings, the model's save/load and its arguments.
"""

import keras
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import datasets
from tfp_flows.bijectors.continuous import ContinuousFlow
from tfp_flows.continuous import ContinuousFlowModel, cnf
from tfp_flows.layers import AffineCouplingLayer, ContinuousFlowLayer

tfd = tfp.distributions

# --- Fields known in closed form ----------------------------------------------------

MU = np.array([1.0, -2.0, 0.5])
SIGMA = np.array([0.5, 2.0, 1.3])
A = np.array([[-0.4, 0.8, 0.0], [-0.6, 0.3, 0.2], [0.1, -0.2, 0.5]])
B = np.array([0.3, -1.0, 0.7])


def gaussian_path_field(x, t):
    """The flow-matching field of N(0, I) → N(MU, diag SIGMA²) on the straight path.

    x_t = (1 − t + t·SIGMA)·z + t·MU moves at v(x, t) = (SIGMA − 1)/(1 − t + t·SIGMA)·(x − t·MU)
    + MU, so the time-1 map is x = SIGMA·z + MU, with log|det| = Σ log SIGMA.
    """
    t = tf.reshape(tf.cast(t, x.dtype), [-1, 1])
    sigma, mu = tf.constant(SIGMA, x.dtype), tf.constant(MU, x.dtype)
    return (sigma - 1.0) / (1.0 - t + t * sigma) * (x - t * mu) + mu


class LinearField:
    """v(x, t) = A x + B, whose time-1 map is x = e^A z + A⁻¹(e^A − I) B, log|det| = tr A.

    It offers `velocity_and_jvp` (J·u = A u), so the solver's trace takes the
    forward-product path; `LinearField.plain` is the same field without it
    (the batch-Jacobian path).
    """

    def __call__(self, x, t):
        return tf.linalg.matvec(tf.constant(A, x.dtype), x) + tf.constant(B, x.dtype)

    def velocity_and_jvp(self, x, t, tangents):
        products = tf.einsum("ij,nkj->nki", tf.constant(A, x.dtype), tangents)
        rows = tf.concat([tf.shape(x)[:1], tf.shape(products)[1:]], 0)
        return self(x, t), tf.broadcast_to(products, rows)

    def plain(self, x, t):
        return self(x, t)


def _linear_map():
    matrix = scipy.linalg.expm(A)
    shift = np.linalg.solve(A, (matrix - np.eye(3)) @ B)
    return matrix, shift, np.trace(A)


SOLVERS = {
    # solver options, the error allowed on the map, the log-det and the density
    "rk4": ({"solver": "rk4", "num_steps": 64}, 1e-6),
    "dopri5": ({"solver": "dopri5", "rtol": 1e-8, "atol": 1e-8}, 1e-6),
}


def _base_points(n=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3))


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_the_gaussian_path_field_gives_the_analytic_map_and_density(solver):
    options, tolerance = SOLVERS[solver]
    flow = ContinuousFlow(gaussian_path_field, **options)
    z = tf.constant(_base_points())
    x = flow.forward(z)
    np.testing.assert_allclose(x, SIGMA * z.numpy() + MU, atol=tolerance)
    # This path is straight in t, which a Runge-Kutta step integrates exactly: a solver
    # that controlled its steps by the state alone let them grow whatever rtol was, and
    # the log-det (the trace's quadrature) erred by 1e-6 to 6e-6 at rtol 1e-8. dopri5
    # controls the log-det's error too.
    np.testing.assert_allclose(
        flow.forward_log_det_jacobian(z, event_ndims=1),
        np.log(SIGMA).sum(),
        atol=tolerance,
    )
    data = tf.constant(_base_points(seed=1) * SIGMA + MU)
    np.testing.assert_allclose(flow.inverse(data), (data.numpy() - MU) / SIGMA, atol=tolerance)
    distribution = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(3, "float64")), flow
    )
    exact = scipy.stats.norm(MU, SIGMA).logpdf(data.numpy()).sum(-1)
    np.testing.assert_allclose(distribution.log_prob(data), exact, atol=tolerance)


@pytest.mark.parametrize("trace", ["forward products", "batch jacobian"])
@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_a_linear_field_gives_the_analytic_map_and_density(solver, trace):
    options, tolerance = SOLVERS[solver]
    field = LinearField() if trace == "forward products" else LinearField().plain
    flow = ContinuousFlow(field, **options)
    matrix, shift, log_det = _linear_map()
    z = tf.constant(_base_points())
    x, fldj = flow.forward(z), flow.forward_log_det_jacobian(z, event_ndims=1)
    np.testing.assert_allclose(x, z.numpy() @ matrix.T + shift, atol=tolerance)
    np.testing.assert_allclose(fldj, log_det, atol=tolerance)
    data = tf.constant(_base_points(seed=1))
    np.testing.assert_allclose(
        flow.inverse(data), np.linalg.solve(matrix, (data.numpy() - shift).T).T, atol=tolerance
    )
    np.testing.assert_allclose(
        flow.inverse_log_det_jacobian(data, event_ndims=1), -log_det, atol=tolerance
    )
    distribution = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(tf.zeros(3, "float64")), flow
    )
    exact = scipy.stats.multivariate_normal(shift, matrix @ matrix.T).logpdf(data.numpy())
    np.testing.assert_allclose(distribution.log_prob(data), exact, atol=tolerance)


def test_rk4_converges_at_fourth_order_on_the_linear_field():
    matrix, shift, _ = _linear_map()
    z = tf.constant(_base_points())
    errors = [
        np.abs(
            ContinuousFlow(LinearField(), "rk4", num_steps=n).forward(z).numpy()
            - (z.numpy() @ matrix.T + shift)
        ).max()
        for n in (4, 8)
    ]
    assert 12 < errors[0] / errors[1] < 20  # 2⁴ = 16 for a fourth-order method


def test_float32_solves_reach_their_tolerance():
    flow = ContinuousFlow(gaussian_path_field, "dopri5", rtol=1e-5, atol=1e-5)
    z = tf.constant(_base_points(), tf.float32)
    np.testing.assert_allclose(flow.forward(z), SIGMA * z.numpy() + MU, atol=1e-4)


def test_too_few_solver_steps_stop_with_an_error_naming_max_num_steps():
    flow = ContinuousFlow(lambda x, t: -40.0 * x, "dopri5", max_num_steps=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_num_steps = 3"):
        flow.forward(tf.ones([2, 2]))


# --- Training -----------------------------------------------------------------------

DATA = datasets.load("moons", 1024, 512, seed=0)
SMALL = {"hidden_units": (32, 32), "solver": "rk4", "num_steps": 8}


def _values(model):
    return [w.numpy().copy() for w in model.trainable_weights]


def _moved_every_weight(before, model):
    return [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]


@pytest.fixture(scope="module")
def flow_matching():
    """A small CNF trained by flow matching for a few epochs: (model, weights before, history)."""
    keras.utils.set_random_seed(0)
    model = cnf(2, standardize=DATA.train, **SMALL)
    model.compile(keras.optimizers.Adam(1e-2))
    before = _values(model)
    history = model.fit(
        DATA.train, batch_size=128, epochs=6, validation_data=DATA.test, verbose=0
    ).history
    return model, before, history


def test_flow_matching_lowers_its_loss_and_moves_every_weight(flow_matching):
    model, before, history = flow_matching
    assert all(_moved_every_weight(before, model))
    # At the start the field is zero, so the loss is E|x − z|²/D = 2 on standardised data
    # against a standard normal base; flow matching must go well below.
    assert history["loss"][-1] < 1.8
    assert history["loss"][-1] < history["loss"][0]


def test_flow_matching_reports_the_exact_validation_and_test_nll(flow_matching):
    model, _, history = flow_matching
    assert sorted(history) == ["loss", "val_bits_per_dim", "val_loss"]
    nll = -np.mean(model.log_prob(DATA.test))
    np.testing.assert_allclose(history["val_loss"][-1], nll, rtol=1e-5)
    np.testing.assert_allclose(model.evaluate(DATA.test, verbose=0)[0], nll, rtol=1e-5)
    np.testing.assert_allclose(history["val_bits_per_dim"][-1], nll / 2 / np.log(2), rtol=1e-5)


def test_a_saved_model_gives_identical_log_prob_and_samples(flow_matching, tmp_path):
    model, _, _ = flow_matching
    model.save(tmp_path / "cnf.keras")
    loaded = keras.saving.load_model(tmp_path / "cnf.keras")
    assert isinstance(loaded, ContinuousFlowModel)
    assert (loaded.training, loaded.pairing, loaded.sigma) == ("flow_matching", None, 0.0)
    assert loaded.continuous_layers[0].solver == "rk4"
    np.testing.assert_array_equal(loaded.log_prob(DATA.test), model.log_prob(DATA.test))
    np.testing.assert_array_equal(loaded.sample(100, seed=7), model.sample(100, seed=7))


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_maximum_likelihood_moves_every_weight_and_lowers_the_nll(trace):
    keras.utils.set_random_seed(1)
    model = cnf(
        2, training="maximum_likelihood", training_trace=trace, standardize=DATA.train, **SMALL
    )
    model.compile(keras.optimizers.Adam(1e-2))
    start = model.evaluate(DATA.test, verbose=0)[0]
    before = _values(model)
    history = model.fit(DATA.train[:512], batch_size=128, epochs=2, verbose=0).history
    assert all(_moved_every_weight(before, model))
    assert sorted(history) == ["bits_per_dim", "loss"]
    assert model.evaluate(DATA.test, verbose=0)[0] < start


def test_log_prob_is_exact_after_hutchinson_training():
    keras.utils.set_random_seed(2)
    model = cnf(2, training="maximum_likelihood", training_trace="hutchinson", **SMALL)
    model.compile(keras.optimizers.Adam(1e-2))
    model.fit(DATA.train[:256] / 2.0, batch_size=128, epochs=1, verbose=0)
    layer = model.continuous_layers[0]
    x = tf.constant(DATA.test[:64] / 2.0)
    # The same solve with the trace by a batch Jacobian (the field without its forward products)
    by_autodiff = ContinuousFlow(lambda y, t: layer.network(y, t), "rk4", num_steps=8)
    z, ildj = by_autodiff.inverse(x), by_autodiff.inverse_log_det_jacobian(x, event_ndims=1)
    exact = tfd.MultivariateNormalDiag(tf.zeros(2)).log_prob(z) + ildj
    np.testing.assert_allclose(model.log_prob(x), exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.evaluate(x, verbose=0)[0], -np.mean(exact), rtol=1e-5)
    # Hutchinson's estimate (which training used) differs from the exact trace, row by row.
    estimate = layer.bijector.inverse_log_det_jacobian(x, event_ndims=1, hutchinson_seed=[3, 4])
    assert np.abs(estimate - ildj).max() > 1e-3


def test_a_conditional_cnf_learns_where_its_context_puts_the_data():
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    context = rng.choice([-2.0, 2.0], (1024, 1)).astype("float32")
    x = (context + 0.3 * rng.standard_normal((1024, 2))).astype("float32")
    model = cnf(2, context_size=1, **SMALL)
    model.compile(keras.optimizers.Adam(1e-2))
    before = _values(model)
    model.fit(x, context, batch_size=128, epochs=4, verbose=0)
    assert all(_moved_every_weight(before, model))
    points = np.array([[2.0, 2.0], [-2.0, -2.0]], "float32")
    right = model.log_prob(points, context=np.array([[2.0], [-2.0]], "float32"))
    wrong = model.log_prob(points, context=np.array([[-2.0], [2.0]], "float32"))
    assert np.all(right > wrong + 1.0)
    samples = model.sample(200, seed=1, context=np.array([[2.0], [-2.0]], "float32"))
    assert samples.shape == (200, 2, 2)
    np.testing.assert_allclose(np.mean(samples, axis=0), [[2.0, 2.0], [-2.0, -2.0]], atol=0.7)


# --- Bad arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"solver": "euler"}, "unknown solver 'euler'; choose one of dopri5, rk4"),
        ({"training": "adjoint"}, "unknown training 'adjoint'"),
        ({"training_trace": "skilling"}, "unknown training_trace 'skilling'"),
        ({"rtol": 0.0}, "rtol must be a positive finite number"),
        ({"atol": float("nan")}, "atol must be a positive finite number"),
        ({"rtol": 1e-9}, r"rtol=1e-09 is below what float32 resolves"),
        ({"num_steps": 0}, "num_steps must be a positive integer"),
        ({"max_num_steps": 2.5}, "max_num_steps must be a positive integer"),
        ({"pairing": "greedy"}, "unknown pairing 'greedy'"),
        ({"sigma": -0.1}, "sigma must be a non-negative finite number"),
        ({"activation": "relu"}, "unknown activation 'relu'"),
        ({"training": "maximum_likelihood", "pairing": "sinkhorn"}, "options of flow matching"),
        ({"context_size": 2, "pairing": "sinkhorn"}, "mixes contexts"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cnf(2, **kwargs)


def test_flow_matching_refuses_steps_it_would_not_train():
    steps = [
        AffineCouplingLayer([True, False], (8,)),
        ContinuousFlowLayer((8,), solver="rk4", num_steps=4),
    ]
    with pytest.raises(ValueError, match="would never train"):
        ContinuousFlowModel(steps, event_shape=(2,))
    with pytest.raises(ValueError, match="has none"):
        ContinuousFlowModel(steps[:1], event_shape=(2,))
    # by maximum likelihood the same steps train together
    ContinuousFlowModel(steps, event_shape=(2,), training="maximum_likelihood")


def test_a_float64_cnf_takes_tolerances_float32_cannot():
    model = cnf(2, rtol=1e-9, atol=1e-9, dtype="float64", hidden_units=(8,))
    assert model.log_prob(np.zeros((1, 2))).dtype == tf.float64
