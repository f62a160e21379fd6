"""What each bijector promises beyond the generic registry properties."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.bijectors import AffineCoupling, Planar, Radial, Reverse, half_mask, parity_mask
from tfp_flows.layers import PermuteLayer

tfb = tfp.bijectors
tfd = tfp.distributions


def test_planar_trains_from_plain_tf_variables():
    u = tf.Variable([1.0, -0.5])
    w = tf.Variable([0.3, 2.0])
    b = tf.Variable(0.1)
    flow = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(2)), Planar(u, w, b))
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow.log_prob(tf.constant([[0.5, 1.0], [-1.0, 2.0]])))
    gradients = tape.gradient(loss, [u, w, b])
    assert all(g is not None and float(tf.norm(g)) > 0 for g in gradients)


def test_planar_is_invertible_when_u_points_against_w():
    # wᵀu = -10 would fold the plane; the reparameterised û keeps wᵀû > -1.
    w = np.array([1.0, 2.0], np.float64)
    flow = Planar(u=-2.0 * w, w=w, b=0.5)
    x = np.random.default_rng(0).standard_normal((200, 2)) * 3
    y = flow.forward(x)
    np.testing.assert_allclose(flow.inverse(tf.identity(y)), x, atol=1e-10)
    assert np.all(np.isfinite(flow.forward_log_det_jacobian(x, event_ndims=1)))


def test_planar_inverse_far_from_the_origin():
    flow = Planar(u=[3.0, -1.0], w=[-2.0, 0.5], b=1.0)
    y = tf.constant([[1e3, -1e3], [-1e4, 5.0], [0.0, 0.0]])
    x = flow.inverse(y)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(flow.forward(tf.identity(x)), y, rtol=1e-6, atol=1e-4)


def test_planar_inverse_runs_in_a_graph_and_with_xla():
    flow = Planar(u=[0.7, -1.2], w=[1.5, 0.5], b=-0.3)
    y = tf.random.stateless_normal((64, 2), seed=(1, 2))
    eager = flow.inverse(y)
    graph = tf.function(lambda t: flow.inverse(t), jit_compile=True)(tf.identity(y))
    np.testing.assert_allclose(graph, eager, atol=1e-5)


def test_radial_inverse_at_and_near_its_centre():
    flow = Radial(z0=np.array([0.5, -1.0]), alpha=0.3, beta=-2.0)
    y = np.array([[0.5, -1.0], [0.5 + 1e-9, -1.0], [3.0, 4.0]])
    x = flow.inverse(y)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(flow.forward(tf.identity(x)), y, atol=1e-12)
    with tf.GradientTape() as tape:
        point = tf.constant([[0.5, -1.0]], tf.float64)
        tape.watch(point)
        log_det = flow.forward_log_det_jacobian(point, event_ndims=1)
    assert np.all(np.isfinite(tape.gradient(log_det, point)))


def test_radial_takes_a_deferred_positive_alpha():
    raw = tf.Variable(-1.0)
    flow = Radial(z0=[0.0, 0.0], alpha=tfp.util.DeferredTensor(raw, tf.math.softplus), beta=1.0)
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(flow.forward(tf.constant([[1.0, 2.0]])))
    assert tape.gradient(out, raw) is not None


def test_coupling_passes_bijector_kwargs_to_its_network():
    seen = {}

    def shift_and_log_scale(x_a, context=None):
        seen["context"] = context
        return context * tf.ones_like(x_a), tf.zeros_like(x_a)

    coupling = AffineCoupling(shift_and_log_scale, mask=[True, False], name="coupling")
    chain = tfb.Chain([tfb.Shift(1.0), coupling])
    x = tf.constant([[1.0, 2.0]])
    y = chain.forward(x, coupling={"context": tf.constant([[5.0]])})
    np.testing.assert_allclose(y, [[2.0, 8.0]])
    assert seen["context"] is not None


def test_coupling_soft_clamps_the_log_scale():
    coupling = AffineCoupling(
        lambda x_a: (tf.zeros_like(x_a), 1e3 * tf.ones_like(x_a)),
        mask=[True, False],
        log_scale_clamp=2.0,
    )
    log_det = coupling.forward_log_det_jacobian(tf.constant([[0.0, 1.0]]), event_ndims=1)
    np.testing.assert_allclose(log_det, [2.0], rtol=1e-6)


@pytest.mark.parametrize("mask", [[True, True], [False, False], [[True, False]], [1, 0]])
def test_coupling_refuses_masks_with_an_empty_part_or_wrong_type(mask):
    with pytest.raises(ValueError, match="mask"):
        AffineCoupling(lambda x: (x, x), mask=mask)


def test_masks():
    np.testing.assert_array_equal(half_mask(5), [True, True, False, False, False])
    np.testing.assert_array_equal(half_mask(4, flip=True), [False, False, True, True])
    np.testing.assert_array_equal(parity_mask(4), [True, False, True, False])
    np.testing.assert_array_equal(parity_mask(3, odd=True), [False, True, False])


def test_planar_inverse_of_a_batch_with_a_non_finite_row():
    # One NaN row must not stop the Newton iteration for the other rows.
    flow = Planar(u=[10.0, 5.0], w=[2.0, 1.0], b=0.3)
    x = np.random.default_rng(0).standard_normal((200, 2)).astype("float32")
    y = flow.forward(x).numpy()
    y[0] = np.nan
    y[1] = np.inf
    x_back = flow.inverse(tf.constant(y)).numpy()
    np.testing.assert_allclose(x_back[2:], x[2:], rtol=1e-4, atol=1e-4)
    assert np.isnan(x_back[0]).all()


def test_planar_with_w_zero_is_a_finite_shift():
    flow = Planar(u=[1.0, -2.0], w=[0.0, 0.0], b=0.5)
    x = tf.constant([[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_allclose(flow.forward(x), x + np.tanh(0.5) * np.array([1.0, -2.0]), rtol=1e-6)
    np.testing.assert_allclose(flow.forward_log_det_jacobian(x, event_ndims=1), 0.0, atol=1e-7)


def test_log_det_first_then_value_costs_one_pass():
    calls = []

    def shift_and_log_scale(x_a):
        calls.append(1)
        return tf.zeros_like(x_a), 0.5 * x_a

    coupling = AffineCoupling(shift_and_log_scale, mask=[True, False])

    @tf.function
    def log_det_then_value(y):
        # In a graph the cached value stays alive (eagerly, TFP's cache holds
        # outputs weakly and drops a value nobody keeps).
        return coupling.inverse_log_det_jacobian(y, event_ndims=1), coupling.inverse(y)

    log_det_then_value(tf.constant([[1.0, 2.0]]))
    assert len(calls) == 1  # calls counted while tracing


def test_radial_validates_alpha_when_asked():
    with pytest.raises(tf.errors.InvalidArgumentError, match="alpha must be positive"):
        Radial(z0=[0.0, 0.0], alpha=-1.0, beta=0.0, validate_args=True)
    Radial(z0=[0.0, 0.0], alpha=-1.0, beta=0.0)  # TFP's convention: checks are opt-in
    alpha = tf.Variable(1.0)
    flow = Radial(z0=[0.0, 0.0], alpha=alpha, beta=0.0, validate_args=True)
    alpha.assign(-2.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="alpha must be positive"):
        flow.forward(tf.constant([[1.0, 2.0]]))


@pytest.mark.parametrize(
    ("u", "w", "b", "y"),
    [
        # Newton cycled inside the bracket for all its iterations (residual 10.6).
        ([6.0], [1.0], 2.0, [-5.958653824700203]),
        # Newton's last step landed on the bracket's end and was replaced by a bisection.
        ([-2.200159634836756], [-3.4501864320766726], 1.3194379811758914, [1.9914483739641555]),
    ],
)
def test_planar_inverse_converges_where_plain_newton_did_not(u, w, b, y):
    flow = Planar(np.array(u), np.array(w), np.float64(b))
    y = tf.constant([y], tf.float64)
    x = flow.inverse(y)
    np.testing.assert_allclose(flow.forward(tf.identity(x)), y, atol=1e-12)


def test_planar_on_its_fold_with_w_dot_u_far_below_zero_is_finite():
    # wᵀû rounds to -1 in float32 here: 1 + (1 - tanh²)·wᵀû used to cancel to 0 on the fold.
    flow = Planar(u=[-20.0, 0.0], w=[1.0, 0.0], b=0.0)
    x = tf.constant([[0.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    assert np.all(np.isfinite(flow.forward_log_det_jacobian(x, event_ndims=1)))
    y = tf.identity(flow.forward(x))
    assert np.all(np.isfinite(flow.inverse(y))) and np.all(
        np.isfinite(flow.inverse_log_det_jacobian(tf.identity(y), event_ndims=1))
    )


@pytest.mark.parametrize("permutation", [[2, 1, 0], [1, 2, 0]], ids=["reversal", "other"])
def test_permute_layer_is_tfps_permute(permutation):
    layer = PermuteLayer(permutation)
    layer.build((None, 3))
    expected = tfb.Permute(permutation)
    # A reversal runs as Reverse (tf.reverse), any other permutation as TFP's Permute.
    assert isinstance(layer.bijector, Reverse if permutation == [2, 1, 0] else tfb.Permute)
    x = tf.constant(np.arange(12.0).reshape(2, 2, 3))
    np.testing.assert_array_equal(layer.bijector.forward(x), expected.forward(x))
    np.testing.assert_array_equal(layer.bijector.inverse(x), expected.inverse(x))
    for direction in ("forward", "inverse"):
        log_det = getattr(layer.bijector, f"{direction}_log_det_jacobian")(x, event_ndims=1)
        np.testing.assert_array_equal(tf.broadcast_to(log_det, [2, 2]), np.zeros((2, 2)))
