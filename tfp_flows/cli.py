"""`tfp-flows`: train a flow on a built-in dataset and write plots, metrics and the model."""

import argparse
import json
import os
import sys
import time

FLOW_NAMES = ("realnvp", "planar", "radial")
DEFAULT_LAYERS = {"realnvp": 8, "planar": 16, "radial": 16}


def build_parser():
    from tfp_flows.datasets import NAMES as DATASET_NAMES

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
        choices=DATASET_NAMES,
        help="built-in dataset (2D toys, or 'digits': sklearn 8x8, dequantised)",
    )
    train.add_argument("--flow", default="realnvp", choices=FLOW_NAMES, help="flow family")
    train.add_argument(
        "--num-layers",
        type=int,
        default=None,
        help="flow steps (default: 8 couplings for realnvp, 16 for planar/radial)",
    )
    train.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        default=[64, 64],
        help="widths of each coupling network's hidden layers (realnvp)",
    )
    train.add_argument("--epochs", type=int, default=100, help="passes over the training set")
    train.add_argument("--batch-size", type=int, default=512, help="examples per step")
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
        type=int,
        default=10,
        help="training steps per compiled call (Keras' steps_per_execution); small flows "
        "are bound by per-step overhead, so several steps per call train faster",
    )
    train.add_argument("--jit-compile", action="store_true", help="compile train steps with XLA")
    train.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop early when the test NLL has not improved for this many epochs",
    )
    train.add_argument("--out", default="runs/moons", help="output directory")
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
    import keras
    import numpy as np

    from tfp_flows import datasets, flows, plotting

    keras.utils.set_random_seed(args.seed)
    data = datasets.load(args.dataset, args.num_train, args.num_test, seed=args.seed)
    model = flows.FLOWS[args.flow](
        data.event_size,
        num_layers=args.num_layers or DEFAULT_LAYERS[args.flow],
        standardize=data.train if args.standardize else None,
        **({"hidden_units": args.hidden_units} if args.flow == "realnvp" else {}),
    )
    steps = args.epochs * int(np.ceil(len(data.train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
    model.compile(
        keras.optimizers.Adam(schedule, clipnorm=args.clipnorm),
        jit_compile=args.jit_compile,
        steps_per_execution=args.steps_per_execution,
    )

    os.makedirs(args.out, exist_ok=True)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(os.path.join(args.out, "history.csv")),
        keras.callbacks.BackupAndRestore(os.path.join(args.out, "backup")),
    ]
    if args.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=args.patience, restore_best_weights=True)
        )
    started = time.perf_counter()
    history = model.fit(
        data.train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=data.test,
        callbacks=callbacks,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - started

    test_log_prob = model.log_prob(data.test).numpy()
    metrics = {
        "dataset": args.dataset,
        "flow": args.flow,
        "epochs_run": len(history.history["loss"]),
        "train_seconds": round(seconds, 2),
        "train_nll": float(-model.log_prob(data.train).numpy().mean()),
        "test_nll": float(-test_log_prob.mean()),
        "test_nll_median": float(-np.median(test_log_prob)),
        "test_bits_per_dim": float(model.bits_per_dim(data.test).numpy().mean()),
        "num_weights": int(model.count_params()),
        "arguments": vars(args),
        "history": history.history,
    }
    if not np.isfinite(metrics["test_nll"]):
        print(
            "error: training diverged (non-finite test NLL); the model was not saved.",
            file=sys.stderr,
        )
        return 1
    model.save(os.path.join(args.out, "model.keras"))
    plots = plotting.plot_all(model, data, history.history, os.path.join(args.out, "plots"))
    metrics["plots"] = {name: os.path.relpath(path, args.out) for name, path in plots.items()}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    print(
        f"{args.flow} on {args.dataset}: test NLL {metrics['test_nll']:.4f} nats "
        f"({metrics['test_bits_per_dim']:.4f} bits/dim), {seconds:.1f} s of training; "
        f"wrote {args.out}/model.keras, metrics.json, history.csv, plots/"
    )
    if args.export:
        from tfp_flows.export import export_saved_model

        path = export_saved_model(model, args.export, args.name or args.dataset)
        print(f"exported the SavedModel to {path}")
    return 0


def load_run(run_dir):
    """The model of a `tfp-flows train` run; errors name the path."""
    import keras

    path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no trained model at {path} (run `tfp-flows train` first).")
    try:
        return keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ValueError(f"cannot load the model at {path}: {error}") from error


def export(args):
    from tfp_flows.export import export_saved_model

    path = export_saved_model(load_run(args.run_dir), args.base_path, args.name, args.version)
    print(f"exported {args.run_dir}/model.keras to {path}")
    return 0


def inspect(args):
    from tfp_flows.export import describe

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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    if args.command == "train" and (args.epochs < 1 or args.batch_size < 1):
        build_parser().error("--epochs and --batch-size must be positive")
    command = {"train": train, "export": export, "inspect": inspect}[args.command]
    try:
        return command(args)
    except (OSError, ValueError) as error:
        print(f"tfp-flows {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
