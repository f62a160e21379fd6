"""Anomaly detection by likelihood: a Glow trained on digits without one class scores the rest.

    python examples/anomaly_detection.py [--quick] [--excluded-class 0] [--epochs 60] [--out DIR]

A multi-scale Glow (`flows.glow`) learns p(x) from sklearn's 8×8 training
digits of every class but one. An image's anomaly score is its bits/dim,
−log₂ p(x) / 64: high where the flow finds the image unlikely. The script
scores the held-out test digits of the training classes (the normal set)
against, in turn,

- every image of the excluded class (never seen in training);
- the normal test images with Gaussian pixel noise (σ = 2 counts);
- the normal test images flipped upside down, and mirrored left to right,

and prints the AUROC of each case (1: every anomaly scores above every
normal image; 0.5: chance). It writes `typical.png` (the most and least
typical images of the normal set and the excluded class together, by
log p) and `scores.png` (the score histograms per case).

Likelihood is not a complete anomaly detector: a flow's log p is dominated
by local pixel statistics, so images that share them with the training
data (a mirrored 3, a 1 turned upside down) can score as typical. The
printed AUROCs show where it works and where it does not.
"""

import os

# TensorFlow's C++ start-up logs off unless you set TF_CPP_MIN_LOG_LEVEL yourself; tfp_flows
# is imported first so that it imports TensorFlow (quietly) before anything else does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfp_flows  # noqa: E402, F401, I001

import argparse

import keras
import numpy as np

from tfp_flows import datasets, flows, plotting
from tfp_flows.evaluation import auroc
from tfp_flows.reports import report
from tfp_flows.training import fit_dequantized

NOISE_STD = 2.0  # in pixel counts (digits' counts run 0..16)
NUM_SHOWN = 16


def corrupted_cases(counts, rng, max_count):
    """{case: integer images}: the normal test images with noise, flipped, mirrored."""
    noisy = np.rint(counts + NOISE_STD * rng.standard_normal(counts.shape))
    return {
        "gaussian_noise": np.clip(noisy, 0, max_count).astype(counts.dtype),
        "flipped_upside_down": counts[:, ::-1],
        "mirrored": counts[:, :, ::-1],
    }


def plot_score_histograms(normal, cases, aurocs, path, bins=30):
    """Per case, the normal and anomalous scores on common bins, titled with the AUROC.

    Each panel's bins span both sets (up to their 99.5th percentile, so a few
    extreme scores do not squeeze the rest; the count beyond is given).
    """
    fig, axes = plotting.new_figure(1, len(cases), (4.0 * len(cases), 3.6))
    for ax, (case, scores) in zip(axes, cases.items()):
        both = np.concatenate([normal, scores])
        edges = np.linspace(both.min(), np.percentile(both, 99.5), bins + 1)
        beyond = int((both > edges[-1]).sum())
        ax.hist(normal, edges, alpha=0.6, density=True, label=f"normal test (n={len(normal)})")
        ax.hist(scores, edges, alpha=0.6, density=True, label=f"anomalous (n={len(scores)})")
        name = case.replace("excluded_class", "unseen class").replace("_", " ")
        ax.set_title(f"{name}: AUROC {aurocs[case]:.3f}")
        ax.set_xlabel("bits/dim (anomaly score)")
        if beyond:
            ax.set_xlabel(f"bits/dim (anomaly score); {beyond} scores beyond the axis")
        ax.set_ylabel("density (per bits/dim)")
        ax.legend(fontsize="small")
    return plotting.save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (about 1 min)")
    parser.add_argument("--excluded-class", type=int, default=0, choices=range(10))
    parser.add_argument("--epochs", type=int, help="passes over the training set (default 60)")
    parser.add_argument("--out", default="runs/examples/anomaly_detection")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (10 if args.quick else 60)
    data = datasets.load("digits", seed=args.seed)
    rng = np.random.default_rng(args.seed)
    max_count = int(data.value_range) - 1

    normal_train = data.train_labels != args.excluded_class
    normal_test = data.test_labels != args.excluded_class
    keras.utils.set_random_seed(args.seed)
    model = flows.glow(
        data.image_shape,
        levels=2,
        steps_per_level=2 if args.quick else 4,
        hidden_channels=32,
        value_range=data.value_range,
    )
    fit_dequantized(
        model,
        data.images(data.train_counts[normal_train]),
        epochs=epochs,
        seed=args.seed,
        verbose=0 if args.quick else "auto",
    )

    def scores(counts):
        """Bits/dim of integer images, dequantised with one draw of uniform noise."""
        return model.bits_per_dim(counts + rng.uniform(size=counts.shape)).numpy()

    normal_counts = data.images(data.test_counts[normal_test])
    excluded = data.images(
        np.concatenate([data.train_counts, data.test_counts])[
            np.concatenate([data.train_labels, data.test_labels]) == args.excluded_class
        ]
    )
    cases = {f"excluded_class_{args.excluded_class}": excluded}
    cases.update(corrupted_cases(normal_counts, rng, max_count))
    normal_scores = scores(normal_counts)
    case_scores = {case: scores(images) for case, images in cases.items()}

    results = {
        "normal_test_images": len(normal_counts),
        "normal_test_bits_per_dim": float(normal_scores.mean()),
    }
    for case, anomalous in case_scores.items():
        labels = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomalous))]
        results[f"{case}_auroc"] = auroc(np.r_[normal_scores, anomalous], labels)
        results[f"{case}_bits_per_dim"] = float(anomalous.mean())
    results["epochs"] = epochs

    pooled = np.concatenate([normal_counts, excluded]).reshape(-1, 64)
    pooled_scores = np.r_[normal_scores, case_scores[f"excluded_class_{args.excluded_class}"]]
    order = np.argsort(pooled_scores)
    plotting.plot_image_grid(
        {
            "most typical (lowest bits/dim)": pooled[order[:NUM_SHOWN]],
            "least typical (highest bits/dim)": pooled[order[::-1][:NUM_SHOWN]],
        },
        os.path.join(args.out, "typical.png"),
        data.image_shape[:2],
        (0.0, data.value_range),
        columns=8,
    )
    plot_score_histograms(
        normal_scores,
        case_scores,
        {case: results[f"{case}_auroc"] for case in case_scores},
        os.path.join(args.out, "scores.png"),
    )
    report(
        f"anomaly detection on digits, class {args.excluded_class} held out of training",
        results,
        args.out,
    )


if __name__ == "__main__":
    main()
