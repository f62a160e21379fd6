"""Unnormalised 2D target densities for variational inference.

The four energy functions U1–U4 of Rezende & Mohamed (2015), Table 1, as
log-densities log p̃(z) = −U(z) on z = (z1, z2). U2–U4 follow a curve in z2 but
place no bound on z1, so as printed they cannot be normalised (the paper
plots them on [−4, 4]²); here they get the envelope (z1/4)⁸/2, which is
below 0.5 on that square and confines the mass to |z1| ≲ 5. U1 (a ring split
in two) is normalisable as printed and is left unchanged.

`log_normalizer_on_grid` gives log Z by quadrature, the reference for the
ELBO that `tfp_flows.variational.ReverseKL` reaches.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

import math

import numpy as np
import tensorflow as tf


def _w1(z1):
    return tf.sin(2.0 * math.pi * z1 / 4.0)


def _w2(z1):
    return 3.0 * tf.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)


def _w3(z1):
    return 3.0 * tf.sigmoid((z1 - 1.0) / 0.3)


def _envelope(z1):
    return 0.5 * (z1 / 4.0) ** 8


def u1(z):
    z1 = z[..., 0]
    ring = 0.5 * ((tf.norm(z, axis=-1) - 2.0) / 0.4) ** 2
    modes = tf.reduce_logsumexp(
        tf.stack([-0.5 * ((z1 - 2.0) / 0.6) ** 2, -0.5 * ((z1 + 2.0) / 0.6) ** 2]), axis=0
    )
    return -ring + modes


def u2(z):
    z1, z2 = z[..., 0], z[..., 1]
    return -0.5 * ((z2 - _w1(z1)) / 0.4) ** 2 - _envelope(z1)


def u3(z):
    z1, z2 = z[..., 0], z[..., 1]
    branches = tf.stack(
        [-0.5 * ((z2 - _w1(z1)) / 0.35) ** 2, -0.5 * ((z2 - _w1(z1) + _w2(z1)) / 0.35) ** 2]
    )
    return tf.reduce_logsumexp(branches, axis=0) - _envelope(z1)


def u4(z):
    z1, z2 = z[..., 0], z[..., 1]
    branches = tf.stack(
        [-0.5 * ((z2 - _w1(z1)) / 0.4) ** 2, -0.5 * ((z2 - _w1(z1) + _w3(z1)) / 0.35) ** 2]
    )
    return tf.reduce_logsumexp(branches, axis=0) - _envelope(z1)


# log p̃ = −U for each energy function.
ENERGIES = {"u1": u1, "u2": u2, "u3": u3, "u4": u4}


def log_normalizer_on_grid(log_prob_fn, bound=8.0, points_per_axis=801):
    """log ∫ exp(log_prob_fn(z)) dz over [−bound, bound]², by the midpoint rule."""
    edges = np.linspace(-bound, bound, points_per_axis + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    grid = np.stack(np.meshgrid(centres, centres, indexing="ij"), axis=-1).reshape(-1, 2)
    log_p = log_prob_fn(tf.constant(grid, tf.float64)).numpy()
    cell = (edges[1] - edges[0]) ** 2
    return float(np.logaddexp.reduce(log_p) + np.log(cell))
