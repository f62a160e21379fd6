"""Distribution mapping: a flow maps data to a Gaussian and back, with exact densities.

    python examples/distribution_mapping.py [--quick] [--out runs/examples/distribution_mapping]

Part 1 trains RealNVP on two moons and draws the article's figure: the data,
its image in the latent space (which should look like a standard normal),
samples mapped back, and the learned density.

Part 2 checks exactness on a distribution whose density is known in closed
form, a mixture of three anisotropic Gaussians: it prints log p of test
points from the flow next to the true log p, and the test set's total
log-likelihood both ways with their difference.

Figures: `moons_mapping.png` (data, latents, samples), `moons_density.png`
(the learned log density), `mixture_density.png` (exact and learned
densities on one colour scale) and `mixture_log_p.png` (flow vs exact log p
for every test point, and their difference).
"""

import os

# TensorFlow's C++ start-up logs off unless you set TF_CPP_MIN_LOG_LEVEL yourself; tfp_flows
# is imported first so that it imports TensorFlow (quietly) before anything else does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfp_flows  # noqa: E402, F401, I001

import argparse

import keras
import numpy as np
import tensorflow_probability as tfp

from tfp_flows import datasets, flows, plotting
from tfp_flows.reports import report
from tfp_flows.training import cosine_adam

tfd = tfp.distributions


def gaussian_mixture():
    """Three anisotropic Gaussians: a non-Gaussian density known in closed form."""
    return tfd.MixtureSameFamily(
        tfd.Categorical(probs=[0.5, 0.3, 0.2]),
        tfd.MultivariateNormalTriL(
            loc=[[-1.5, 0.0], [1.5, 1.0], [0.5, -1.5]],
            scale_tril=[
                [[0.6, 0.0], [0.3, 0.3]],
                [[0.4, 0.0], [-0.2, 0.5]],
                [[0.3, 0.0], [0.0, 0.8]],
            ],
        ),
    )


def train(data, epochs, seed, verbose, batch_size=256, learning_rate=2e-3):
    keras.utils.set_random_seed(seed)
    model = flows.realnvp(2, num_layers=8, hidden_units=(64, 64), standardize=data.train)
    model.compile(
        cosine_adam(learning_rate, epochs, len(data.train), batch_size), steps_per_execution=10
    )
    history = model.fit(data.train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    return model, history.history


def plot_per_point(flow_log_p, exact_log_p, path):
    """Flow log p against exact log p per test point (with y = x), and their difference."""
    difference = flow_log_p - exact_log_p
    fig, (scatter_ax, difference_ax) = plotting.new_figure(1, 2, (11.0, 4.8))
    low, high = min(flow_log_p.min(), exact_log_p.min()), max(flow_log_p.max(), exact_log_p.max())
    low, high = low - 0.03 * (high - low), high + 0.03 * (high - low)
    scatter_ax.scatter(exact_log_p, flow_log_p, s=3, alpha=0.4, linewidths=0, rasterized=True)
    scatter_ax.plot([low, high], [low, high], "k--", linewidth=1, label="y = x (exact)")
    scatter_ax.set_xlim(low, high)
    scatter_ax.set_ylim(low, high)
    scatter_ax.set_aspect("equal", adjustable="box")
    scatter_ax.set_xlabel("exact log p(x) (nats)")
    scatter_ax.set_ylabel("flow log p(x) (nats)")
    scatter_ax.set_title(f"every test point (n={len(exact_log_p)})")
    scatter_ax.legend(loc="upper left")
    difference_ax.scatter(exact_log_p, difference, s=3, alpha=0.4, linewidths=0, rasterized=True)
    difference_ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    difference_ax.set_xlim(*scatter_ax.get_xlim())
    difference_ax.set_xlabel("exact log p(x) (nats)")
    difference_ax.set_ylabel("flow − exact log p(x) (nats)")
    difference_ax.set_title(
        f"difference: mean {difference.mean():+.4f}, mean |·| {np.abs(difference).mean():.4f} nats"
    )
    fig.suptitle("Gaussian mixture: the flow's log-density against the closed form")
    return plotting.save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (about 30 s)")
    parser.add_argument("--out", default="runs/examples/distribution_mapping")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = 50 if args.quick else 100
    num_train = 10000 if args.quick else 20000
    verbose = 0 if args.quick else "auto"

    # Part 1: two moons, data ↔ latent.
    moons = datasets.load("moons", num_train=num_train, num_test=5000, seed=args.seed)
    model, history = train(moons, epochs, args.seed, verbose)
    plotting.plot_latent_mapping(
        model, moons.test, os.path.join(args.out, "moons_mapping.png"), data_label="test data"
    )
    plotting.plot_density(
        model,
        moons.test,
        os.path.join(args.out, "moons_density.png"),
        name="two moons",
        data_label="test",
    )
    latent = model.inverse(moons.test).numpy()

    # Part 2: a density known in closed form.
    mixture = gaussian_mixture()
    points = mixture.sample(num_train + 5000, seed=args.seed).numpy().astype(np.float32)
    known = datasets.Dataset("mixture", points[:num_train], points[num_train:])
    flow, _ = train(known, epochs, args.seed, verbose)
    flow_log_p = flow.log_prob(known.test).numpy().astype(np.float64)
    exact_log_p = mixture.log_prob(known.test).numpy().astype(np.float64)
    plotting.plot_log_densities(
        [[("exact mixture density", mixture.log_prob), ("flow density", flow.log_prob)]],
        os.path.join(args.out, "mixture_density.png"),
        bounds=((-4, 4), (-4, 4)),
    )
    plot_per_point(flow_log_p, exact_log_p, os.path.join(args.out, "mixture_log_p.png"))

    print("\nlog p of the first test points (nats):")
    print(f"  {'x':>20}  {'flow':>9}  {'exact':>9}  {'difference':>10}")
    for x, f, e in zip(known.test[:6], flow_log_p, exact_log_p):
        print(f"  {np.array2string(x, precision=3):>20}  {f:9.4f}  {e:9.4f}  {f - e:10.4f}")

    report(
        "distribution mapping",
        {
            "moons_test_nll": float(-model.log_prob(moons.test).numpy().mean()),
            "moons_latent_mean_norm": float(np.linalg.norm(latent.mean(0))),
            "moons_latent_std": [float(s) for s in latent.std(0)],
            "mixture_test_points": len(known.test),
            "mixture_total_log_likelihood_flow": float(flow_log_p.sum()),
            "mixture_total_log_likelihood_exact": float(exact_log_p.sum()),
            "mixture_total_difference": float(flow_log_p.sum() - exact_log_p.sum()),
            "mixture_mean_difference_per_point": float(np.mean(flow_log_p - exact_log_p)),
            "mixture_mean_abs_difference_per_point": float(
                np.mean(np.abs(flow_log_p - exact_log_p))
            ),
            "final_train_loss_moons": float(history["loss"][-1]),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
