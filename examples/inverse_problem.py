"""An ill-posed linear inverse problem: a conditional flow learns p(x | y), checked analytically.

    python examples/inverse_problem.py [--quick] [--out runs/examples/inverse_problem]

The signal x ∈ R⁸ has a smooth Gaussian prior N(0, Σ) (squared-exponential
covariance, length scale 2, plus a 0.05 nugget). The measurement blurs it
and keeps every other value: y = A x (+ noise), A ∈ R^{4×8}, so A has a
4-dimensional null space that the data say nothing about; only the prior
fills it in. The posterior is Gaussian with a known mean and covariance, so
the flow's answer can be checked exactly.

* Noise ignored (y = A x exactly). The data fix the row-space part of x;
  the posterior lives on the 4-dimensional affine set {A⁺y + N w}, with N an
  orthonormal basis of A's null space. A conditional flow learns p(w | y)
  and posterior samples are A⁺y + N w. Analytic: mean Σ Aᵀ(AΣAᵀ)⁻¹y,
  covariance Σ − Σ Aᵀ(AΣAᵀ)⁻¹AΣ (of rank 4).
* With noise y = A x + ε, ε ~ N(0, σ² I), σ = 0.1. The flow learns the full
  8-dimensional p(x | y). Analytic: covariance (Σ⁻¹ + AᵀA/σ²)⁻¹ and mean
  that covariance times Aᵀy/σ².

For several test measurements the script compares the flow's posterior
mean and covariance (from samples) with the analytic ones, and the flow's
log q(x | y) of the true signals with the exact posterior log-density.
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

from tfp_flows import flows, plotting
from tfp_flows.reports import report
from tfp_flows.training import cosine_adam

tfd = tfp.distributions

SIZE, MEASUREMENTS, NOISE = 8, 4, 0.1


def prior_covariance():
    positions = np.arange(SIZE)
    squared_distance = (positions[:, None] - positions[None, :]) ** 2
    return np.exp(-squared_distance / (2 * 2.0**2)) + 0.05 * np.eye(SIZE)


def forward_operator():
    """Blur with the kernel (¼, ½, ¼) (edges renormalised), then keep every other value."""
    blur = np.zeros((SIZE, SIZE))
    for i in range(SIZE):
        for j, weight in ((i - 1, 0.25), (i, 0.5), (i + 1, 0.25)):
            if 0 <= j < SIZE:
                blur[i, j] = weight
    blur /= blur.sum(axis=1, keepdims=True)
    return blur[::2]


class Problem:
    """The prior, the operator, and the analytic posterior for either noise setting."""

    def __init__(self, noisy):
        self.noisy = noisy
        self.prior = prior_covariance()
        self.operator = forward_operator()
        # An orthonormal basis of the null space, and the pseudo-inverse.
        _, _, vt = np.linalg.svd(self.operator)
        self.null_basis = vt[MEASUREMENTS:].T
        self.pseudo_inverse = np.linalg.pinv(self.operator)

    def simulate(self, n, rng):
        x = rng.multivariate_normal(np.zeros(SIZE), self.prior, n)
        y = x @ self.operator.T
        if self.noisy:
            y = y + NOISE * rng.standard_normal(y.shape)
        return x.astype(np.float32), y.astype(np.float32)

    def posterior(self, y):
        """Analytic posterior mean [B, 8] and covariance [8, 8] (the same for every y)."""
        a, prior = self.operator, self.prior
        if self.noisy:
            covariance = np.linalg.inv(np.linalg.inv(prior) + a.T @ a / NOISE**2)
            return y @ (covariance @ a.T / NOISE**2).T, covariance
        gain = prior @ a.T @ np.linalg.inv(a @ prior @ a.T)
        return y @ gain.T, prior - gain @ a @ prior

    def flow_coordinates(self, x):
        """What the flow models: x itself with noise, the null-space part w = Nᵀx without."""
        return x if self.noisy else x @ self.null_basis

    def to_signal(self, coordinates, y):
        if self.noisy:
            return coordinates
        return y @ self.pseudo_inverse.T + coordinates @ self.null_basis.T


def fit_posterior(problem, x, y, epochs, seed, verbose, batch_size=512, learning_rate=2e-3):
    keras.utils.set_random_seed(seed)
    targets = problem.flow_coordinates(x).astype(np.float32)
    model = flows.realnvp(
        targets.shape[1],
        num_layers=6,
        hidden_units=(64, 64),
        standardize=targets,
        context_size=MEASUREMENTS,
    )
    model.compile(cosine_adam(learning_rate, epochs, len(x), batch_size), steps_per_execution=10)
    model.fit(targets, y, batch_size=batch_size, epochs=epochs, verbose=verbose)
    return model


def evaluate(problem, model, x_test, y_test, num_samples, seed):
    """Posterior moments of the flow vs the analytic ones, and log q vs log p of the true x."""
    mean, covariance = problem.posterior(y_test.astype(np.float64))
    mean_errors, covariance_errors, flow_moments = [], [], []
    for i, y in enumerate(y_test):
        coordinates = model.sample(num_samples, seed=[seed, i], context=y).numpy()
        samples = problem.to_signal(coordinates.astype(np.float64), y.astype(np.float64))
        sample_mean, sample_covariance = samples.mean(0), np.cov(samples.T)
        flow_moments.append((samples, sample_mean, sample_covariance))
        # In units of the prior's standard deviation, and relative to the covariance's size.
        mean_errors.append(np.max(np.abs(sample_mean - mean[i]) / np.sqrt(np.diag(problem.prior))))
        covariance_errors.append(
            np.linalg.norm(sample_covariance - covariance) / np.linalg.norm(covariance)
        )
    return mean, covariance, mean_errors, covariance_errors, flow_moments


def log_density_gap(problem, model, x, y):
    """mean over (x, y) of log q(coordinates | y) − the exact posterior log-density of them."""
    coordinates = problem.flow_coordinates(x.astype(np.float64))
    mean, covariance = problem.posterior(y.astype(np.float64))
    if not problem.noisy:  # the exact density of w = Nᵀx on the null space
        mean, covariance = (
            mean @ problem.null_basis,
            problem.null_basis.T @ covariance @ problem.null_basis,
        )
    exact = tfd.MultivariateNormalTriL(mean, np.linalg.cholesky(covariance)).log_prob(coordinates)
    flow = model.log_prob(coordinates.astype(np.float32), context=y)
    return float(np.mean(flow.numpy().astype(np.float64) - exact.numpy()))


def plot_posteriors(results, path):
    fig, axes = plotting.new_figure(1, len(results), (6.5 * len(results), 4.4))
    positions = np.arange(SIZE)
    for ax, (title, x, y, mean, covariance, samples, flow_mean, flow_cov) in zip(axes, results):
        for k, sample in enumerate(samples[:20]):
            label = "20 flow posterior samples" if k == 0 else None
            ax.plot(positions, sample, color="tab:orange", alpha=0.2, linewidth=0.8, label=label)
        std = np.sqrt(np.clip(np.diag(covariance), 0, None))
        ax.fill_between(
            positions,
            mean - 2 * std,
            mean + 2 * std,
            color="tab:blue",
            alpha=0.15,
            label="analytic mean ± 2 sd",
        )
        ax.plot(positions, mean, color="tab:blue", linewidth=2)
        flow_std = np.sqrt(np.diag(flow_cov))
        ax.errorbar(
            positions,
            flow_mean,
            2 * flow_std,
            fmt="o",
            color="tab:orange",
            capsize=3,
            label="flow mean ± 2 sd (from samples)",
        )
        ax.plot(positions, x, "k--", label="true signal")
        ax.plot(positions[::2], y, "s", color="tab:green", label="measurement y (at its centre)")
        ax.set_title(title)
        ax.set_xlabel("position i of the signal")
        ax.set_ylabel("signal value x_i")
        ax.set_xticks(positions)
        ax.legend(fontsize=8, loc="best")
    return plotting.save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (about 40 s)")
    parser.add_argument("--out", default="runs/examples/inverse_problem")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    num_train, epochs = (20000, 30) if args.quick else (50000, 60)
    verbose = 0 if args.quick else "auto"
    rng = np.random.default_rng(args.seed)

    results, figures = {}, []
    for noisy, name in ((False, "noise_free"), (True, "noisy")):
        problem = Problem(noisy)
        x, y = problem.simulate(num_train, rng)
        x_test, y_test = problem.simulate(2000, rng)
        model = fit_posterior(problem, x, y, epochs, args.seed, verbose)
        mean, covariance, mean_errors, covariance_errors, moments = evaluate(
            problem, model, x_test[:5], y_test[:5], 5000, args.seed
        )
        results[f"{name}_posterior_mean_max_error_in_prior_sd"] = float(np.max(mean_errors))
        results[f"{name}_posterior_covariance_relative_error"] = float(np.max(covariance_errors))
        results[f"{name}_log_q_minus_log_p_per_signal"] = log_density_gap(
            problem, model, x_test, y_test
        )
        samples, flow_mean, flow_cov = moments[0]
        title = "noise ignored: y = A x" if not noisy else f"with noise: y = A x + N(0, {NOISE}²)"
        figures.append(
            (
                title,
                x_test[0],
                y_test[0],
                mean[0],
                covariance,
                samples,
                flow_mean,
                flow_cov,
            )
        )
    plot_posteriors(figures, os.path.join(args.out, "posteriors.png"))
    results["null_space_dimension"] = SIZE - MEASUREMENTS
    report(
        "ill-posed inverse problem: flow posterior vs analytic (5 test measurements)",
        results,
        args.out,
    )


if __name__ == "__main__":
    main()
