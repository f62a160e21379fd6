"""Benchmark: continuous flows on 2D toys, flow matching vs maximum likelihood, NSF, TFP's FFJORD.

For each toy (moons, checkerboard, 8gaussians, 2spirals), one network (a
time-embedded MLP, `tfp_flows.layers.TimeEmbeddedMLP`, silu, standardised
data) is trained four ways and scored by the exact test NLL against
`datasets.TRUE_ENTROPY`:

- **cnf (flow matching)**: `flows.cnf` with `fit`, for `--epochs` epochs; its
  wall-clock training time T sets the budget of the two below.
- **cnf (maximum likelihood)**: the same network and solver (dopri5), trained
  through the ODE solver with `fit`; its time per epoch is measured over
  `--ml-steps` steps starting from the flow-matching weights (a fresh field is
  zero, which the adaptive solver crosses in one step), and the ratio to flow
  matching's per-epoch time is reported.
- **NSF**: tfp_flows' neural spline flow, trained for the same wall-clock T.
- **TFP FFJORD**: `tfb.FFJORD` around the very same network (exact trace,
  `tfp.math.ode.DormandPrince` at the same tolerances, TFP's adjoint
  gradients), trained by maximum likelihood with a plain `tf.function` loop
  for the same wall-clock T after its first step (whose tracing, timed
  apart, takes tens of seconds).

Then log_prob and sample throughput (samples/s, medians of interleaved
calls). Per-epoch times leave out the first epoch (tracing).

    cd /work/main
    python benchmarks/continuous.py            # full run (about 20 minutes on 2 cores)
    python benchmarks/continuous.py --quick    # smoke test

This is a benchmark, not a test: it prints a markdown table and writes every
number (with machine info) to a JSON file; it never fails on a missed target.
"""

import argparse
import math
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from common import EpochTimer, machine_info, markdown_table, rate, throughputs, write_report

from tfp_flows import datasets, flows
from tfp_flows.layers import TimeEmbeddedMLP
from tfp_flows.training import cosine_adam

tfb, tfd = tfp.bijectors, tfp.distributions

DATASETS = ("moons", "checkerboard", "8gaussians", "2spirals")
# The goals: test NLL − entropy per dataset, and flow matching's per-epoch speed-up.
TARGET_GAP = {"moons": 0.02, "8gaussians": 0.02, "checkerboard": 0.03}
TARGET_EPOCH_RATIO = 5.0
BATCH_SIZE = 256
TOLERANCE = 1e-5  # rtol = atol of both adaptive solvers


class StopAfter(keras.callbacks.Callback):
    """Stops `fit` once `seconds` of training have passed (checked after each batch)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.started >= self.seconds:
            self.model.stop_training = True


def per_epoch(times):
    """Median epoch time, the first (tracing) epoch left out when there are others."""
    return float(np.median(times[1:] if len(times) > 1 else times))


def nll(log_prob, points, chunk=2500):
    values = np.concatenate([log_prob(points[i : i + chunk]) for i in range(0, len(points), chunk)])
    return float(-np.mean(values))


def train_flow_matching(data, args):
    keras.utils.set_random_seed(args.seed)
    model = flows.cnf(2, hidden_units=args.hidden_units, standardize=data.train)
    model.compile(cosine_adam(args.learning_rate, args.epochs, len(data.train), BATCH_SIZE))
    timer = EpochTimer()
    started = time.perf_counter()
    model.fit(data.train, batch_size=BATCH_SIZE, epochs=args.epochs, callbacks=[timer], verbose=0)
    return model, time.perf_counter() - started, per_epoch(timer.times)


def time_maximum_likelihood(data, trained, args):
    """Seconds per epoch of maximum-likelihood training of the same CNF (over --ml-steps).

    It starts from the flow-matching weights `trained`: the solver's cost grows with the
    field's complexity, and a fresh field (zero at the start) takes one or two steps.
    """
    keras.utils.set_random_seed(args.seed)
    model = flows.cnf(
        2, hidden_units=args.hidden_units, training="maximum_likelihood", standardize=data.train
    )
    model.set_weights(trained.get_weights())
    model.compile(keras.optimizers.Adam(args.learning_rate))
    rows = args.ml_steps * BATCH_SIZE
    timer = EpochTimer()
    # Two passes over the first rows: the first traces, the second is timed.
    model.fit(data.train[:rows], batch_size=BATCH_SIZE, epochs=2, callbacks=[timer], verbose=0)
    steps_per_epoch = math.ceil(len(data.train) / BATCH_SIZE)
    return timer.times[-1] / args.ml_steps * steps_per_epoch


def train_nsf(data, seconds, args):
    keras.utils.set_random_seed(args.seed)
    model = flows.nsf(2, num_layers=4, hidden_units=args.hidden_units, standardize=data.train)
    stop = StopAfter(seconds)
    # steps_per_execution=1: the time budget is checked after every step.
    model.compile(keras.optimizers.Adam(args.learning_rate), steps_per_execution=1)
    model.fit(data.train, batch_size=BATCH_SIZE, epochs=10_000, callbacks=[stop], verbose=0)
    return model, int(model.optimizer.iterations)


def build_ffjord(data, args):
    """TFP's FFJORD around the same time-embedded MLP, after the same standardising step."""
    keras.utils.set_random_seed(args.seed)
    network = TimeEmbeddedMLP(args.hidden_units, name="ffjord_field")
    network.build((None, 2))
    solver = tfp.math.ode.DormandPrince(rtol=TOLERANCE, atol=TOLERANCE)
    ffjord = tfb.FFJORD(
        state_time_derivative_fn=lambda t, x: network(x, t=t),
        ode_solve_fn=solver.solve,
        trace_augmentation_fn=tfb.ffjord.trace_jacobian_exact,
    )
    mean, std = data.train.mean(0), data.train.std(0)
    bijector = tfb.Chain([tfb.Shift(mean), tfb.Scale(std), ffjord])
    base = tfd.MultivariateNormalDiag(tf.zeros(2))
    return network, tfd.TransformedDistribution(base, bijector)


def train_ffjord(network, distribution, data, seconds, args):
    """A plain tf.function loop: shuffled batches, Adam, for `seconds` after its first step.

    The first step (tracing TFP's solver and its adjoint, tens of seconds) is timed
    apart and left out of the budget, in FFJORD's favour. Returns (steps, seconds per
    epoch from the median step, the first step's seconds).
    """
    optimizer = keras.optimizers.Adam(args.learning_rate)
    variables = network.trainable_variables

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(distribution.log_prob(x))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(args.seed)
    began = time.perf_counter()
    step(tf.constant(data.train[:BATCH_SIZE])).numpy()
    first_step = time.perf_counter() - began
    steps, started, step_times = 1, time.perf_counter(), []
    while time.perf_counter() - started < seconds:
        order = rng.permutation(len(data.train))
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
            began = time.perf_counter()
            step(tf.constant(data.train[order[start : start + BATCH_SIZE]])).numpy()
            step_times.append(time.perf_counter() - began)
            steps += 1
            if time.perf_counter() - started >= seconds:
                break
    steps_per_epoch = math.ceil(len(data.train) / BATCH_SIZE)
    return steps, float(np.median(step_times)) * steps_per_epoch, first_step


def run_dataset(name, args):
    data = datasets.load(name, args.num_train, args.num_test, seed=args.seed)
    entropy = datasets.TRUE_ENTROPY[name]
    row = {"dataset": name, "true_entropy": entropy}
    cnf, seconds, fm_epoch = train_flow_matching(data, args)
    row["flow_matching"] = {
        "train_seconds": seconds,
        "seconds_per_epoch": fm_epoch,
        "test_nll": nll(cnf.log_prob, data.test),
    }
    ml_epoch = time_maximum_likelihood(data, cnf, args)
    row["maximum_likelihood"] = {"seconds_per_epoch": ml_epoch}
    row["epoch_ratio_ml_over_fm"] = ml_epoch / fm_epoch
    nsf, nsf_steps = train_nsf(data, seconds, args)
    row["nsf_equal_time"] = {"steps": nsf_steps, "test_nll": nll(nsf.log_prob, data.test)}
    network, ffjord = build_ffjord(data, args)
    ffjord_steps, ffjord_epoch, first_step = train_ffjord(network, ffjord, data, seconds, args)
    ffjord_log_prob = tf.function(ffjord.log_prob)
    row["ffjord_equal_time"] = {
        "steps": ffjord_steps,
        "seconds_per_epoch": ffjord_epoch,
        "first_step_seconds": first_step,
        "test_nll": nll(lambda x: ffjord_log_prob(tf.constant(x)).numpy(), data.test),
    }
    row["flow_matching_steps"] = int(cnf.optimizer.iterations)
    seed = tf.constant([1, 2])
    ffjord_sample = tf.function(lambda s: ffjord.sample(args.throughput_size, seed=s))
    x = tf.constant(data.test[: args.throughput_size])
    row["log_prob_per_second"] = throughputs(
        {
            "cnf": lambda: cnf.log_prob(x),
            "nsf": lambda: nsf.log_prob(x),
            "ffjord": lambda: ffjord_log_prob(x),
        },
        args.throughput_size,
        warmup=1,
        calls=args.calls,
    )
    row["sample_per_second"] = throughputs(
        {
            "cnf": lambda: cnf.sample(args.throughput_size, seed=seed),
            "nsf": lambda: nsf.sample(args.throughput_size, seed=seed),
            "ffjord": lambda: ffjord_sample(seed),
        },
        args.throughput_size,
        warmup=1,
        calls=args.calls,
    )
    gap = row["flow_matching"]["test_nll"] - entropy
    row["flow_matching"]["gap"] = gap
    row["met_nll_target"] = gap <= TARGET_GAP[name] if name in TARGET_GAP else None
    return row


def table(rows):
    header = [
        "dataset",
        "entropy",
        "cnf FM NLL (gap)",
        "NSF NLL, equal time",
        "FFJORD NLL, equal time",
        "steps FM | NSF | FFJORD",
        "s/epoch FM | ML | FFJORD",
        "FFJORD 1st step s",
        "ML / FM",
        "log_prob/s cnf | nsf | ffjord",
        "sample/s cnf | nsf | ffjord",
    ]
    cells = []
    for r in rows:
        fm, ml = r["flow_matching"], r["maximum_likelihood"]
        cells.append(
            [
                r["dataset"],
                f"{r['true_entropy']:.3f}",
                f"{fm['test_nll']:.3f} ({fm['gap']:+.3f})",
                f"{r['nsf_equal_time']['test_nll']:.3f}",
                f"{r['ffjord_equal_time']['test_nll']:.3f}",
                f"{r['flow_matching_steps']} | {r['nsf_equal_time']['steps']}"
                f" | {r['ffjord_equal_time']['steps']}",
                f"{fm['seconds_per_epoch']:.2f} | {ml['seconds_per_epoch']:.1f}"
                f" | {r['ffjord_equal_time']['seconds_per_epoch']:.1f}",
                f"{r['ffjord_equal_time']['first_step_seconds']:.0f}",
                f"{r['epoch_ratio_ml_over_fm']:.0f}×",
                " | ".join(rate(r["log_prob_per_second"][k]) for k in ("cnf", "nsf", "ffjord")),
                " | ".join(rate(r["sample_per_second"][k]) for k in ("cnf", "nsf", "ffjord")),
            ]
        )
    return markdown_table(header, cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, moons")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="flow-matching epochs (80)")
    parser.add_argument("--hidden-units", type=int, nargs="+", default=None, help="(64 64)")
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--ml-steps", type=int, default=None, help="timed ML steps (20)")
    parser.add_argument("--num-train", type=int, default=None, help="(20000)")
    parser.add_argument("--num-test", type=int, default=None, help="(5000)")
    parser.add_argument("--throughput-size", type=int, default=None, help="(4096)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls (5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/continuous.json")
    args = parser.parse_args(argv)
    quick = {
        "datasets": ["moons"],
        "epochs": 2,
        "hidden_units": [16],
        "ml_steps": 2,
        "num_train": 1024,
        "num_test": 256,
        "throughput_size": 256,
        "calls": 2,
    }
    full = {
        "datasets": list(DATASETS),
        "epochs": 80,
        "hidden_units": [64, 64],
        "ml_steps": 20,
        "num_train": 20000,
        "num_test": 5000,
        "throughput_size": 4096,
        "calls": 5,
    }
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.hidden_units = tuple(args.hidden_units)

    rows = []
    for name in args.datasets:
        started = time.perf_counter()
        rows.append(run_dataset(name, args))
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    ratios = [r["epoch_ratio_ml_over_fm"] for r in rows]
    report = {
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "targets": {"nll_gap": TARGET_GAP, "epoch_ratio_ml_over_fm": TARGET_EPOCH_RATIO},
        "rows": rows,
        "epoch_ratio_ml_over_fm_min": min(ratios),
        "met_epoch_ratio_target": min(ratios) >= TARGET_EPOCH_RATIO,
    }
    print(table(rows))
    print(
        f"maximum-likelihood / flow-matching seconds per epoch: at least {min(ratios):.0f}× "
        f"(target ≥ {TARGET_EPOCH_RATIO:.0f}×)"
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
