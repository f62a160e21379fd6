"""`tfp-flows`: train a flow on a built-in dataset and write plots, metrics and the model."""

import argparse
import csv
import inspect
import json
import math
import os
import sys
import time

import keras
import numpy as np

from tfp_flows import datasets, flows, plotting
from tfp_flows.callbacks import AtomicBackupAndRestore, RestoreOnNaN
from tfp_flows.export import describe, export_saved_model
from tfp_flows.training import cosine_adam, steps_per_call

JIT_COMPILE = {"auto": "auto", "on": True, "off": False}


def _default(family, argument):
    return inspect.signature(flows.FLOWS[family]).parameters[argument].default


def _takes(family, argument):
    return argument in inspect.signature(flows.FLOWS[family]).parameters


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfp-flows", description="Normalizing flows as TFP bijectors, trained with Keras."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a flow on a built-in dataset",
        description="Train a flow by maximum likelihood with Keras' fit. Writes OUT/model.keras, "
        "OUT/metrics.json, OUT/history.csv and OUT/plots/*.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument(
        "--dataset",
        default="moons",
        choices=datasets.NAMES,
        help="built-in dataset (2D toys, or 'digits': sklearn 8x8, dequantised)",
    )
    train.add_argument(
        "--data",
        metavar="FILE",
        default=None,
        help="train on your own data instead: a .npy array or a comma-separated text file "
        "[N, D]; a random 10%% is held out as the test set",
    )
    train.add_argument("--flow", default="realnvp", choices=sorted(flows.FLOWS), help="flow family")
    train.add_argument(
        "--num-layers",
        type=_positive,
        default=None,
        help="flow steps (default: "
        + ", ".join(f"{_default(f, 'num_layers')} for {f}" for f in sorted(flows.FLOWS))
        + ")",
    )
    train.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        default=[64, 64],
        help="widths of the hidden layers of each step's network ("
        + ", ".join(f for f in sorted(flows.FLOWS) if _takes(f, "hidden_units"))
        + ")",
    )
    train.add_argument(
        "--num-bins",
        type=_positive,
        default=None,
        help="spline bins per element (nsf; default: " + str(_default("nsf", "num_bins")) + ")",
    )
    train.add_argument("--epochs", type=_positive, default=100, help="passes over the training set")
    train.add_argument("--batch-size", type=_positive, default=512, help="examples per step")
    train.add_argument(
        "--learning-rate",
        type=float,
        default=2e-3,
        help="Adam's initial learning rate (cosine-decayed to 0 over training)",
    )
    train.add_argument(
        "--clipnorm",
        type=float,
        default=None,
        help="clip each gradient to this norm (off by default)",
    )
    train.add_argument(
        "--num-train",
        type=int,
        default=20000,
        help="training points for 2D datasets (digits has a fixed 1500/297 split)",
    )
    train.add_argument("--num-test", type=int, default=5000, help="test points for 2D datasets")
    train.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help="don't add the fixed last step that standardises the data",
    )
    train.add_argument("--seed", type=int, default=0, help="seed for data, weights and batches")
    train.add_argument(
        "--steps-per-execution",
        type=_positive,
        default=None,
        help="training steps per compiled call (Keras' steps_per_execution); small flows "
        "are bound by per-step overhead, so several steps per call train faster "
        "(default: the largest divisor of an epoch's steps up to 10)",
    )
    train.add_argument(
        "--jit-compile",
        choices=sorted(JIT_COMPILE),
        default="auto",
        help="compile train steps with XLA: Keras' 'auto' turns it on for GPUs only",
    )
    train.add_argument(
        "--patience",
        type=_positive,
        default=None,
        help="stop early when the NLL on a validation split (the last 10%% of the training "
        "set) has not improved for this many epochs, and keep the best weights",
    )
    train.add_argument("--out", default=None, help="output directory (default: runs/DATASET)")
    train.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
    )
    train.add_argument(
        "--export",
        metavar="BASE_PATH",
        default=None,
        help="also export a TF Serving SavedModel to BASE_PATH/NAME/VERSION (e.g. saved_models)",
    )
    train.add_argument("--name", default=None, help="model name for --export (default: dataset)")

    export = commands.add_parser(
        "export",
        help="export a trained run as a TF Serving SavedModel",
        description="Export RUN_DIR/model.keras to BASE_PATH/NAME/VERSION (TF Serving's layout).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    export.add_argument("run_dir", help="a folder written by `tfp-flows train`")
    export.add_argument("--name", required=True, help="model name (a folder under BASE_PATH)")
    export.add_argument("--base-path", default="saved_models", help="TF Serving's model base")
    export.add_argument(
        "--version", type=int, default=None, help="version number (default: the next free one)"
    )

    inspect = commands.add_parser(
        "inspect",
        help="list an export's versions and signatures",
        description="Print the versions under MODEL_DIR and each signature's inputs and outputs.",
    )
    inspect.add_argument("model_dir", help="e.g. saved_models/moons")
    return parser


def train(args):
    if args.data:
        data = datasets.load_file(args.data, seed=args.seed)
    else:
        data = datasets.load(args.dataset, args.num_train, args.num_test, seed=args.seed)
    out = args.out or os.path.join("runs", data.name)
    keras.utils.set_random_seed(args.seed)
    options = {"num_layers": args.num_layers} if args.num_layers else {}
    if _takes(args.flow, "hidden_units"):
        options["hidden_units"] = args.hidden_units
    if args.num_bins is not None:
        options["num_bins"] = args.num_bins
    model = flows.FLOWS[args.flow](
        data.event_size, standardize=data.train if args.standardize else None, **options
    )
    # Early stopping chooses weights on a validation split, never on the test set.
    train_size = len(data.train) - (len(data.train) // 10 if args.patience else 0)
    model.compile(
        cosine_adam(
            args.learning_rate, args.epochs, train_size, args.batch_size, clipnorm=args.clipnorm
        ),
        jit_compile=JIT_COMPILE[args.jit_compile],
        steps_per_execution=args.steps_per_execution
        or steps_per_call(math.ceil(train_size / args.batch_size)),
    )

    os.makedirs(out, exist_ok=True)
    history_path, backup = os.path.join(out, "history.csv"), os.path.join(out, "backup")
    nan_guard = RestoreOnNaN()
    callbacks = [
        nan_guard,
        # A run resumed from its backup appends to the history it already has.
        keras.callbacks.CSVLogger(history_path, append=os.path.isdir(backup)),
        AtomicBackupAndRestore(backup),
    ]
    if args.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=args.patience, restore_best_weights=True)
        )
    started = time.perf_counter()
    model.fit(
        data.train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_split=0.1 if args.patience else 0.0,
        validation_data=None if args.patience else data.test,
        callbacks=callbacks,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - started

    history = _read_history(history_path)
    test_log_prob = model.log_prob(data.test).numpy()
    test_nll = float(-test_log_prob.mean())
    if not np.isfinite(test_nll):
        print(
            "error: training diverged (non-finite test NLL); the model was not saved.",
            file=sys.stderr,
        )
        return 1
    metrics = {
        "dataset": data.name,
        "flow": args.flow,
        "epochs_run": len(history["loss"]),
        "train_seconds_this_run": round(seconds, 2),
        "train_nll": float(-model.log_prob(data.train).numpy().mean()),
        "test_nll": test_nll,
        "test_nll_median": float(-np.median(test_log_prob)),
        "test_bits_per_dim": test_nll / (model.event_size * math.log(2.0)),
        "validation": "last 10% of the training set" if args.patience else "the test set",
        "stopped_on_nan": nan_guard.stopped_at is not None,
        "num_weights": int(model.count_params()),
        "arguments": {**vars(args), "out": out},
        "history": history,
    }
    model.save(os.path.join(out, "model.keras"))
    plots = plotting.plot_all(model, data, history, os.path.join(out, "plots"))
    metrics["plots"] = {name: os.path.relpath(path, out) for name, path in plots.items()}
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    print(
        f"{args.flow} on {data.name}: test NLL {test_nll:.4f} nats "
        f"({metrics['test_bits_per_dim']:.4f} bits/dim), {seconds:.1f} s of training; "
        f"wrote {out}/model.keras, metrics.json, history.csv, plots/"
    )
    if args.export:
        path = export_saved_model(model, args.export, args.name or data.name)
        print(f"exported the SavedModel to {path}")
    return 0


def _read_history(path):
    """The CSVLogger's file as Keras' History.history: {metric: [per-epoch values]}."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in rows[0] if key != "epoch"}


def load_run(run_dir):
    """The model of a `tfp-flows train` run; errors name the path."""
    path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no trained model at {path} (run `tfp-flows train` first).")
    try:
        return keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ValueError(f"cannot load the model at {path}: {error}") from error


def export(args):
    path = export_saved_model(load_run(args.run_dir), args.base_path, args.name, args.version)
    print(f"exported {args.run_dir}/model.keras to {path}")
    return 0


def inspect_export(args):
    for version, signatures in describe(args.model_dir).items():
        print(f"version {version}: {os.path.join(args.model_dir, str(version))}")
        for name, io in signatures.items():
            print(f"  {name}")
            for kind in ("inputs", "outputs"):
                for key, (dtype, shape) in io[kind].items():
                    dims = "scalar" if shape == [] else str(shape).replace("None", "-1")
                    print(f"    {kind[:-1]:6s} {key}: {dtype} {dims}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.num_bins is not None and not _takes(args.flow, "num_bins"):
        parser.error(f"--num-bins applies to spline flows (nsf), not to {args.flow}")
    command = {"train": train, "export": export, "inspect": inspect_export}[args.command]
    try:
        return command(args)
    except (OSError, ValueError) as error:
        print(f"tfp-flows {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
