"""A continuous normalizing flow trained by flow matching, its trajectories, next to NSF.

    python examples/continuous_flow.py [--quick] [--dataset moons] [--out runs/examples/NAME]

A CNF maps base points to data by integrating an ODE dx/dt = v(x, t) from
t = 0 to t = 1, v a time-embedded MLP (tfp_flows.flows.cnf). Flow matching
(Lipman et al. 2023) trains v without solving the ODE: it regresses v on the
velocity x − z of straight paths (1 − t)·z + t·x from base points z to data
points x, a plain mean-squared error. The density is still exact: log_prob
solves the ODE back from the data with the adaptive Dormand–Prince solver,
integrating the exact trace of ∂v/∂x alongside; the script checks that
log-det against the autodiff Jacobian of the solved map. It draws the learned
trajectories from base to data over time, the density, and compares the test
NLL with a neural spline flow (NSF) trained on the same data, and with the
data's true entropy.
"""

import os

# TensorFlow's C++ start-up logs off unless you set TF_CPP_MIN_LOG_LEVEL yourself; tfp_flows
# is imported first so that it imports TensorFlow (quietly) before anything else does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfp_flows  # noqa: E402, F401, I001

import argparse
import time

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps

from tfp_flows import datasets, flows, plotting
from tfp_flows.reports import report
from tfp_flows.training import cosine_adam

SNAPSHOTS = (0.0, 1 / 3, 2 / 3, 1.0)


def train(model, data, epochs, batch_size, learning_rate, verbose):
    model.compile(cosine_adam(learning_rate, epochs, len(data.train), batch_size))
    started = time.perf_counter()
    history = model.fit(data.train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    return history.history, time.perf_counter() - started


def trajectories(model, z, num_steps=40):
    """The states of base points z from t = 0 to 1, in data units: [num_steps + 1, N, 2].

    Fixed RK4 steps of the model's field (its one continuous step), each state
    mapped through the fixed steps after it (the standardising step).
    """
    (field,) = [layer.network for layer in model.continuous_layers]
    after = model.flow_layers[1:]
    h = 1.0 / num_steps
    x = tf.constant(z)
    states = [x]
    for i in range(num_steps):
        t = i * h
        k1 = field(x, t=t)
        k2 = field(x + h / 2 * k1, t=t + h / 2)
        k3 = field(x + h / 2 * k2, t=t + h / 2)
        k4 = field(x + h * k3, t=t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        states.append(x)
    for step in after:
        states = [step.bijector.forward(s) for s in states]
    return np.stack([s.numpy() for s in states])


def log_det_error(model, z):
    """max |solver's log-det − log|det J|| of the model's forward map, J by autodiff."""
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        x = model.bijector.forward(z)
    _, autodiff = tf.linalg.slogdet(tape.batch_jacobian(x, z))
    solver = model.bijector.forward_log_det_jacobian(tf.identity(z), event_ndims=1)
    return float(tf.reduce_max(tf.abs(solver - autodiff)))


def log_density_grid(model, limits, size):
    edges = [np.linspace(low, high, size) for low, high in limits]
    grid = np.stack(np.meshgrid(*edges), -1).reshape(-1, 2).astype("float32")
    return model.log_prob(grid).numpy().reshape(size, size)


def figure(data, paths, densities, limits, snapshots):
    """Snapshots of the flow over time, the trajectories, and both learned densities."""
    fig, axes = plotting.new_figure(2, len(snapshots), (3.0 * len(snapshots), 6.2))
    axes = np.array(axes).reshape(2, len(snapshots))
    # Each point keeps the colour of its base point's angle all the way to the data.
    colours = colormaps["hsv"]((np.arctan2(paths[0, :, 1], paths[0, :, 0]) + np.pi) / (2 * np.pi))
    steps = paths.shape[0] - 1
    for ax, t in zip(axes[0], snapshots):
        points = paths[round(t * steps)]
        ax.scatter(points[:, 0], points[:, 1], c=colours, s=2, linewidths=0)
        ax.set_title(f"t = {t:.2g}" + (" (base)" if t == 0 else " (data)" if t == 1 else ""))
    ax = axes[1, 0]
    for i in range(min(300, paths.shape[1])):
        ax.plot(paths[:, i, 0], paths[:, i, 1], lw=0.4, alpha=0.5, color=colours[i])
    ax.scatter(paths[-1, :300, 0], paths[-1, :300, 1], s=2, c="k", linewidths=0)
    ax.set_title("trajectories base → data")
    for ax, (name, (log_density, nll)) in zip(axes[1, 1:], densities.items()):
        peak = np.max(log_density)
        ax.imshow(
            np.clip(log_density, peak - 8.0, peak),
            origin="lower",
            extent=(*limits[0], *limits[1]),
            cmap="viridis",
            aspect="auto",
        )
        ax.set_title(f"{name}: log p, test NLL {nll:.3f}")
    for ax in axes[1, len(densities) + 1 :]:
        ax.scatter(data.test[:3000, 0], data.test[:3000, 1], s=1, c="k", linewidths=0)
        ax.set_title("test data")
    for ax in axes.flat:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (about 30 s)")
    parser.add_argument("--dataset", default="moons", choices=sorted(datasets.TOY_2D))
    parser.add_argument(
        "--epochs",
        type=int,
        help="CNF training epochs (default 150; 20 with --quick); NSF gets a quarter",
    )
    parser.add_argument("--out", default="runs/examples/continuous_flow")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (20 if args.quick else 150)
    nsf_epochs = max(1, epochs // 4)  # an NSF epoch costs more than a flow-matching one
    num_train, num_test = (4000, 1000) if args.quick else (20000, 5000)
    verbose = 0 if args.quick else 2
    data = datasets.load(args.dataset, num_train=num_train, num_test=num_test, seed=args.seed)

    keras.utils.set_random_seed(args.seed)
    cnf = flows.cnf(2, hidden_units=(64, 64), standardize=data.train)
    _, cnf_seconds = train(cnf, data, epochs, 256, 5e-3, verbose)
    keras.utils.set_random_seed(args.seed)
    nsf = flows.nsf(2, num_layers=4, hidden_units=(64, 64), standardize=data.train)
    _, nsf_seconds = train(nsf, data, nsf_epochs, 256, 5e-3, verbose)

    cnf_nll = float(-np.mean(cnf.log_prob(data.test)))
    nsf_nll = float(-np.mean(nsf.log_prob(data.test)))
    z = np.random.default_rng(args.seed).standard_normal((500 if args.quick else 2000, 2))
    paths = trajectories(cnf, z.astype("float32"))
    solved = cnf.forward(z.astype("float32")).numpy()
    lengths = np.linalg.norm(np.diff(paths, axis=0), axis=-1).sum(0)
    # 1 for straight paths at constant direction (what flow matching regresses on)
    straightness = np.linalg.norm(paths[-1] - paths[0], axis=-1).sum() / lengths.sum()
    low, high = np.percentile(data.test, [0.5, 99.5], axis=0)
    pad = 0.1 * (high - low)
    limits = list(zip(low - pad, high + pad))
    size = 60 if args.quick else 150
    densities = {
        "CNF (flow matching)": (log_density_grid(cnf, limits, size), cnf_nll),
        "NSF": (log_density_grid(nsf, limits, size), nsf_nll),
    }
    os.makedirs(args.out, exist_ok=True)
    plotting.save_figure(
        figure(data, paths, densities, limits, SNAPSHOTS),
        os.path.join(args.out, "trajectories.png"),
    )
    report(
        f"a continuous flow trained by flow matching on {args.dataset}",
        {
            "true_entropy": datasets.TRUE_ENTROPY.get(args.dataset),
            "cnf_test_nll": cnf_nll,
            "nsf_test_nll": nsf_nll,
            "cnf_train_seconds": cnf_seconds,
            "nsf_train_seconds": nsf_seconds,
            "cnf_epochs": epochs,
            "nsf_epochs": nsf_epochs,
            "cnf_log_det_max_error_vs_autodiff": log_det_error(cnf, z[:200].astype("float32")),
            "rk4_trajectory_end_vs_dopri5_max_difference": float(np.abs(paths[-1] - solved).max()),
            "trajectory_straightness": float(straightness),
            "cnf_weights": cnf.count_params(),
            "nsf_weights": nsf.count_params(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
