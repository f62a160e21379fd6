"""Neural spline flows and MAF / IAF: what the generic registry tests don't cover.

The registry (tfp_flows/testing/registry.py) runs every generic property on a spline coupling, a
MAF, an IAF and conditional forms; here: MADE's autoregressive structure, the context,
the identity at initialisation, the pass counts the docstrings promise, fitting moons,
and the SavedModel export.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import datasets, flows, layers
from tfp_flows.bijectors import MaskedAutoregressive, half_mask
from tfp_flows.bijectors.rational_quadratic import rational_quadratic_spline
from tfp_flows.export import export_saved_model

tfb = tfp.bijectors


def _randomise(layer_or_model, stddev=0.4, seed=0):
    rng = np.random.default_rng(seed)
    for weight in layer_or_model.weights:
        weight.assign(stddev * rng.standard_normal(weight.shape))
    return layer_or_model


def _points(shape, dtype="float32", seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- MADE --------------------------------------------------------------------------------


@pytest.mark.parametrize("context_size", [None, 2])
@pytest.mark.parametrize("hidden_units", [(3,), (16, 16), ()])
def test_made_output_i_depends_on_inputs_before_i_only(hidden_units, context_size):
    event_size = 5
    made = layers.MADE(hidden_units, "tanh", context_size=context_size, dtype="float64")
    made.build((None, event_size))
    _randomise(made)
    x = tf.constant(_points((8, event_size), "float64"))
    kwargs = {} if context_size is None else {"context": _points((8, 2), "float64", seed=2)}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        shift, log_scale = made(x, **kwargs)
    strictly_lower = np.tril(np.ones((event_size, event_size), bool), k=-1)
    for output in (shift, log_scale):
        jacobian = tape.batch_jacobian(output, x).numpy()  # [n, output i, input j]
        # Exactly zero on and above the diagonal: output i never sees x_i, ..., x_D.
        assert np.all(jacobian[:, ~strictly_lower] == 0.0)
        all_degrees = event_size - 1 + (context_size is not None)
        if len(hidden_units) == 0 or min(hidden_units) >= all_degrees:
            # Wide enough for every degree: output i sees every x_<i.
            assert np.all(jacobian[:, strictly_lower] != 0.0)
        else:
            assert np.any(jacobian[:, strictly_lower] != 0.0)


def test_made_context_reaches_every_output_and_the_first_hidden_units():
    made = layers.MADE((8,), "tanh", context_size=2)
    made.build((None, 3))
    _randomise(made)
    x = tf.constant(_points((4, 3)))
    first, second = _points((4, 2), seed=2), _points((4, 2), seed=3)
    for a, b in zip(made(x, context=first), made(x, context=second)):
        # Output 0 depends on no input at all: only the context moves it.
        assert np.all(np.abs(a.numpy() - b.numpy()) > 1e-6)
    with pytest.raises(ValueError, match="conditional"):
        made(x)


def test_made_needs_two_dimensions_unless_conditional():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        layers.MADE((8,)).build((None, 1))
    made = layers.MADE((8,), context_size=2)
    made.build((None, 1))
    _randomise(made)
    x = tf.zeros((2, 1))
    shift, _ = made(x, context=_points((2, 2), seed=2))
    assert shift.shape == (2, 1) and float(shift[0, 0]) != float(shift[1, 0])


# --- The fused rational-quadratic spline against TFP's ------------------------------------


def _random_spline(dtype, concentration, seed=0, shape=(400, 3), num_bins=8, bound=3.0):
    """Random knots (Dirichlet bin sizes) and points on [-4/3·bound, 4/3·bound]: tails too."""
    rng = np.random.default_rng(seed)
    span = 2 * bound - num_bins * 1e-3

    def sizes():
        return 1e-3 + span * rng.dirichlet(np.full(num_bins, concentration), size=shape)

    arrays = (
        sizes(),
        sizes(),
        np.exp(rng.normal(size=(*shape, num_bins - 1))),
        rng.uniform(-4 * bound / 3, 4 * bound / 3, size=shape),
    )
    return [tf.constant(a.astype(dtype)) for a in arrays]


@pytest.mark.parametrize(
    "dtype, concentration, atol",
    # float32 on moderate knots (the bins a trained flow has); any knots in float64,
    # down to bins of height 1e-3 over a width of 2.
    [("float64", 0.5, 1e-8), ("float64", 3.0, 1e-10), ("float32", 3.0, 1e-4)],
)
def test_fused_spline_is_tfps_rational_quadratic_spline(dtype, concentration, atol):
    widths, heights, slopes, x = _random_spline(dtype, concentration)
    tfp_spline = tfb.RationalQuadraticSpline(
        widths, heights, slopes, range_min=tf.constant(-3.0, dtype)
    )
    y, log_det = rational_quadratic_spline(x, widths, heights, slopes, 3.0)
    np.testing.assert_allclose(y, tfp_spline.forward(x), atol=atol)
    np.testing.assert_allclose(log_det, tfp_spline.forward_log_det_jacobian(x, 0), atol=atol)
    x_back, inverse_log_det = rational_quadratic_spline(y, widths, heights, slopes, 3.0, True)
    np.testing.assert_allclose(x_back, tfp_spline.inverse(y), atol=atol * 10)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=atol * 10)
    np.testing.assert_allclose(x_back, x, atol=atol * 10)
    outside = np.abs(x.numpy()) > 3.0
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(y.numpy()[outside], x.numpy()[outside])
    np.testing.assert_array_equal(log_det.numpy()[outside], 0.0)


def test_fused_spline_gradients_are_tfps():
    *knots, x = _random_spline("float64", 3.0, seed=1)
    x = tf.concat([x[:-1], tf.constant([[3.0, -3.0, 5.0]], tf.float64)], axis=0)  # ends, a tail

    def gradients(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, *knots])
            total = tf.reduce_sum(tf.add_n(fn(*knots)))
        return tape.gradient(total, [x, *knots])

    def fused(widths, heights, slopes):
        return rational_quadratic_spline(x, widths, heights, slopes, 3.0)

    def reference(widths, heights, slopes):
        spline = tfb.RationalQuadraticSpline(widths, heights, slopes, range_min=-3.0)
        return spline.forward(x), spline.forward_log_det_jacobian(x, 0)

    for ours, theirs in zip(gradients(fused), gradients(reference)):
        assert np.all(np.isfinite(ours))
        np.testing.assert_allclose(ours, theirs, atol=1e-8)


def test_spline_coupling_is_the_tfp_spline_it_returns():
    layer = layers.SplineCouplingLayer(half_mask(4), hidden_units=(8,))
    layer.build((None, 4))
    _randomise(layer, 0.3)
    coupling = layer.bijector
    x = tf.constant(2.0 * _points((64, 4)))
    x_a, x_b = x[:, :2], x[:, 2:]
    spline = coupling.spline(x_a)
    y = coupling.forward(x)
    np.testing.assert_allclose(y[:, :2], x_a)
    np.testing.assert_allclose(y[:, 2:], spline.forward(x_b), atol=1e-5)
    np.testing.assert_allclose(
        coupling.forward_log_det_jacobian(x, 1),
        tf.reduce_sum(spline.forward_log_det_jacobian(x_b, 0), axis=-1),
        atol=1e-4,
    )


# --- Identity at initialisation, context, pass counts -------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: flows.nsf(3, num_layers=2, hidden_units=(8,)),
        lambda: flows.maf(3, num_layers=2, hidden_units=(8,)),
        lambda: flows.maf(3, num_layers=2, hidden_units=(8,), inverse=True),
        lambda: flows.nsf(3, num_layers=2, hidden_units=(8,), context_size=2),
        lambda: flows.maf(3, num_layers=2, hidden_units=(8,), context_size=2),
    ],
    ids=["nsf", "maf", "iaf", "nsf_conditional", "maf_conditional"],
)
def test_fresh_flows_are_the_identity(make):
    # Every spline and autoregressive step is the identity; MAF's reversals between
    # them permute the event, which leaves a standard normal's density unchanged.
    model = make()
    x = tf.constant(2.5 * _points((16, 3)))  # inside and outside the spline's [-3, 3]
    context = {} if model.context_size is None else {"context": _points((16, 2), seed=2)}
    steps = [s for s in model.flow_layers if not isinstance(s, layers.PermuteLayer)]
    assert len(steps) == 2
    for step in steps:
        for direction in ("forward", "inverse"):
            np.testing.assert_allclose(
                getattr(step.bijector, direction)(x, **context), x, atol=1e-5
            )
            log_det = getattr(step.bijector, f"{direction}_log_det_jacobian")
            np.testing.assert_allclose(log_det(x, event_ndims=1, **context), 0.0, atol=1e-5)
    np.testing.assert_allclose(
        model.log_prob(x, **context), model.base_distribution.log_prob(x), atol=1e-5
    )


@pytest.mark.parametrize(
    "layer",
    [
        lambda: layers.SplineCouplingLayer(half_mask(3), 4, hidden_units=(8,), context_size=2),
        lambda: layers.MaskedAutoregressiveLayer((8,), context_size=2),
        lambda: layers.MaskedAutoregressiveLayer((8,), inverse=True, context_size=2),
    ],
    ids=["spline", "maf", "iaf"],
)
def test_the_context_changes_both_directions(layer):
    layer = layer()
    layer.build((None, 3))
    bijector = _randomise(layer).bijector
    x = tf.constant(_points((5, 3)))
    first, second = _points((5, 2), seed=2), _points((5, 2), seed=3)
    for direction in ("forward", "inverse"):
        transform = getattr(bijector, direction)
        log_det = getattr(bijector, f"{direction}_log_det_jacobian")
        assert not np.allclose(transform(x, context=first), transform(x, context=second))
        assert not np.allclose(
            log_det(x, event_ndims=1, context=first), log_det(x, event_ndims=1, context=second)
        )
        # The context reaches the network through tfb.Invert too: the round trip holds.
        back = getattr(bijector, "inverse" if direction == "forward" else "forward")
        np.testing.assert_allclose(
            back(tf.identity(transform(x, context=second)), context=second), x, atol=1e-5
        )


def test_maf_density_takes_one_pass_and_sampling_one_per_dimension():
    calls = []

    def shift_and_log_scale(x):
        calls.append(1)
        shifted = tf.pad(x[..., :-1], [[0, 0], [1, 0]])  # output i sees x_{i-1}
        return 0.5 * shifted, 0.1 * tf.sin(shifted)

    maf = MaskedAutoregressive(shift_and_log_scale)
    iaf = tfb.Invert(maf)
    z = tf.constant(_points((3, 4)))
    x = maf.forward(z)
    assert len(calls) == 4
    calls.clear()
    np.testing.assert_allclose(maf.inverse(tf.identity(x)), z, atol=1e-6)
    assert len(calls) == 1
    calls.clear()
    iaf.forward(tf.identity(z))
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("family", "options", "extent", "points"),
    [
        ("nsf", {}, 20.0, 801),
        ("maf", {}, 20.0, 801),
        # These random IAF weights carry 13% of the mass beyond |x| = 20.
        ("maf", {"inverse": True}, 60.0, 1201),
    ],
    ids=["nsf", "maf", "iaf"],
)
def test_density_integrates_to_one(family, options, extent, points):
    # Random weights far from the identity; a wrong log-det sign or term shows here.
    model = _randomise(
        flows.FLOWS[family](2, num_layers=3, hidden_units=(8,), **options), stddev=0.5
    )
    edge = np.linspace(-extent, extent, points)
    grid = np.stack(np.meshgrid(edge, edge), -1).reshape(-1, 2).astype("float32")
    mass = np.exp(model.log_prob(grid).numpy()).sum() * (edge[1] - edge[0]) ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_iaf_samples_score_as_their_base_points_say_float64():
    model = _randomise(
        flows.maf(3, num_layers=3, hidden_units=(16,), inverse=True, dtype="float64")
    )
    z = tf.constant(_points((64, 3), "float64"))
    x = model.forward(z)
    log_det = model.bijector.forward_log_det_jacobian(z, event_ndims=1)
    expected = model.base_distribution.log_prob(z) - log_det
    np.testing.assert_allclose(model.log_prob(tf.identity(x)), expected, atol=1e-9)
    np.testing.assert_allclose(model.inverse(tf.identity(x)), z, atol=1e-9)
    samples = model.sample(256, seed=4)
    assert np.isfinite(model.log_prob(samples)).all()


# --- Fitting moons -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moons():
    return datasets.load("moons", num_train=6000, num_test=2000, seed=0)


@pytest.mark.parametrize(
    ("family", "options", "epochs", "bound"),
    [
        # Test NLLs over seeds 0-2: nsf 0.51-0.55 nats, maf 0.75-0.91; untrained 2.00
        # (the standardising step alone); the data's entropy is about 0.29.
        ("nsf", {"num_layers": 3, "hidden_units": (32, 32)}, 6, 0.8),
        ("maf", {"num_layers": 4, "hidden_units": (32, 32)}, 12, 1.1),
    ],
)
def test_short_training_on_moons_beats_an_untrained_flow(moons, family, options, epochs, bound):
    keras.utils.set_random_seed(0)
    model = flows.FLOWS[family](2, standardize=moons.train, **options)
    untrained = -float(np.mean(model.log_prob(moons.test)))
    model.compile(keras.optimizers.Adam(3e-3))
    history = model.fit(moons.train, batch_size=256, epochs=epochs, verbose=0).history
    trained = -float(np.mean(model.log_prob(moons.test)))
    assert np.isfinite(history["loss"]).all()
    assert trained < bound and untrained - trained > 0.8, (untrained, trained)
    samples = model.sample(2000, seed=1).numpy()
    assert np.isfinite(samples).all() and np.isfinite(model.log_prob(samples)).all()


# --- Export -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["nsf", "maf"])
def test_export_matches_the_model(family, tmp_path):
    model = _randomise(flows.FLOWS[family](3, num_layers=2, hidden_units=(8,)), stddev=0.3)
    path = export_saved_model(model, tmp_path, family)
    loaded = tf.saved_model.load(path)
    x = _points((10, 3))
    np.testing.assert_allclose(
        loaded.signatures["log_prob"](x=tf.constant(x))["log_prob"], model.log_prob(x), rtol=1e-6
    )
    # Sampling runs MAF's D-pass loop inside the exported graph.
    samples = loaded.signatures["sample"](n=tf.constant(5), seed=tf.constant([1, 2]))["samples"]
    np.testing.assert_allclose(samples, model.sample(5, seed=(1, 2)), rtol=1e-5, atol=1e-6)
    # The .keras format restores the whole factory model, permutations included.
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(restored.log_prob(x), model.log_prob(x))
