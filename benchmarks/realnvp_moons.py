"""Benchmark: tfp_flows' RealNVP against TFP's built-in `tfb.RealNVP` on two moons.

Both systems are the same model: 8 affine couplings alternating which half of
the 2-D event conditions the other, each with an MLP (64, 64, relu) whose last
layer starts at zero, log-scales soft-clamped to 3·tanh(s/3), a standard
normal base, trained with Keras `fit` (Adam 1e-3, batch 512, ~2000 steps).
TFP's side is `tfp_builtin.coupling_flow` around the very same Keras 3
networks; the script checks that with the same seed both start from
identical weights and compute the same function. Only the implementation
differs, so the throughput ratio measures it.

    cd /work/main
    PYTHONPATH=. python benchmarks/realnvp_moons.py            # full run
    PYTHONPATH=. python benchmarks/realnvp_moons.py --quick    # 80 steps, smoke test
    PYTHONPATH=. python benchmarks/realnvp_moons.py --xla --cosine --repeats 3

This is a benchmark, not a test: it prints a markdown table and writes every
number (with machine info) to a JSON file; it never fails on a missed target.
"""

import argparse
import math
import os
import statistics

import keras
import tensorflow as tf
import tfp_builtin
from common import (
    EpochTimer,
    compiled_fns,
    machine_info,
    markdown_table,
    medians,
    throughputs,
    write_report,
)

import tfp_flows

BATCH_SIZE = 512
NUM_LAYERS = 8
HIDDEN_UNITS = (64, 64)
LOG_SCALE_CLAMP = 3.0
NUM_TRAIN, NUM_TEST = 20000, 5000
SAMPLE_SIZE = 5000
SAMPLE_SEED = (1, 2)
QUICK_STEPS = 80  # 2 epochs: one traces, one is timed
TARGET_TRAIN_RATIO = 1.5
TARGET_NLL = 0.31
TRUE_ENTROPY = 0.290  # of this data (STACK.md): no model can beat it on fresh samples


def build_tfp_flows(standardize=None, num_layers=NUM_LAYERS, hidden_units=HIDDEN_UNITS):
    return tfp_flows.flows.realnvp(
        2,
        num_layers=num_layers,
        hidden_units=hidden_units,
        log_scale_clamp=LOG_SCALE_CLAMP,
        standardize=standardize,
    )


def build_tfp_builtin(standardize=None, num_layers=NUM_LAYERS, hidden_units=HIDDEN_UNITS):
    """`tfb.RealNVP` couplings around the same networks (`tfp_builtin.coupling_flow`)."""
    return tfp_builtin.coupling_flow(
        2,
        "affine",
        num_layers,
        hidden_units,
        standardize,
        log_scale_clamp=LOG_SCALE_CLAMP,
    )


SYSTEMS = {"tfp_flows": build_tfp_flows, "tfp_builtin": build_tfp_builtin}


# --- Measurements -----------------------------------------------------------


def _learning_rate(options, total_steps):
    if options.cosine:
        return keras.optimizers.schedules.CosineDecay(options.learning_rate, total_steps)
    return options.learning_rate


def train(model, train_data, epochs, options, jit_compile):
    """Fits the model; returns train samples/s (two ways) and the final loss."""
    steps_per_epoch = math.ceil(len(train_data) / BATCH_SIZE)
    optimizer = keras.optimizers.Adam(
        _learning_rate(options, epochs * steps_per_epoch), global_clipnorm=options.clipnorm
    )
    model.compile(
        optimizer=optimizer,
        jit_compile=jit_compile,
        steps_per_execution=options.steps_per_execution,
    )
    timer = EpochTimer()
    history = model.fit(
        train_data, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, callbacks=[timer], verbose=0
    )
    # Samples actually seen (the last batch of each epoch is partial: 20000, not 40·512).
    samples = len(train_data) * (epochs - 1)
    # The median epoch shrugs off load spikes from other processes on the machine.
    robust = len(train_data) / statistics.median(timer.times[1:])
    return samples / sum(timer.times[1:]), robust, float(history.history["loss"][-1])


def run_once(name, data, epochs, seed, options, jit_compile):
    keras.utils.set_random_seed(seed)
    model = build(name, data, options)
    train_rate, train_rate_median, final_loss = train(
        model, data.train, epochs, options, jit_compile
    )
    test = tf.constant(data.test)
    log_prob, sample = compiled_fns(model, SAMPLE_SIZE, SAMPLE_SEED, jit_compile)
    calls = dict(warmup=options.warmup, calls=options.calls)
    return {
        "train": train_rate,
        "log_prob": throughputs({"": lambda: log_prob(test)}, len(data.test), **calls)[""],
        "sample": throughputs({"": sample}, SAMPLE_SIZE, **calls)[""],
        "test_nll": -float(tf.reduce_mean(log_prob(test))),
        "train_median_epoch": train_rate_median,
        "final_train_loss": final_loss,
    }


# --- Report -----------------------------------------------------------------


def _rate(value):
    return f"{value / 1e3:,.0f}k"


def table(results, suffix=""):
    rows = [
        [
            name + suffix,
            _rate(results[name + suffix]["train"]),
            _rate(results[name + suffix]["log_prob"]),
            _rate(results[name + suffix]["sample"]),
            f"{results[name + suffix]['test_nll']:.3f}",
        ]
        for name in SYSTEMS
    ]
    ratios = ratio_row(results, suffix)
    rows.append(
        ["ratio tfp_flows / tfp_builtin"]
        + [f"{ratios[key]:.2f}×" for key in ("train", "log_prob", "sample")]
        + ["—"]
    )
    header = ["system", "train samples/s", "log_prob samples/s", "sample samples/s"]
    return markdown_table(header + ["test NLL (nats)"], rows)


def ratio_row(results, suffix=""):
    a, b = results["tfp_flows" + suffix], results["tfp_builtin" + suffix]
    return {key: a[key] / b[key] for key in ("train", "log_prob", "sample")}


def targets(results):
    ratio = ratio_row(results)["train"]
    nll = results["tfp_flows"]["test_nll"]
    return {
        "train_ratio": {
            "value": ratio,
            "target": f">= {TARGET_TRAIN_RATIO}",
            "pass": bool(ratio >= TARGET_TRAIN_RATIO),
        },
        "tfp_flows_test_nll": {
            "value": nll,
            "target": f"<= {TARGET_NLL}",
            "pass": bool(nll <= TARGET_NLL),
        },
    }


# --- Main -------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="total training steps")
    parser.add_argument("--repeats", type=int, default=1, help="trainings per system (medians)")
    parser.add_argument("--seed", type=int, default=0, help="model seed of the first repeat")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: {QUICK_STEPS} steps (2 epochs), 2 couplings of 16 units, 1 "
        "warm-up and 5 timed calls (its figures mean nothing)",
    )
    parser.add_argument("--num-layers", type=int, default=None, help=f"default {NUM_LAYERS}")
    parser.add_argument(
        "--hidden-units", type=int, nargs="+", default=None, help=f"default {HIDDEN_UNITS}"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's (initial) rate")
    parser.add_argument(
        "--cosine", action="store_true", help="cosine-decay the learning rate to 0 over training"
    )
    parser.add_argument(
        "--clipnorm", type=float, default=None, help="Adam global_clipnorm (default: none)"
    )
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="both systems end in the same fixed standardising step "
        "(tfp-flows train does this by default)",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=1,
        help="Keras compile(steps_per_execution=...) for both systems",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="also run both systems with jit_compile=True (separate rows)",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls (default 3)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls (default 30)")
    parser.add_argument(
        "--out",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results", "realnvp_moons.json"
        ),
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if quick:
        args.steps = QUICK_STEPS
    if args.num_layers is None:
        args.num_layers = 2 if quick else NUM_LAYERS
    if args.hidden_units is None:
        args.hidden_units = [16] if quick else list(HIDDEN_UNITS)
    if args.warmup is None:
        args.warmup = 1 if quick else 3
    if args.calls is None:
        args.calls = 5 if quick else 30
    if min(args.steps, args.repeats, args.calls, args.num_layers, *args.hidden_units) < 1:
        parser.error("--steps, --repeats, --calls, --num-layers, --hidden-units must be positive")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def build(name, data, options):
    return SYSTEMS[name](
        standardize=data.train if options.standardize else None,
        num_layers=options.num_layers,
        hidden_units=tuple(options.hidden_units),
    )


def check_same_start(data, options):
    """Both systems built with the same seed: identical weights, the same function?"""
    models = {}
    for name in SYSTEMS:
        keras.utils.set_random_seed(options.seed)
        models[name] = build(name, data, options)
    return tfp_builtin.same_start(models["tfp_flows"], models["tfp_builtin"], data.test[:1000])


def main(argv=None):
    args = parse_args(argv)
    info = machine_info()
    data = tfp_flows.datasets.load("moons", num_train=NUM_TRAIN, num_test=NUM_TEST, seed=0)
    steps_per_epoch = math.ceil(NUM_TRAIN / BATCH_SIZE)
    # At least 2 epochs: the first one (tracing) is not timed.
    epochs = max(2, round(args.steps / steps_per_epoch))
    variants = [("", False)] + ([("_xla", True)] if args.xla else [])
    same_start = check_same_start(data, args)

    runs = {name + suffix: [] for name in SYSTEMS for suffix, _ in variants}
    # Interleave systems within each repeat, so a load spike on the shared
    # machine hits both rather than one.
    for repeat in range(args.repeats):
        for suffix, jit in variants:
            for name in SYSTEMS:
                run = run_once(name, data, epochs, args.seed + repeat, args, jit)
                runs[name + suffix].append(run)
                print(
                    f"[repeat {repeat + 1}/{args.repeats}] {name}{suffix}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in run.items()),
                    flush=True,
                )

    results = {key: medians(value) for key, value in runs.items()}
    info["load_average_end"] = list(os.getloadavg())
    report = {
        "config": {
            **vars(args),
            "epochs": epochs,
            "steps": epochs * steps_per_epoch,
            "batch_size": BATCH_SIZE,
            "learning_rate": args.learning_rate,
            "num_layers": args.num_layers,
            "hidden_units": args.hidden_units,
            "log_scale_clamp": LOG_SCALE_CLAMP,
            "dataset": "moons (noise 0.05)",
            "num_train": NUM_TRAIN,
            "num_test": NUM_TEST,
            "sample_size": SAMPLE_SIZE,
            "true_entropy_nats": TRUE_ENTROPY,
        },
        "machine": info,
        "same_start": same_start,
        "medians": results,
        "ratios": {suffix or "default": ratio_row(results, suffix) for suffix, _ in variants},
        "targets": targets(results),
        "runs": runs,
    }
    print_report(results, report, variants, args)
    write_report(report, args.out)


def print_report(results, report, variants, args):
    rate = f"{args.learning_rate:g}"
    schedule = f"cosine decay from {rate}" if args.cosine else f"constant {rate}"
    if args.clipnorm:
        schedule += f", global_clipnorm {args.clipnorm}"
    if args.standardize:
        schedule += ", standardised data"
    if args.steps_per_execution > 1:
        schedule += f", steps_per_execution {args.steps_per_execution}"
    units = "-".join(str(u) for u in args.hidden_units)
    print(
        f"\n## RealNVP ({args.num_layers} couplings, MLP {units}) on two moons: "
        f"{report['config']['steps']} steps, Adam {schedule}, median of {args.repeats}\n"
    )
    print(table(results))
    for suffix, _ in variants[1:]:
        print("\nWith jit_compile=True (XLA) for training, log_prob and sampling:\n")
        print(table(results, suffix))
    robust = {name: results[name]["train_median_epoch"] for name in SYSTEMS}
    print(
        "\nTrain samples/s from the median epoch (robust to load spikes): "
        + ", ".join(f"{name} {_rate(rate)}" for name, rate in robust.items())
        + f", ratio {robust['tfp_flows'] / robust['tfp_builtin']:.2f}×"
    )
    print(f"True entropy of the data: {TRUE_ENTROPY} nats.")
    start = report["same_start"]
    print(
        "Same start (same seed: identical initial weights, and the same log p after the same "
        f"noise on every weight, largest difference "
        f"{start['perturbed_log_prob_max_abs_diff']:.2g}): "
        + ("yes" if start["equivalent"] else "NO")
    )
    for name, check in report["targets"].items():
        mark = "PASS" if check["pass"] else "FAIL"
        print(f"- {name}: {check['value']:.3f} (target {check['target']}): {mark}")


if __name__ == "__main__":
    main()
