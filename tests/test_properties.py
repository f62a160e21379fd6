"""Property-based tests (hypothesis) over every registered vector step.

`tests/test_registry.py` checks each entry at one event shape, one set of weights and
standard-normal inputs. Here hypothesis draws the event size (from the entry's minimum up
to 6), the leading batch shape (0-3 dimensions of size 1-4), the scale (0.01-2) and seed of
the random weights, and inputs from 1e-6 to 1e3 in magnitude, including exact zeros, the
bounds themselves and each flow's own singular places (the planar fold, the radial centre).

Precision properties run in float64, where the tolerances can be tied to the rounding unit;
finiteness and batch-shape properties run in both float32 and float64.
"""

import dataclasses
import functools
import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfp_flows import FlowModel
from tfp_flows.testing.registry import REGISTRY, bijector_under_test, build_random, context_kwargs

# Only vector steps have an event size to draw; image steps have one fixed shape (and
# Jacobians too large for hundreds of examples): test_registry.py covers them.
NAMES = sorted(name for name, entry in REGISTRY.items() if entry.image_shape is None)
MAX_EVENT_SIZE = 6
TINY, HUGE = 1e-6, 1e3  # the range of input magnitudes
FAR = 1e2  # log_prob "far away": the random events have magnitudes in [FAR, HUGE]
DTYPES = ["float32", "float64"]

# Tolerances of the float64 precision properties. Every check is relative to magnitude:
# error <= SLACK · (what first-order rounding analysis says the error scales with), that is
# eps times the magnitude of the numbers rounded (inputs, outputs and weights), times the
# Jacobian's norms where a computation inverts or forms it; each test says which. Over
# 1,000 draws per entry (some 30,000 events) the worst error was 8.6 eps times its scale,
# so SLACK = 64 eps leaves a 7x margin, while the wrong inverses and log-dets these tests
# exist to catch are off by 1e3 eps to O(1).
EPS = float(np.finfo(np.float64).eps)
SLACK = 64 * EPS


def _slack(name):
    """SLACK, or for a step computed by a numerical solver (the continuous flow's ODE) the
    error its solver leaves, in the same units (`Entry.solver_tolerance`)."""
    solver_tolerance = REGISTRY[name].solver_tolerance
    return SLACK if solver_tolerance is None else max(SLACK, solver_tolerance["float64"])

# Where the Jacobian's condition number exceeds this, float64 keeps fewer than 8 digits of
# an inverse and the bounds above grow vacuous: the precision checks leave such events out
# (a restriction of the input domain, not a looser check); the finiteness tests keep them.
# Only the planar flow gets there, at its fold wᵀx + b ≈ 0 when wᵀu ≪ 0 (wᵀû → -1 makes the
# map nearly singular: condition numbers up to 1e17 at stddev 2).
COND_MAX = 1e8


# --- Strategies --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    event_size: int
    seed: int
    stddev: float
    points: np.ndarray  # float64, shape [*batch_shape, event_size]
    special_rows: int  # how many events to move onto the flow's singular places

    def layer(self, dtype):
        return _layer(self.name, self.event_size, dtype, self.seed, self.stddev)

    def inputs(self, dtype):
        """The points, with the first `special_rows` events moved to special places."""
        return _with_special_points(self.layer(dtype), self.points, self.special_rows)


@st.composite
def _events(draw, shape, event_size, low, high):
    """Events of shape [*shape, event_size] whose max-norms lie in [low, high]."""
    n = math.prod(shape)
    # Most events: random directions at log-uniform magnitudes, so that every example
    # spans the whole range. Hypothesis picks the seed, not 384 separate floats.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    events = rng.standard_normal((n, event_size))
    events /= np.maximum(np.abs(events).max(axis=-1, keepdims=True), 1e-300)
    events *= np.exp(rng.uniform(math.log(low), math.log(high), (n, 1)))
    # A few events hypothesis chooses value by value: exact zeros, ±low, ±high and the
    # awkward floats it likes, which it can also shrink when a property fails.
    value = st.one_of(
        st.sampled_from([0.0, low, -low, high, -high]),
        st.floats(-high, high, allow_subnormal=False),
    )
    edge_shape = (draw(st.integers(0, min(n, 3))), event_size)
    edge = draw(hnp.arrays(np.float64, edge_shape, elements=value))
    events[: len(edge)] = edge
    return events.reshape(tuple(shape) + (event_size,))


@st.composite
def cases(draw, name, batch_dims=(1, 1), low=TINY, high=HUGE):
    """A flow step's configuration and its inputs.

    batch_dims bounds the number of leading dimensions, each of size 1-4; the default is
    a flat [n, D] batch of 1-64 events (what batch_jacobian and FlowModel.fit take).
    """
    event_size = draw(st.integers(REGISTRY[name].min_event_size, MAX_EVENT_SIZE))
    if batch_dims == (1, 1):
        shape = (draw(st.integers(1, 64)),)
    else:
        shape = tuple(
            draw(st.lists(st.integers(1, 4), min_size=batch_dims[0], max_size=batch_dims[1]))
        )
    points = draw(_events(shape, event_size, low, high))
    return Case(
        name=name,
        event_size=event_size,
        seed=draw(st.integers(0, 2**16 - 1)),
        stddev=draw(st.floats(0.01, 2.0)),
        points=points,
        special_rows=draw(st.integers(0, min(2, math.prod(shape)))),
    )


def _with_special_points(layer, points, count):
    """Moves the first `count` events onto the places where the flow is least regular."""
    flat = points.reshape(-1, points.shape[-1]).copy()
    if count and hasattr(layer, "w"):  # planar: onto the fold wᵀx + b = 0
        w = layer.w.numpy().astype(np.float64)
        b = float(layer.b.numpy())
        rows = flat[:count]
        flat[:count] = rows - ((rows @ w + b) / (w @ w))[:, None] * w
    elif count and hasattr(layer, "z0"):  # radial: its centre, and just off it
        z0 = layer.z0.numpy().astype(np.float64)
        flat[:count] = z0
        flat[1:count, 0] += TINY
    return flat.reshape(points.shape)


# --- Helpers -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _layer(name, event_size, dtype, seed, stddev):
    # The examples a failure is shrunk through share configurations: build each once.
    return build_random(name, event_size, dtype=dtype, seed=seed, stddev=stddev)


@functools.lru_cache(maxsize=64)
def _model(name, event_size, dtype, seed, stddev):
    layer = _layer(name, event_size, dtype, seed, stddev)
    return FlowModel([layer], event_shape=(event_size,), dtype=dtype)


def _fresh(t):
    # A new tensor object: TFP's bijector cache must not answer for it.
    return tf.identity(t)


def _per_event(log_det, batch_shape):
    # TFP returns a scalar log-det for constant-Jacobian bijectors: it broadcasts.
    return np.broadcast_to(np.asarray(log_det), batch_shape)


def _max_abs(a):
    return np.abs(np.asarray(a)).max(axis=-1)


def _magnitude(layer, *events):
    """Per event, the magnitude of the numbers rounded along the way: the events' own, and
    the weights' (at least 1 for the fixed steps, whose shifts and scales are O(1))."""
    weights = max([1.0] + [float(np.abs(w.numpy()).max()) for w in layer.weights])
    return weights + sum(_max_abs(e) for e in events)


@dataclasses.dataclass
class Linearisation:
    """forward(x), its autodiff Jacobian J [n, D, D], and ‖J‖₂, ‖J⁻¹‖₂ per event."""

    y: tf.Tensor
    jacobian: np.ndarray
    norm: np.ndarray
    inverse_norm: np.ndarray

    @property
    def cond(self):
        return self.norm * self.inverse_norm


def _linearise(bijector, x):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = bijector.forward(x)
    # A loop over the <= 6 outputs: 5-10x faster here than pfor, which traces a function.
    jacobian = tape.batch_jacobian(y, x, experimental_use_pfor=False).numpy()
    singular_values = np.linalg.svd(jacobian, compute_uv=False)
    with np.errstate(divide="ignore"):
        inverse_norm = 1.0 / singular_values[:, -1]
    return Linearisation(y, jacobian, singular_values[:, 0], inverse_norm)


def _assert_within(error, bound, what):
    error, bound = np.asarray(error), np.asarray(bound)
    bad = ~(error <= bound)  # NaN errors fail too
    assert not bad.any(), (
        f"{what}: error {error[bad].tolist()} exceeds bound {bound[bad].tolist()} "
        f"at rows {np.flatnonzero(bad).tolist()}"
    )


# --- 1. Inverse round trips (float64) ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_inverse_round_trips(name, data):
    case = data.draw(cases(name))
    layer = case.layer("float64")
    bijector = bijector_under_test(layer)
    points = case.inputs("float64")

    # inverse(forward(x)) = x. The inverse recovers x from y, and y itself carries rounding
    # error of eps·|y|: to first order that moves the recovered x by ‖J⁻¹‖·eps·|y|, however
    # good the inverse. So the bound is the magnitude scale times max(1, ‖J⁻¹‖₂).
    x = tf.constant(points)
    lin = _linearise(bijector, x)
    x_back = bijector.inverse(_fresh(lin.y))
    scale = _magnitude(layer, x, lin.y)
    usable = lin.cond <= COND_MAX
    _assert_within(
        _max_abs(x_back - x)[usable],
        (_slack(name) * scale * np.maximum(1.0, lin.inverse_norm))[usable],
        "inverse(forward(x)) - x",
    )

    # forward(inverse(y)) = y, with the points taken as data. This is the inverse's backward
    # error (its residual), which a correct solver keeps small however badly conditioned the
    # map: no ‖J⁻¹‖ factor, and no rows left out. Only forward's own rounding of x̂ (eps·|x̂|)
    # is amplified, by up to ‖J(x̂)‖.
    y = tf.constant(points)
    x = bijector.inverse(y)
    back = _linearise(bijector, _fresh(x))
    _assert_within(
        _max_abs(back.y - y),
        _slack(name) * (_magnitude(layer, y) + np.maximum(1.0, back.norm) * _max_abs(x)),
        "forward(inverse(y)) - y",
    )


# --- 2. Log-dets against autodiff (float64) ----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_log_dets_match_the_jacobian(name, data):
    case = data.draw(cases(name))
    layer = case.layer("float64")
    bijector = bijector_under_test(layer)
    x = tf.constant(case.inputs("float64"))
    n, d = x.shape
    lin = _linearise(bijector, x)
    usable = lin.cond <= COND_MAX

    # Evaluating a log-det: δlog|det J| = tr(J⁻¹·δJ) <= D·‖J⁻¹‖·‖δJ‖, and J's entries carry
    # rounding errors of eps·(1 + ‖J‖), since these flows form J as the identity plus a
    # correction (planar, radial) or from terms of J's own size (the couplings). The closed
    # forms cancel at the same places (1 + wᵀû·(1 - a²) in the planar log-det), so this also
    # bounds their difference from slogdet of the autodiff Jacobian.
    evaluation = d * lin.inverse_norm * (1.0 + lin.norm)
    fldj, gradient = _log_det_and_gradient(bijector, x)
    fldj = _per_event(fldj, (n,))
    _, expected = np.linalg.slogdet(lin.jacobian)
    _assert_within(
        np.abs(fldj - expected)[usable],
        (_slack(name) * evaluation)[usable],
        "fldj(x) - log|det J(x)|",
    )

    # ildj(f(x)) is the log-det at the x̂ the inverse recovers from y = f(x), which is off
    # by up to eps·magnitude·max(1, ‖J⁻¹‖) (see the round trip): to first order, that
    # moves the log-det by ‖∇ₓ log|det J|‖ times as much. The gradient is taken at both
    # x and x̂, the larger one counting: the log-det may have a kink between them (a
    # spline's bound, where the identity tail begins, is one-sided). Each side also has
    # its evaluation error.
    ildj = _per_event(bijector.inverse_log_det_jacobian(_fresh(lin.y), event_ndims=1), (n,))
    _, gradient_back = _log_det_and_gradient(bijector, bijector.inverse(_fresh(lin.y)))
    steepest = np.maximum(np.linalg.norm(gradient, axis=-1), np.linalg.norm(gradient_back, axis=-1))
    displacement = _magnitude(layer, x, lin.y) * np.maximum(1.0, lin.inverse_norm)
    _assert_within(
        np.abs(fldj + ildj)[usable],
        (_slack(name) * (evaluation + displacement * steepest))[usable],
        "fldj(x) + ildj(f(x))",
    )


def _log_det_and_gradient(bijector, x):
    """fldj at x and its gradient with respect to x."""
    x = _fresh(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        fldj = bijector.forward_log_det_jacobian(x, event_ndims=1)
    return fldj, tape.gradient(fldj, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)


# --- 3. Finite outputs -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_outputs_are_finite(name, data, dtype):
    # No exp can overflow within |x| <= 1e3 and weights of scale <= 2, even in float32: the
    # coupling's log-scale is soft-clamped to ±3, the shift network's output stays below
    # ~1e6, tanh saturates, and the radial map grows at most linearly. So every output and
    # log-det must be finite, not merely free of NaN.
    case = data.draw(cases(name))
    bijector = bijector_under_test(case.layer(dtype))
    points = tf.constant(case.inputs(dtype), dtype)
    outputs = {
        "forward": bijector.forward(_fresh(points)),
        "forward_log_det_jacobian": bijector.forward_log_det_jacobian(
            _fresh(points), event_ndims=1
        ),
        "inverse": bijector.inverse(_fresh(points)),
        "inverse_log_det_jacobian": bijector.inverse_log_det_jacobian(
            _fresh(points), event_ndims=1
        ),
    }
    for method, value in outputs.items():
        value = np.asarray(value)
        assert np.isfinite(value).all(), f"{method} is not finite: {value}"


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_log_prob_far_away_is_never_nan(name, data, dtype):
    # Far from the data a density may underflow to -inf (a standard-normal base gives
    # about -|z|²/2, so far only beyond |z| ~ 1e19 in float32), but it is never NaN or +inf.
    case = data.draw(cases(name, low=FAR, high=HUGE))
    model = _model(case.name, case.event_size, dtype, case.seed, case.stddev)
    # Always [n, D]: see test_flow_model_batch_shapes for inputs of other ranks.
    log_prob = np.asarray(model.log_prob(case.inputs(dtype).astype(dtype), **context_kwargs(model)))
    assert log_prob.shape == (len(case.points),)
    assert not np.isnan(log_prob).any(), f"NaN log_prob: {log_prob}"
    assert (log_prob < np.inf).all(), f"+inf log_prob: {log_prob}"


# --- 4. Leading batch dimensions ---------------------------------------------------------

# Batched and flattened inputs go through the same kernels, but a matmul may block (and so
# round) rows differently by batch shape: allow a few ulps of each value, nothing more.
ULPS = 8


def _assert_same_values(batched, flat, dtype, what, name=None):
    """Equal to ULPS rounding errors; for a solver's step (`name` given) to its error, since
    two compiled graphs round differently and the solver's steps compound it."""
    batched, flat = np.asarray(batched), np.asarray(flat)
    tolerance = ULPS * float(np.finfo(dtype).eps)
    if name is not None and REGISTRY[name].solver_tolerance is not None:
        tolerance = max(tolerance, REGISTRY[name].solver_tolerance[dtype])
    np.testing.assert_allclose(
        batched.reshape(flat.shape), flat, rtol=tolerance, atol=tolerance, err_msg=what
    )


def _assert_matches_flat(bijector, batched, dtype):
    """forward, inverse and both log-dets of [*batch, D] equal those of [-1, D]."""
    batch_shape = tuple(batched.shape[:-1])
    flat = tf.reshape(batched, (-1, batched.shape[-1]))
    for direction in ["forward", "inverse"]:
        transform = getattr(bijector, direction)
        log_det = getattr(bijector, f"{direction}_log_det_jacobian")
        out = transform(_fresh(batched))
        assert out.shape == batched.shape
        _assert_same_values(out, transform(_fresh(flat)), dtype, direction)
        batched_log_det = log_det(_fresh(batched), event_ndims=1)
        assert batched_log_det.shape.rank in (0, len(batch_shape))
        _assert_same_values(
            _per_event(batched_log_det, batch_shape),
            _per_event(log_det(_fresh(flat), event_ndims=1), (flat.shape[0],)),
            dtype,
            f"{direction} log-det",
        )


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_leading_batch_dimensions(name, data, dtype):
    case = data.draw(cases(name, batch_dims=(1, 3)))
    bijector = bijector_under_test(case.layer(dtype))
    _assert_matches_flat(bijector, tf.constant(case.inputs(dtype), dtype), dtype)


# A single event of shape [D] is a valid input of any TFP bijector with min_event_ndims=1
# (and of FlowModel.log_prob); coupling networks once failed on it (Keras Dense wants rank 2).


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_single_event_without_batch_dimensions(name, data, dtype):
    case = data.draw(cases(name, batch_dims=(0, 0)))
    bijector = bijector_under_test(case.layer(dtype))
    _assert_matches_flat(bijector, tf.constant(case.inputs(dtype), dtype), dtype)


# FlowModel compiles log_prob with tf.function(reduce_retracing=True): a call with a second
# input rank relaxes the trace to an unknown shape, which coupling networks once rejected.


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_flow_model_batch_shapes(name, data, dtype):
    # One model per example (not cached): its compiled functions keep the shapes they saw.
    case = data.draw(cases(name, batch_dims=(0, 3)))
    model = FlowModel([case.layer(dtype)], event_shape=(case.event_size,), dtype=dtype)
    batched = case.inputs(dtype).astype(dtype)
    log_prob = np.asarray(model.log_prob(batched, **context_kwargs(model)))
    assert log_prob.shape == batched.shape[:-1]
    flat_log_prob = model.log_prob(batched.reshape(-1, case.event_size), **context_kwargs(model))
    _assert_same_values(log_prob, flat_log_prob, dtype, "log_prob", name)
