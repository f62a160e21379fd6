"""`tfp-flows`: train a flow on a built-in dataset or your own data; export and inspect it.

The arguments are parsed before TensorFlow is imported, so `--help`,
`--version` and usage errors answer at once. TensorFlow's own logs are off
(TF_CPP_MIN_LOG_LEVEL=3) unless the user set TF_CPP_MIN_LOG_LEVEL.
"""

import argparse
import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time

from tfp_flows import __version__
from tfp_flows.checks import MAX_SAMPLES, check_creatable, check_export_destination
from tfp_flows.datasets import NAMES as DATASETS

JIT_COMPILE = {"auto": "auto", "on": True, "off": False}

# What the parser needs to know of the library without importing TensorFlow; kept equal to
# the factories' signatures and the transformers' options by tests/test_cli.py.
FLOW_LAYERS = {"cnf": 1, "maf": 5, "nsf": 8, "planar": 16, "radial": 16, "realnvp": 8}  # steps
NETWORK_FLOWS = ("cnf", "maf", "nsf", "realnvp")  # the flows with --hidden-units
# The continuous flow's options, {option: its default}, and their choices.
CNF_OPTIONS = {
    "training": "flow_matching",
    "solver": "dopri5",
    "num_steps": 16,
    "rtol": 1e-5,
    "atol": 1e-5,
}
CNF_TRAININGS = ("flow_matching", "maximum_likelihood")
CNF_SOLVERS = ("dopri5", "rk4")
# The solver each solver option belongs to.
SOLVER_OPTIONS = {"num_steps": "rk4", "rtol": "dopri5", "atol": "dopri5"}
# The flows whose steps take a transformer, and the one they use by default.
FLOW_TRANSFORMERS = {"realnvp": "affine", "maf": "affine", "nsf": "spline"}
TRANSFORMERS = ("affine", "spline")
# {option: (transformers that take it, its default)}, over every registered transformer.
TRANSFORMER_OPTIONS = {
    "log_scale_clamp": (("affine",), 3.0),
    "num_bins": (("spline",), 8),
    "bound": (("spline",), 3.0),
    "min_bin_size": (("spline",), 1e-3),
    "min_slope": (("spline",), 1e-3),
}


def _transformer_of(args):
    """The transformer name of this run's flow (None for planar, radial)."""
    return args.transformer or FLOW_TRANSFORMERS.get(args.flow)


def _check_transformer_arguments(parser, args):
    """Usage errors for --transformer and its options where the flow does not take them."""
    if args.transformer and args.flow not in ("realnvp", "maf"):
        parser.error(
            f"--transformer applies to realnvp and maf, not to {args.flow}"
            + (" (nsf is realnvp --transformer spline)" if args.flow == "nsf" else "")
        )
    transformer = _transformer_of(args)
    for option, (names, _) in TRANSFORMER_OPTIONS.items():
        if getattr(args, option) is None or transformer in names:
            continue
        flag = "--" + option.replace("_", "-")
        kind = " and ".join(names)
        if transformer is None:
            parser.error(f"{flag} applies to {kind} transformers; {args.flow} has none")
        if option == "num_bins":  # the message users of earlier versions know
            parser.error(
                f"--num-bins applies to spline flows (nsf), not to {args.flow} (its "
                f"transformer is {transformer}; add --transformer spline for splines)"
            )
        parser.error(f"{flag} applies to {kind} transformers, not to {args.flow}'s {transformer}")


def _check_cnf_arguments(parser, args):
    """Usage errors for the continuous flow's options where they do not apply."""
    for option in CNF_OPTIONS:
        if getattr(args, option) is not None and args.flow != "cnf":
            parser.error(f"{_option(option)} applies to cnf, not to {args.flow}")
    solver = args.solver or CNF_OPTIONS["solver"]
    for option, owner in SOLVER_OPTIONS.items():
        if getattr(args, option) is not None and solver != owner:
            parser.error(f"{_option(option)} applies to the {owner} solver, not to {solver}")


def _cnf_options(args):
    return {o: getattr(args, o) for o in CNF_OPTIONS if getattr(args, o) is not None}


def _transformer_options(args):
    return {
        option: getattr(args, option)
        for option in TRANSFORMER_OPTIONS
        if getattr(args, option) is not None
    }


class _HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help once: not for flags, None or what the help says."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default not in (None, False, True, argparse.SUPPRESS)
        if shown and "default" not in text and action.option_strings:
            default = action.default
            if isinstance(default, (list, tuple)):
                default = " ".join(map(str, default))
            text += f" (default: {default})"
        return text


def _number(kind, accept, requirement):
    """An argparse type: text -> kind(text), a usage error naming `requirement` otherwise."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


_positive = _number(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive, finite number")
_seed = _number(int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfp-flows",
        description="Normalizing flows as TFP bijectors, trained with Keras. TensorFlow's own "
        "logs are off unless you set TF_CPP_MIN_LOG_LEVEL (0 shows them all, e.g. to see why "
        "a GPU is not used).",
    )
    parser.add_argument("--version", action="version", version=f"tfp-flows {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a flow on a built-in dataset or your own data file",
        description="Train a flow with Keras' fit, by maximum likelihood (cnf: by flow matching "
        "unless --training says otherwise). Writes OUT/model.keras, "
        "OUT/metrics.json, OUT/history.csv, OUT/plots/*.png and OUT/run.json.",
        formatter_class=_HelpFormatter,
    )
    train.add_argument(
        "--dataset",
        default="moons",
        choices=DATASETS,
        help="built-in dataset (2D toys, or 'digits': sklearn 8x8, dequantised)",
    )
    train.add_argument(
        "--data",
        metavar="FILE",
        default=None,
        help="train on your own data instead: a .npy array or a text table [N, D] (a header "
        "row and the delimiter , ; tab or space are detected); a random 10%% is held out as "
        "the test set",
    )
    train.add_argument(
        "--delimiter",
        default=None,
        help="the --data file's column separator, if detection picks the wrong one (e.g. ';')",
    )
    train.add_argument(
        "--header",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether the --data file's first row names the columns",
    )
    train.add_argument("--flow", default="realnvp", choices=sorted(FLOW_LAYERS), help="flow family")
    train.add_argument(
        "--num-layers",
        type=_positive,
        default=None,
        help="flow steps (default: "
        + ", ".join(f"{steps} for {flow}" for flow, steps in FLOW_LAYERS.items())
        + ")",
    )
    train.add_argument(
        "--hidden-units",
        type=_positive,
        nargs="+",
        default=[64, 64],
        help="widths of the hidden layers of each step's network ("
        + ", ".join(NETWORK_FLOWS)
        + ")",
    )
    train.add_argument(
        "--transformer",
        default=None,
        choices=TRANSFORMERS,
        help="the elementwise map of the coupling or autoregressive steps (realnvp: affine; "
        "maf: affine, or spline for NSF-AR; nsf is realnvp with spline)",
    )
    # Every transformer's options, one flag each (--num-bins, --bound, --log-scale-clamp, ...).
    for option, (names, default) in TRANSFORMER_OPTIONS.items():
        train.add_argument(
            "--" + option.replace("_", "-"),
            type=_positive if isinstance(default, int) else _positive_float,
            default=None,
            help=f"{' and '.join(names)} transformer option (default: {default})",
        )
    train.add_argument(
        "--training",
        choices=CNF_TRAININGS,
        default=None,
        help="how cnf trains: flow_matching regresses its vector field on straight paths "
        "from base to data (no ODE solved in training), maximum_likelihood backpropagates "
        "through the solver (default: flow_matching); either way the test NLL is exact",
    )
    train.add_argument(
        "--solver",
        choices=CNF_SOLVERS,
        default=None,
        help="cnf's ODE solver: dopri5 is adaptive (--rtol, --atol), rk4 takes --num-steps "
        "fixed steps (default: dopri5)",
    )
    train.add_argument(
        "--num-steps", type=_positive, default=None, help="cnf's rk4 steps (default: 16)"
    )
    for option in ("rtol", "atol"):
        train.add_argument(
            _option(option),
            type=_positive_float,
            default=None,
            help=f"cnf's dopri5 {'relative' if option == 'rtol' else 'absolute'} tolerance "
            f"(default: {CNF_OPTIONS[option]:g})",
        )
    train.add_argument("--epochs", type=_positive, default=100, help="passes over the training set")
    train.add_argument("--batch-size", type=_positive, default=512, help="examples per step")
    train.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=2e-3,
        help="Adam's initial learning rate (cosine-decayed to 0 over training)",
    )
    train.add_argument(
        "--clipnorm",
        type=_positive_float,
        default=None,
        help="clip each gradient to this norm (default: off)",
    )
    train.add_argument(
        "--num-train",
        type=_positive,
        default=20000,
        help="training points for 2D datasets (digits has a fixed 1500/297 split)",
    )
    train.add_argument(
        "--num-test", type=_positive, default=5000, help="test points for 2D datasets"
    )
    train.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help="don't add the fixed last step that standardises the data (standardising is the "
        "default)",
    )
    train.add_argument("--seed", type=_seed, default=0, help="seed for data, weights and batches")
    train.add_argument(
        "--steps-per-execution",
        type=_positive,
        default=None,
        help="training steps per compiled call (Keras' steps_per_execution); small flows "
        "are bound by per-step overhead, so several steps per call train faster "
        "(default: the largest divisor of an epoch's steps up to 20)",
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
    train.add_argument(
        "--out",
        default=None,
        help="output directory (default: runs/DATASET); a folder of your own is used only if "
        "it holds none of the files tfp-flows writes, and nothing in it is ever deleted",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the finished (or discard the interrupted) run in OUT: only files "
        "tfp-flows wrote there are removed",
    )
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
        help="export a trained run as a TF Serving SavedModel, a TFLite or an ONNX model",
        description=(
            "Export RUN_DIR/model.keras to BASE_PATH/NAME/VERSION (TF Serving's layout), or with "
            "--format tflite/onnx to BASE_PATH/NAME/FORMAT/VERSION (checked in its runtime "
            "before it is written)."
        ),
        formatter_class=_HelpFormatter,
    )
    export.add_argument("run_dir", help="a folder written by `tfp-flows train`")
    export.add_argument("--name", required=True, help="model name (a folder under BASE_PATH)")
    export.add_argument("--base-path", default="saved_models", help="TF Serving's model base")
    export.add_argument(
        "--version",
        type=_positive,
        default=None,
        help="version number (default: the next free one)",
    )
    export.add_argument(
        "--max-samples",
        type=_positive,
        default=MAX_SAMPLES,
        help="the most samples one call of the `sample` signature may ask for",
    )
    export.add_argument(
        "--format",
        choices=("saved_model", "tflite", "onnx"),
        default="saved_model",
        help="saved_model (TF Serving), tflite (built-in ops) or onnx (needs tfp-flows[portable])",
    )

    inspect = commands.add_parser(
        "inspect",
        help="list an export's versions and signatures",
        description="Print the versions under MODEL_DIR and each signature's inputs and outputs.",
    )
    inspect.add_argument("model_dir", help="e.g. saved_models/moons")
    return parser


# What `tfp-flows train` writes into OUT, and owns there (see `RunFolder`).
RUN_FILE = "run.json"
OUTPUTS = (RUN_FILE, "model.keras", "metrics.json", "history.csv", "plots", "backup")
# The options that make a run what it is: a resume with any of them changed is refused.
RUN_OPTIONS = (
    "dataset",
    "data",
    "flow",
    "num_layers",
    "hidden_units",
    "transformer",
    *TRANSFORMER_OPTIONS,
    *CNF_OPTIONS,
    "epochs",
    "batch_size",
    "learning_rate",
    "clipnorm",
    "num_train",
    "num_test",
    "standardize",
    "seed",
    "steps_per_execution",
    "jit_compile",
    "patience",
)


def _run_config(args):
    """The options of a run, with a data file named by its absolute path and content hash."""
    config = {key: getattr(args, key) for key in RUN_OPTIONS}
    if args.data:
        config["data"] = {"path": os.path.abspath(args.data), "sha256": _sha256(args.data)}
        config["dataset"] = None  # not used with --data
    return json.loads(json.dumps(config))  # tuples as lists, as they come back from the file


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _option(key):
    return "--" + key.replace("_", "-")


class RunFolder:
    """The output folder of `tfp-flows train`, and the files in it that the CLI owns.

    `OUT/run.json` records the run's options, its state ("running",
    "complete", "failed") and every file the CLI wrote. The CLI never deletes
    or overwrites a file it did not write: a folder holding any of the names
    it writes (`OUTPUTS`) that run.json does not list is refused; other files
    in the folder are left alone. A finished run is replaced only with
    `--overwrite`; an interrupted one is resumed from its backup when the
    options match, and refused by name when they don't.
    """

    def __init__(self, path):
        self.path = path
        self.record = None

    def file(self, name):
        return os.path.join(self.path, name)

    def check_writable(self):
        """Raises before anything is written when OUT cannot hold a run."""
        check_creatable(self.path, "the run folder")

    def _read_record(self):
        path = self.file(RUN_FILE)
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict) or record.get("written_by") != "tfp-flows train":
            raise ValueError(
                f"{path} was not written by tfp-flows train: choose another --out (tfp-flows "
                "never overwrites files it did not create)."
            )
        return record

    def open(self, config, overwrite=False):
        """Prepares the folder for this run; returns the epoch to resume from, or None.

        Raises a ValueError naming the problem (foreign files, a finished run
        without --overwrite, an interrupted run with other options) before
        anything in the folder changes.
        """
        self.check_writable()
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise OSError(f"cannot write the run to {self.path}: it is a file, not a folder.")
        record = self._read_record() if os.path.isdir(self.path) else None
        owned = set(record["files"]) if record else set()
        foreign = [
            name
            for name in OUTPUTS
            if os.path.lexists(self.file(name)) and name not in _owned_names(owned)
        ]
        if foreign:
            raise ValueError(
                f"{self.path} already holds {', '.join(foreign)}, which tfp-flows did not "
                "write: choose another --out (tfp-flows never overwrites files it did not "
                "create)."
            )
        resume_epoch = None
        if record is not None:
            state = record.get("state")
            backup_epoch = _backup_epoch(self.file("backup"))
            if state == "complete" and not overwrite:
                raise ValueError(
                    f"{self.path} already holds a finished run ({_describe(record)}): add "
                    "--overwrite to replace it, or choose another --out."
                )
            if state == "running" and backup_epoch is not None and not overwrite:
                changed = [
                    key for key in RUN_OPTIONS if record["config"].get(key) != config.get(key)
                ]
                if changed:
                    details = "; ".join(
                        f"{_option(key)} was {_shown(record['config'].get(key))}, now "
                        f"{_shown(config.get(key))}"
                        for key in changed
                    )
                    raise ValueError(
                        f"{self.path} holds an interrupted run with other options ({details}): "
                        "rerun with the same options to resume it, add --overwrite to discard "
                        "it and start afresh, or choose another --out."
                    )
                resume_epoch = backup_epoch
            else:
                self._remove(owned)
                if state == "running" and not overwrite:
                    print(
                        f"restarting the run in {self.path}: the previous one stopped before "
                        "it had a backup."
                    )
        self.record = {
            "written_by": "tfp-flows train",
            "state": "running",
            "config": config,
            "files": sorted(
                {RUN_FILE, "history.csv", "backup"} | (owned if resume_epoch else set())
            ),
        }
        os.makedirs(self.path, exist_ok=True)
        self._save_record()
        if resume_epoch is not None:
            _truncate_history(self.file("history.csv"), resume_epoch)
        return resume_epoch

    def wrote(self, *names):
        self.record["files"] = sorted(set(self.record["files"]) | set(names))
        self._save_record()

    def finish(self, state, summary=None):
        self.record["state"] = state
        if summary:
            self.record["summary"] = summary
        self._save_record()

    def _save_record(self):
        _write_atomically(self.file(RUN_FILE), json.dumps(self.record, indent=2))

    def _remove(self, owned):
        """Deletes the files of an earlier run that run.json lists (and nothing else)."""
        for name in sorted(owned, key=len, reverse=True):
            path = self.file(name)
            if os.path.isdir(path) and not os.path.islink(path):
                if name == "backup":
                    shutil.rmtree(path)
                elif not os.listdir(path):
                    os.rmdir(path)
            elif os.path.lexists(path):
                os.remove(path)


def _owned_names(owned):
    """The top-level names of owned paths ("plots/samples.png" owns "plots")."""
    return {name.split("/", 1)[0] for name in owned}


def _backup_epoch(backup):
    """The epochs a run's backup has completed, or None without a readable backup."""
    try:
        with open(os.path.join(backup, "training_metadata.json")) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _describe(record):
    summary = record.get("summary") or {}
    config = record.get("config") or {}
    what = f"{config.get('flow')} on {config.get('dataset') or 'a data file'}"
    if "test_nll" in summary:
        what += f", test NLL {summary['test_nll']:.4f}"
    return what


def _shown(value):
    if isinstance(value, dict) and "path" in value:
        return f"{value['path']} (sha256 {value['sha256'][:12]})"
    return json.dumps(value)


def _truncate_history(path, epochs):
    """Keeps the rows of epochs 0..epochs-1: a kill between the history row and the backup
    of an epoch would otherwise leave that epoch's row twice once it is run again."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    fields = list(rows[0])
    kept = [
        row
        for row in rows
        if None not in row.values()
        and row.get("epoch", "").isdigit()
        and int(row["epoch"]) < epochs
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    _write_atomically(path, buffer.getvalue())


def _write_atomically(path, text):
    partial = path + ".partial"
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)


def train(args):
    export_name = args.name or _data_name(args)
    if args.export:
        check_export_destination(args.export, export_name)
    out = args.out or os.path.join("runs", _data_name(args))
    run = RunFolder(out)
    run.check_writable()
    if args.data and not os.path.isfile(args.data):
        raise FileNotFoundError(f"no data file at {args.data}.")
    import keras
    import numpy as np

    from tfp_flows import datasets, flows, plotting
    from tfp_flows.callbacks import (
        AtomicBackupAndRestore,
        HistoryCSV,
        RestoreOnNaN,
        TestSetNLL,
    )
    from tfp_flows.export import export_saved_model
    from tfp_flows.training import cosine_adam

    if args.data:
        data = datasets.load_file(
            args.data, seed=args.seed, delimiter=args.delimiter, header=args.header
        )
        print(data.description)
    else:
        data = datasets.load(args.dataset, args.num_train, args.num_test, seed=args.seed)
    keras.utils.set_random_seed(args.seed)
    options = {"num_layers": args.num_layers} if args.num_layers else {}
    if args.flow in NETWORK_FLOWS:
        options["hidden_units"] = args.hidden_units
    if args.transformer:
        options["transformer"] = args.transformer
    options.update(_transformer_options(args))
    options.update(_cnf_options(args))
    factory = flows.cnf if args.flow == "cnf" else flows.FLOWS[args.flow]
    model = factory(
        data.event_size, standardize=data.train if args.standardize else None, **options
    )
    # Early stopping chooses weights on a validation split, never on the test set.
    train_size = len(data.train) - (len(data.train) // 10 if args.patience else 0)
    model.compile(
        cosine_adam(
            args.learning_rate, args.epochs, train_size, args.batch_size, clipnorm=args.clipnorm
        ),
        jit_compile=JIT_COMPILE[args.jit_compile],
        steps_per_execution=args.steps_per_execution or "auto",
    )

    resume_epoch = run.open(_run_config(args), overwrite=args.overwrite)
    if resume_epoch is not None:
        print(
            f"resuming the interrupted run in {out} after epoch {resume_epoch} of {args.epochs} "
            "(from its backup)"
        )
    history_path = run.file("history.csv")
    nan_guard = RestoreOnNaN()
    callbacks = [
        nan_guard,
        *([] if args.patience else [TestSetNLL(data.test)]),  # before the logger: it records it
        # A resumed run appends to the history it already has (cut to its backup's epoch).
        HistoryCSV(history_path, append=resume_epoch is not None),
        AtomicBackupAndRestore(run.file("backup")),
    ]
    if args.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=args.patience, restore_best_weights=True)
        )
    started = time.perf_counter()
    # The test set is measured every epoch (TestSetNLL) but never chosen on: early
    # stopping validates on the last 10% of the training set.
    model.fit(
        data.train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_split=0.1 if args.patience else 0.0,
        callbacks=callbacks,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - started

    history = _read_history(history_path)
    test_log_prob = model.log_prob(data.test).numpy()
    test_nll = float(-test_log_prob.mean())
    if not np.isfinite(test_nll):
        run.finish("failed")
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
        "validation": "last 10% of the training set" if args.patience else None,
        "stopped_on_nan": nan_guard.stopped_at is not None,
        "resumed_after_epoch": resume_epoch,
        "num_weights": int(model.count_params()),
        "arguments": {**vars(args), "out": out},
        "history": history,
    }
    partial_model = run.file(".model.partial.keras")
    model.save(partial_model)
    os.replace(partial_model, run.file("model.keras"))
    run.wrote("model.keras")
    # A built-in toy's known entropy marks the floor in training.png (not for --data files).
    entropy = None if args.data else datasets.TRUE_ENTROPY.get(args.dataset)
    plots = plotting.plot_all(model, data, history, run.file("plots"), true_entropy=entropy)
    metrics["plots"] = {name: os.path.relpath(path, out) for name, path in plots.items()}
    run.wrote(*metrics["plots"].values())
    _write_atomically(run.file("metrics.json"), json.dumps(metrics, indent=2, default=float))
    run.wrote("metrics.json")
    run.finish("complete", {"test_nll": test_nll})
    trained = (
        f"{args.flow} ({model.training.replace('_', ' ')})" if args.flow == "cnf" else args.flow
    )
    print(
        f"{trained} on {data.name}: test NLL {test_nll:.4f} nats "
        f"({metrics['test_bits_per_dim']:.4f} bits/dim), {seconds:.1f} s of training; "
        f"wrote {out}/model.keras, metrics.json, history.csv, plots/"
    )
    if args.export:
        path = export_saved_model(model, args.export, export_name)
        print(f"exported the SavedModel to {path}")
    return 0


def _data_name(args):
    return os.path.splitext(os.path.basename(args.data))[0] if args.data else args.dataset


def _read_history(path):
    """The CSVLogger's file as Keras' History.history: {metric: [per-epoch values]}."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        key: [float(row[key]) if row[key] else math.nan for row in rows]
        for key in rows[0]
        if key != "epoch"
    }


def load_run(run_dir):
    """The model of a `tfp-flows train` run; errors name the path."""
    path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no trained model at {path} (run `tfp-flows train` first).")
    import keras

    import tfp_flows

    tfp_flows.load()  # registers the library's classes with Keras
    try:
        return keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ValueError(f"cannot load the model at {path}: {error}") from error


def export(args):
    from tfp_flows.export import export_saved_model

    if args.format != "saved_model":
        return _export_portable(args)
    check_export_destination(args.base_path, args.name, args.version)
    model = load_run(args.run_dir)
    path = export_saved_model(model, args.base_path, args.name, args.version, args.max_samples)
    print(f"exported {args.run_dir}/model.keras to {path}")
    return 0


def _export_portable(args):
    from tfp_flows import portable

    portable.check_destination(args.base_path, args.name, args.format, args.version)
    model = load_run(args.run_dir)
    path = portable.export_portable(model, args.format, args.base_path, args.name, args.version)
    print(f"exported {args.run_dir}/model.keras as {args.format} to {path}")
    return 0


def inspect_export(args):
    from tfp_flows.export import describe

    for version, signatures in describe(args.model_dir).items():
        print(f"version {version}: {os.path.join(args.model_dir, str(version))}")
        for name, tensors in signatures.items():
            print(f"  {name}")
            for kind in ("inputs", "outputs"):
                for key, (dtype, shape) in tensors[kind].items():
                    dims = "scalar" if shape == [] else str(shape).replace("None", "-1")
                    print(f"    {kind[:-1]:6s} {key}: {dtype} {dims}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        _check_transformer_arguments(parser, args)
        _check_cnf_arguments(parser, args)
    # Only now, with arguments that make sense, is TensorFlow imported (quietly by default).
    from tfp_flows._tensorflow import import_tensorflow, quiet_by_default

    quiet_by_default()
    import_tensorflow()
    command = {"train": train, "export": export, "inspect": inspect_export}[args.command]
    try:
        return command(args)
    except (OSError, ValueError) as error:
        print(f"tfp-flows {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
