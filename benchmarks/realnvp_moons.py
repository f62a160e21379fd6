"""Benchmark: tfp_flows' RealNVP against TFP's built-in `tfb.RealNVP` on two moons.

Both systems are the same model: 8 affine couplings alternating which half of
the 2-D event conditions the other, each with an MLP (64, 64, relu) whose last
layer starts at zero, log-scales soft-clamped to 3·tanh(s/3), a standard
normal base, trained with Keras `fit` (Adam 1e-3, batch 512, ~2000 steps).
Only the implementation differs, so the throughput ratio measures it.

    cd /work/main
    PYTHONPATH=. python benchmarks/realnvp_moons.py            # full run
    PYTHONPATH=. python benchmarks/realnvp_moons.py --quick    # smoke test
    PYTHONPATH=. python benchmarks/realnvp_moons.py --xla --cosine --repeats 3

This is a benchmark, not a test: it prints a markdown table and writes every
number (with machine info) to a JSON file; it never fails on a missed target.
"""

import argparse
import math
import os
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from machine import machine_info, write_report

import tfp_flows
from tfp_flows.layers import ShiftAndLogScaleNetwork

tfb = tfp.bijectors
tfd = tfp.distributions

BATCH_SIZE = 512
NUM_LAYERS = 8
HIDDEN_UNITS = (64, 64)
LOG_SCALE_CLAMP = 3.0
NUM_TRAIN, NUM_TEST = 20000, 5000
SAMPLE_SIZE = 5000
SAMPLE_SEED = (1, 2)
TARGET_TRAIN_RATIO = 1.5
TARGET_NLL = 0.31
TRUE_ENTROPY = 0.290  # of this data (STACK.md): no model can beat it on fresh samples


# --- System B: TFP's built-in RealNVP, trained by the same Keras loop -------

def _shift_and_log_scale_fn(net):
    # A closure rather than a lambda in the loop, so each coupling keeps its own net.
    # The model owns `net`; tfb.RealNVP only calls it (STACK.md: a Keras 3 layer
    # passed directly as shift_and_log_scale_fn fails, and weights must live in Keras).
    def fn(x, output_units):
        shift, log_scale = net(x)
        return shift, LOG_SCALE_CLAMP * tf.tanh(log_scale / LOG_SCALE_CLAMP)
    return fn


class BuiltinRealNVP(keras.Model):
    """`tfb.RealNVP(num_masked=1)` couplings, each followed by a `tfb.Permute`."""

    def __init__(self, dim=2, standardize=None, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.standardize = standardize
        self.num_masked = dim // 2
        # tfp_flows' own network layer, so both systems run the very same MLPs.
        self.nets = [ShiftAndLogScaleNetwork(dim - self.num_masked, HIDDEN_UNITS, name=f"net_{i}")
                     for i in range(NUM_LAYERS)]
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.build((None, dim))

    def build(self, input_shape):
        for net in self.nets:
            net.build((None, self.num_masked))
        reverse = tfb.Permute(list(range(self.dim))[::-1])
        steps = []
        for net in self.nets:
            # A Permute after *every* coupling (not only between them) leaves the data in
            # its own order after an even count, so coupling i conditions on the same half
            # as tfp_flows' coupling i (first half for even i): the very same function.
            steps += [tfb.RealNVP(num_masked=self.num_masked,
                                  shift_and_log_scale_fn=_shift_and_log_scale_fn(net)),
                      reverse]
        if self.standardize is not None:
            # The same fixed last step as tfp_flows' ScaleAndShiftLayer.from_data.
            scale = np.maximum(self.standardize.std(axis=0), 1e-3).astype("float32")
            shift = self.standardize.mean(axis=0).astype("float32")
            steps.append(tfb.Chain([tfb.Shift(shift), tfb.Scale(scale)]))
        base = tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=[self.dim])
        # `steps` is base → data; Chain applies its last bijector first.
        self.distribution = tfd.TransformedDistribution(base, tfb.Chain(steps[::-1]))
        self.built = True

    def call(self, inputs):
        return self.distribution.log_prob(inputs)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self.distribution.log_prob(x))
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def build_tfp_flows(standardize=None):
    return tfp_flows.flows.realnvp(2, num_layers=NUM_LAYERS, hidden_units=HIDDEN_UNITS,
                                   log_scale_clamp=LOG_SCALE_CLAMP, standardize=standardize)


SYSTEMS = {"tfp_flows": build_tfp_flows, "tfp_builtin": BuiltinRealNVP}


# --- Measurements -----------------------------------------------------------

class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch, so the first one (which traces) can be left out."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _learning_rate(options, total_steps):
    if options.cosine:
        return keras.optimizers.schedules.CosineDecay(options.learning_rate, total_steps)
    return options.learning_rate


def train(model, train_data, epochs, options, jit_compile):
    """Fits the model; returns train samples/s (two ways) and the final loss."""
    steps_per_epoch = math.ceil(len(train_data) / BATCH_SIZE)
    optimizer = keras.optimizers.Adam(_learning_rate(options, epochs * steps_per_epoch),
                                      global_clipnorm=options.clipnorm)
    model.compile(optimizer=optimizer, jit_compile=jit_compile,
                  steps_per_execution=options.steps_per_execution)
    timer = EpochTimer()
    history = model.fit(train_data, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True,
                        callbacks=[timer], verbose=0)
    # Samples actually seen (the last batch of each epoch is partial: 20000, not 40·512).
    samples = len(train_data) * (epochs - 1)
    # The median epoch shrugs off load spikes from other processes on the machine.
    robust = len(train_data) / statistics.median(timer.times[1:])
    return samples / sum(timer.times[1:]), robust, float(history.history["loss"][-1])


def median_throughput(fn, size, warmup=3, calls=30):
    """Median samples/s of `fn()` (which must return a tensor) after warm-up calls."""
    for _ in range(warmup):
        fn().numpy()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn().numpy()  # .numpy() waits for the result
        times.append(time.perf_counter() - start)
    return size / statistics.median(times)


def compiled_fns(model, name, jit_compile):
    """(log_prob, sample) callables, each compiled once, as a user would call them."""
    seed = tf.constant(SAMPLE_SEED, tf.int32)
    if name == "tfp_flows" and not jit_compile:
        # The library's own entry points: already tf.function-compiled when called eagerly.
        return model.log_prob, lambda: model.sample(SAMPLE_SIZE, seed=seed)
    dist = model.distribution
    log_prob = tf.function(dist.log_prob, jit_compile=jit_compile)
    sample = tf.function(lambda s: dist.sample(SAMPLE_SIZE, seed=s), jit_compile=jit_compile)
    return log_prob, lambda: sample(seed)


def run_once(name, data, epochs, seed, options, jit_compile):
    keras.utils.set_random_seed(seed)
    model = SYSTEMS[name](standardize=data.train if options.standardize else None)
    train_rate, train_rate_median, final_loss = train(
        model, data.train, epochs, options, jit_compile)
    test = tf.constant(data.test)
    log_prob, sample = compiled_fns(model, name, jit_compile)
    return {
        "train": train_rate,
        "log_prob": median_throughput(lambda: log_prob(test), len(data.test)),
        "sample": median_throughput(sample, SAMPLE_SIZE),
        "test_nll": -float(tf.reduce_mean(log_prob(test))),
        "train_median_epoch": train_rate_median,
        "final_train_loss": final_loss,
    }


def summarise(runs):
    """Median of each metric over repeats (NaN-safe: a diverged run shows as NaN)."""
    return {key: float(np.median([run[key] for run in runs])) for key in runs[0]}


# --- Report -----------------------------------------------------------------

def _rate(value):
    return f"{value / 1e3:,.0f}k"


def table(results, suffix=""):
    lines = ["| system | train samples/s | log_prob samples/s | sample samples/s "
             "| test NLL (nats) |", "|---|---|---|---|---|"]
    for name in SYSTEMS:
        m = results[name + suffix]
        lines.append(f"| {name}{suffix} | {_rate(m['train'])} | {_rate(m['log_prob'])} "
                     f"| {_rate(m['sample'])} | {m['test_nll']:.3f} |")
    ratios = ratio_row(results, suffix)
    lines.append(f"| ratio tfp_flows / tfp_builtin | {ratios['train']:.2f}× "
                 f"| {ratios['log_prob']:.2f}× | {ratios['sample']:.2f}× | — |")
    return "\n".join(lines)


def ratio_row(results, suffix=""):
    a, b = results["tfp_flows" + suffix], results["tfp_builtin" + suffix]
    return {key: a[key] / b[key] for key in ("train", "log_prob", "sample")}


def targets(results):
    ratio = ratio_row(results)["train"]
    nll = results["tfp_flows"]["test_nll"]
    return {
        "train_ratio": {"value": ratio, "target": f">= {TARGET_TRAIN_RATIO}",
                        "pass": bool(ratio >= TARGET_TRAIN_RATIO)},
        "tfp_flows_test_nll": {"value": nll, "target": f"<= {TARGET_NLL}",
                               "pass": bool(nll <= TARGET_NLL)},
    }


# --- Main -------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="total training steps")
    parser.add_argument("--repeats", type=int, default=1, help="trainings per system (medians)")
    parser.add_argument("--seed", type=int, default=0, help="model seed of the first repeat")
    parser.add_argument("--quick", action="store_true", help="200 steps, for smoke testing")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's (initial) rate")
    parser.add_argument("--cosine", action="store_true",
                        help="cosine-decay the learning rate to 0 over training")
    parser.add_argument("--clipnorm", type=float, default=None,
                        help="Adam global_clipnorm (default: none)")
    parser.add_argument("--standardize", action="store_true",
                        help="both systems end in the same fixed standardising step "
                             "(tfp-flows train does this by default)")
    parser.add_argument("--steps-per-execution", type=int, default=1,
                        help="Keras compile(steps_per_execution=...) for both systems")
    parser.add_argument("--xla", action="store_true",
                        help="also run both systems with jit_compile=True (separate rows)")
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "realnvp_moons.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 200
    return args


def main(argv=None):
    args = parse_args(argv)
    info = machine_info()
    data = tfp_flows.datasets.load("moons", num_train=NUM_TRAIN, num_test=NUM_TEST, seed=0)
    steps_per_epoch = math.ceil(NUM_TRAIN / BATCH_SIZE)
    # At least 2 epochs: the first one (tracing) is not timed.
    epochs = max(2, round(args.steps / steps_per_epoch))
    variants = [("", False)] + ([("_xla", True)] if args.xla else [])

    runs = {name + suffix: [] for name in SYSTEMS for suffix, _ in variants}
    # Interleave systems within each repeat, so a load spike on the shared
    # machine hits both rather than one.
    for repeat in range(args.repeats):
        for suffix, jit in variants:
            for name in SYSTEMS:
                run = run_once(name, data, epochs, args.seed + repeat, args, jit)
                runs[name + suffix].append(run)
                print(f"[repeat {repeat + 1}/{args.repeats}] {name}{suffix}: "
                      + ", ".join(f"{k}={v:.4g}" for k, v in run.items()), flush=True)

    results = {key: summarise(value) for key, value in runs.items()}
    info["load_average_end"] = list(os.getloadavg())
    report = {
        "config": {**vars(args), "epochs": epochs, "steps": epochs * steps_per_epoch,
                   "batch_size": BATCH_SIZE, "learning_rate": args.learning_rate,
                   "num_layers": NUM_LAYERS, "hidden_units": HIDDEN_UNITS,
                   "log_scale_clamp": LOG_SCALE_CLAMP, "dataset": "moons (noise 0.05)",
                   "num_train": NUM_TRAIN, "num_test": NUM_TEST, "sample_size": SAMPLE_SIZE,
                   "true_entropy_nats": TRUE_ENTROPY},
        "machine": info,
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
    print(f"\n## RealNVP on two moons: {report['config']['steps']} steps, Adam {schedule}, "
          f"median of {args.repeats}\n")
    print(table(results))
    for suffix, _ in variants[1:]:
        print("\nWith jit_compile=True (XLA) for training, log_prob and sampling:\n")
        print(table(results, suffix))
    robust = {name: results[name]["train_median_epoch"] for name in SYSTEMS}
    print("\nTrain samples/s from the median epoch (robust to load spikes): "
          + ", ".join(f"{name} {_rate(rate)}" for name, rate in robust.items())
          + f", ratio {robust['tfp_flows'] / robust['tfp_builtin']:.2f}×")
    print(f"True entropy of the data: {TRUE_ENTROPY} nats.")
    for name, check in report["targets"].items():
        mark = "PASS" if check["pass"] else "FAIL"
        print(f"- {name}: {check['value']:.3f} (target {check['target']}): {mark}")


if __name__ == "__main__":
    main()
