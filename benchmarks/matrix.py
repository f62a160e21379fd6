"""Benchmark: the performance matrix, tfp_flows against TFP's built-in flows, in one run.

Cells: the 2D toys (moons, checkerboard, 8gaussians) × {RealNVP, NSF, MAF,
planar}, and sklearn's 8×8 digits × {dense RealNVP, Glow}. In each cell
tfp_flows' flow and, where TFP has one, its built-in equivalent at the same
architecture are trained and measured side by side in one process: their
training epochs alternate, and so do their timed log_prob and sample calls,
so that load from other processes on a shared machine hits both alike.

- RealNVP → `tfb.RealNVP` (a `tfb.Permute` swapping the halves after every
  coupling, so coupling i conditions on the same half as tfp_flows' coupling i);
- NSF → `tfb.RealNVP(bijector_fn=...)` returning a `tfb.RationalQuadraticSpline`
  with tfp_flows' parametrisation of the network's outputs;
- MAF → `tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=...)`, the event
  reversed between steps;
- planar, Glow → no usable TFP built-in (n/a; the reasons are in `NOT_AVAILABLE`).

Both systems run the very same Keras 3 networks (tfp_flows' `ShiftAndLogScaleNetwork`,
`MLP` and `MADE`), owned by a Keras model and trained by Keras `fit` with the
same optimizer, so with the same seed they start from the same weights; each
cell checks that, and that both compute the same log p(x) once every weight is
perturbed alike. What differs is the implementation of the flow around the networks.

    cd /work/main
    python benchmarks/matrix.py --quick                       # smoke test, ~3 min
    python benchmarks/matrix.py                               # the matrix, ~25 min
    python benchmarks/matrix.py --datasets moons --flows realnvp maf --repeats 3

Each cell runs in a fresh subprocess (`--isolation cell`), so its peak-memory
figures are not inflated by the cells before it; `--isolation none` runs all
cells in this process (faster; peaks then include earlier cells' leftovers).
This is a benchmark, not a test: it prints a markdown table, writes it to
`--out` with `.md`, writes every number (with machine info) to `--out` as
JSON, and never fails on a missed target.
"""

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from machine import machine_info
from realnvp_moons import (
    LOG_SCALE_CLAMP,
    SAMPLE_SIZE,
    BuiltinRealNVP,
    EpochTimer,
    _shift_and_log_scale_fn,
    compiled_fns,
    summarise,
)

from tfp_flows import datasets, flows
from tfp_flows.layers import MADE, MLP, ScaleAndShiftLayer, ShiftAndLogScaleNetwork
from tfp_flows.training import cosine_adam

tfb = tfp.bijectors
tfd = tfp.distributions

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TOY_DATASETS = ("moons", "checkerboard", "8gaussians")
TOY_FLOWS = ("realnvp", "nsf", "maf", "planar")
DIGITS_FLOWS = ("realnvp", "glow")
DATASETS = (*TOY_DATASETS, "digits")
FLOWS = ("realnvp", "nsf", "maf", "planar", "glow")
SYSTEMS = ("tfp_flows", "tfp_builtin")

# The CLI's recipe on the 2D toys (20k train / 5k test): cosine decay from 2e-3,
# batch 512, 10 steps per compiled call, standardised data.
TOY_RECIPE = dict(num_train=20000, num_test=5000, batch_size=512, learning_rate=2e-3)
# image_bits_per_dim.py's on digits (1500 train / 297 test), on fresh
# dequantisation noise every pass (datasets.dequantizing_pipeline).
DIGITS_RECIPE = dict(batch_size=128, learning_rate=1e-3)
DIGITS_SHAPE, DIGITS_RANGE = (8, 8, 1), 17.0
DEFAULT_TOY_STEPS = 2000
DEFAULT_DIGITS_STEPS = 1000
QUICK_TOY_STEPS, QUICK_DIGITS_STEPS = 120, 36  # 3 epochs each
STEPS_PER_EXECUTION = 10

# The same architecture for both systems, passed explicitly so that a change of
# a library default cannot desynchronise them.
ARCHITECTURES = {
    "realnvp": dict(num_layers=8, hidden_units=(64, 64)),
    "nsf": dict(num_layers=8, num_bins=8, bound=3.0, hidden_units=(64, 64)),
    "maf": dict(num_layers=5, hidden_units=(64, 64)),
    "planar": dict(num_layers=16),
    "glow": dict(levels=2, steps_per_level=4, hidden_channels=32),
}
DESCRIPTIONS = {
    "realnvp": "8 affine couplings alternating halves, MLP 64-64, log-scale 3·tanh(s/3)",
    "nsf": "8 rational-quadratic spline couplings (8 bins on [-3, 3]), MLP 64-64",
    "maf": "5 MADE steps 64-64, reversed between steps, log-scale 3·tanh(s/3)",
    "planar": "16 planar steps",
    "glow": "multi-scale Glow, 2 levels × 4 steps, ResNet 32 channels, logit step",
}
BUILTIN_NAMES = {
    "realnvp": "tfb.RealNVP",
    "nsf": "tfb.RealNVP + tfb.RationalQuadraticSpline",
    "maf": "tfb.MaskedAutoregressiveFlow",
}
NOT_AVAILABLE = {
    "planar": "TFP has no planar-flow bijector.",
    "glow": "tfb.Glow builds its coupling networks as tf_keras (Keras 2) layers and its "
    "ActNorm and 1×1-convolution parameters as raw tf.Variables inside the bijector: Keras "
    "3's fit tracks neither, so they would never train (STACK.md, TFP#1439).",
}

TRUE_ENTROPY = {"moons": 0.290, "checkerboard": 3.466, "8gaussians": 2.840}  # nats
TARGET_NLL = {"moons": 0.31, "checkerboard": 3.49, "8gaussians": 2.86}
TARGET_RATIO = 1.5  # ours / TFP, train and log_prob samples/s
UNIFORM_BITS_PER_DIM = math.log2(DIGITS_RANGE)
MEMORY_NOTE = (
    "Peak RSS growth: how far one system raises the process's peak resident set (VmHWM, "
    "reset through /proc/self/clear_refs after gc and malloc_trim) above the resident set "
    "before it: the larger of its build + first (tracing) epoch's peak growth, and the memory "
    "that phase kept plus its evaluation's peak growth (tracing log_prob and sample, 5000-point "
    "calls). It counts weights, optimizer state, activations, traced graphs and the runtime's "
    "one-off allocations for that model; memory TF had already reserved and reuses (e.g. from "
    "the system measured before it in the same process) is not counted again."
)


def cells(dataset_names=DATASETS, flow_names=FLOWS):
    """The (dataset, flow) cells of the matrix within the given subsets, in run order."""
    grid = [(d, f) for d in TOY_DATASETS for f in TOY_FLOWS] + [("digits", f) for f in DIGITS_FLOWS]
    return [(d, f) for d, f in grid if d in dataset_names and f in flow_names]


# --- TFP's built-in flows, in a Keras model that owns our networks ------------


class BuiltinFlow(keras.Model):
    """A flow of TFP's built-in bijectors whose networks (Keras 3 layers) this model owns.

    `steps` are bijectors base → data that call `networks`; `standardize`
    (training data) adds tfp_flows' fixed standardising last step (a
    `tfb.Shift` and `tfb.Scale`). Trained and evaluated exactly as
    realnvp_moons.py's `BuiltinRealNVP`, whose loop it shares.
    """

    def __init__(self, networks, steps, dim, standardize=None, **kwargs):
        super().__init__(**kwargs)
        self.networks = networks
        self.loss_tracker = keras.metrics.Mean(name="loss")
        if standardize is not None:
            last = ScaleAndShiftLayer.from_data(standardize, name="standardize")
            last.build((None, dim))
            steps = [*steps, last.bijector]
        base = tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=[dim])
        self.distribution = tfd.TransformedDistribution(base, tfb.Chain(steps[::-1]))
        self.built = True

    call = BuiltinRealNVP.call
    metrics = BuiltinRealNVP.metrics
    train_step = BuiltinRealNVP.train_step


def _built(network, input_size):
    network.build((None, input_size))
    return network


def _swap_halves(dim):
    if dim % 2:
        raise ValueError(f"the built-in couplings here need an even event size, got {dim}.")
    return tfb.Permute(list(range(dim // 2, dim)) + list(range(dim // 2)))


def builtin_realnvp(dim, standardize, num_layers, hidden_units):
    """`tfb.RealNVP` couplings, each followed by a swap of the halves (cf. `BuiltinRealNVP`).

    The swap (not a reversal, which is the same only for dim 2) makes coupling
    i condition on the same half, in the same order, as tfp_flows' coupling i.
    """
    half = dim // 2
    networks = [
        _built(ShiftAndLogScaleNetwork(dim - half, hidden_units, name=f"net_{i}"), half)
        for i in range(num_layers)
    ]
    swap = _swap_halves(dim)
    steps = []
    for network in networks:
        fn = _shift_and_log_scale_fn(network)
        steps += [tfb.RealNVP(num_masked=half, shift_and_log_scale_fn=fn), swap]
    return BuiltinFlow(networks, steps, dim, standardize)


def _spline_fn(network, num_transformed, num_bins, bound, hidden_units):
    """bijector_fn for `tfb.RealNVP`: tfp_flows' spline parametrisation of the MLP's outputs.

    As `tfp_flows.layers.SplineCouplingLayer` and `bijectors.SplineCoupling`
    (min bin size and min slope 1e-3, raw widths and heights divided by √H).
    """
    min_bin_size = min_slope = 1e-3
    slope_offset = math.log(math.expm1(1.0 - min_slope))
    per_element = np.concatenate(
        [np.full(2 * num_bins, 1.0 / math.sqrt(hidden_units[-1])), np.ones(num_bins - 1)]
    )
    raw_scale = tf.constant(np.tile(per_element, num_transformed), tf.float32)
    span = 2.0 * bound - num_bins * min_bin_size

    def fn(x0, input_depth):
        raw = network(x0) * raw_scale
        raw = tf.reshape(raw, tf.concat([tf.shape(raw)[:-1], [num_transformed, -1]], 0))
        widths, heights, slopes = tf.split(raw, [num_bins, num_bins, num_bins - 1], axis=-1)
        return tfb.RationalQuadraticSpline(
            bin_widths=min_bin_size + span * tf.math.softmax(widths, axis=-1),
            bin_heights=min_bin_size + span * tf.math.softmax(heights, axis=-1),
            knot_slopes=min_slope + tf.math.softplus(slopes + slope_offset),
            range_min=-bound,
        )

    return fn


def builtin_nsf(dim, standardize, num_layers, num_bins, bound, hidden_units):
    """`tfb.RealNVP(bijector_fn=...)` spline couplings, halves swapped after each."""
    half = dim // 2
    networks = [
        _built(MLP((dim - half) * (3 * num_bins - 1), hidden_units, name=f"net_{i}"), half)
        for i in range(num_layers)
    ]
    swap = _swap_halves(dim)
    steps = []
    for network in networks:
        fn = _spline_fn(network, dim - half, num_bins, bound, hidden_units)
        steps += [tfb.RealNVP(num_masked=half, bijector_fn=fn), swap]
    return BuiltinFlow(networks, steps, dim, standardize)


def builtin_maf(dim, standardize, num_layers, hidden_units):
    """`tfb.MaskedAutoregressiveFlow` steps driven by tfp_flows' Keras 3 `MADE`, reversed between.

    (TFP's own `tfb.AutoregressiveNetwork` is a tf_keras layer, not trained under Keras 3.)
    """
    networks = [_built(MADE(hidden_units, name=f"made_{i}"), dim) for i in range(num_layers)]
    reverse = tfb.Permute(list(range(dim))[::-1])
    steps = []
    for i, network in enumerate(networks):
        if i:
            steps.append(reverse)
        # realnvp_moons' clamped (shift, log_scale) function; MAF passes no output_units.
        fn = _shift_and_log_scale_fn(network)
        steps.append(tfb.MaskedAutoregressiveFlow(lambda x, fn=fn: fn(x, None)))
    return BuiltinFlow(networks, steps, dim, standardize)


BUILTINS = {"realnvp": builtin_realnvp, "nsf": builtin_nsf, "maf": builtin_maf}


def build(system, flow, data):
    """A fresh model of `system` for `flow` on `data`, or None if the system has none."""
    architecture = ARCHITECTURES[flow]
    if flow == "glow":
        if system != "tfp_flows":
            return None
        return flows.glow(DIGITS_SHAPE, value_range=DIGITS_RANGE, **architecture)
    if system == "tfp_flows":
        # (MAF's steps clamp at the same 3, MaskedAutoregressiveLayer's default.)
        clamp = {"log_scale_clamp": LOG_SCALE_CLAMP} if flow == "realnvp" else {}
        return flows.FLOWS[flow](data.event_size, standardize=data.train, **architecture, **clamp)
    if flow not in BUILTINS:
        return None
    return BUILTINS[flow](data.event_size, data.train, **architecture)


# --- Data and training ----------------------------------------------------------


def load(dataset):
    if dataset == "digits":
        return datasets.load("digits", seed=0)
    return datasets.load(
        dataset, num_train=TOY_RECIPE["num_train"], num_test=TOY_RECIPE["num_test"], seed=0
    )


def as_events(flow, points):
    """Flat rows as the flow's events: images for Glow, vectors otherwise."""
    return points.reshape(-1, *DIGITS_SHAPE) if flow == "glow" else points


class Trainer:
    """One system's model, compiled with the cell's recipe, fitted one epoch at a time.

    2D toys: the arrays, shuffled by Keras, batches of 512. Digits: one pass of
    `datasets.dequantizing_pipeline` (fresh noise) per epoch, batches of 128.
    One epoch per `fit` call lets two systems' epochs alternate; the optimizer
    (and its cosine schedule) carries on across calls as in one long `fit`.
    """

    def __init__(self, model, flow, data, steps, seed, options):
        recipe = DIGITS_RECIPE if data.name == "digits" else TOY_RECIPE
        batch_size, self.num_examples = recipe["batch_size"], len(data.train)
        self.steps_per_epoch = math.ceil(self.num_examples / batch_size)
        self.epochs = max(2, round(steps / self.steps_per_epoch))
        model.compile(
            optimizer=cosine_adam(
                recipe["learning_rate"], self.epochs, self.num_examples, batch_size
            ),
            jit_compile=options.xla,
            steps_per_execution=options.steps_per_execution,
        )
        if data.name == "digits":
            counts = as_events(flow, data.train_counts)
            pipeline = datasets.dequantizing_pipeline(counts, batch_size=batch_size, seed=seed)
            self.source = dict(x=pipeline, shuffle=False)
        else:
            self.source = dict(x=data.train, batch_size=batch_size, shuffle=True)
        self.model, self.epoch_seconds, self.loss = model, [], math.nan

    def fit_epoch(self):
        timer, epoch = EpochTimer(), len(self.epoch_seconds)
        history = self.model.fit(
            **self.source, initial_epoch=epoch, epochs=epoch + 1, callbacks=[timer], verbose=0
        )
        self.epoch_seconds.append(timer.times[0])
        self.loss = float(history.history["loss"][-1])

    def figures(self):
        """Train samples/s over epochs 2..E (the first traces the step), and more."""
        later = self.epoch_seconds[1:]
        return {
            "train": self.num_examples * len(later) / sum(later),
            # The median epoch shrugs off load spikes from other processes.
            "train_median_epoch": self.num_examples / float(np.median(later)),
            "first_epoch_seconds": self.epoch_seconds[0],
            "train_seconds": sum(self.epoch_seconds),
            "steps": self.epochs * self.steps_per_epoch,
            "final_train_loss": self.loss,
        }


def interleaved_throughput(fns, size, warmup, calls):
    """Samples/s of each `fns[name]()` from the median of `calls` timed calls, taken in turns.

    Each round calls every function once, in an order that alternates between
    rounds, so that load from other processes hits all alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn().numpy()
    seconds = {name: [] for name in fns}
    names = list(fns)
    for call in range(calls):
        for name in names if call % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]().numpy()  # .numpy() waits for the result
            seconds[name].append(time.perf_counter() - start)
    return {name: size / float(np.median(times)) for name, times in seconds.items()}


def count_weights(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# --- Memory -----------------------------------------------------------------------


def _status_mib(field):
    """A VmHWM / VmRSS line of /proc/self/status in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def release_and_reset_peak():
    """Frees what can be freed, resets the peak RSS to the current RSS; returns the RSS."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back to the OS
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux ≥ 4.0: VmHWM := VmRSS
    return _status_mib("VmRSS")


# --- One cell -------------------------------------------------------------------------


def check_same_start(flow, data, seed, num_points=1000):
    """Whether both systems start alike with the same seed, and compute the same function.

    With the same seed: are all initial weights equal, and the initial log p
    on test points? The output layers start at zero, so the latter alone says
    little; hence also the largest log p difference after adding the same
    noise (σ = 0.01) to every weight of both.
    """
    models = {}
    for system in SYSTEMS:
        keras.utils.set_random_seed(seed)
        models[system] = build(system, flow, data)
    ours, theirs = models["tfp_flows"].trainable_weights, models["tfp_builtin"].trainable_weights
    shapes_match = [tuple(a.shape) for a in ours] == [tuple(b.shape) for b in theirs]
    same_weights = shapes_match and all(
        np.array_equal(a.numpy(), b.numpy()) for a, b in zip(ours, theirs)
    )
    points = tf.constant(data.test[:num_points])

    def largest_difference():
        a, b = (models[s].distribution.log_prob(points).numpy() for s in SYSTEMS)
        return float(np.max(np.abs(a - b))), float(np.max(np.abs(a)))

    initial, _ = largest_difference()
    perturbed, scale = math.nan, math.nan
    if shapes_match:
        rng = np.random.default_rng(seed)
        for a, b in zip(ours, theirs):
            noise = 0.01 * rng.standard_normal(a.shape).astype(np.float32)
            a.assign(a.numpy() + noise)
            b.assign(b.numpy() + noise)
        perturbed, scale = largest_difference()
    return {
        "same_initial_weights": bool(same_weights),
        "initial_log_prob_max_abs_diff": initial,
        "perturbed_log_prob_max_abs_diff": perturbed,
        "perturbed_log_prob_max_abs": scale,
        "equivalent": bool(same_weights and perturbed <= 1e-4 * max(1.0, scale)),
    }


def run_repeat(flow, data, seed, order, steps, options):
    """Trains and evaluates the systems (in `order`) with epochs and timed calls interleaved.

    Each system's build, first (tracing) epoch, and its evaluation's tracing
    run alone, each after freeing what can be freed and resetting the peak
    RSS: the growth of the peak in those phases is its memory
    (`peak_rss_growth_mib`, see MEMORY_NOTE). The timed epochs and
    calls then alternate between the systems, so that the load from other
    processes on a shared machine hits both alike.
    """
    models, runs = {}, {}
    # Every model first: setting the seed clears TF's caches of instantiated
    # functions, which would make the next call of a traced step retrace-slow.
    for system in order:
        rss_before = release_and_reset_peak()
        keras.utils.set_random_seed(seed)
        models[system] = build(system, flow, data)
        runs[system] = {"weights": count_weights(models[system])}
        runs[system]["build_rss_mib"] = _status_mib("VmRSS") - rss_before
    trainers = {}
    for system in order:
        rss_before = release_and_reset_peak()
        trainers[system] = Trainer(models[system], flow, data, steps, seed, options)
        trainers[system].fit_epoch()
        built = runs[system].pop("build_rss_mib")
        runs[system]["train_peak_rss_growth_mib"] = built + _status_mib("VmHWM") - rss_before
        runs[system]["train_retained_rss_mib"] = built + _status_mib("VmRSS") - rss_before
    for epoch in range(1, trainers[order[0]].epochs):
        for system in order if epoch % 2 == 0 else order[::-1]:
            trainers[system].fit_epoch()
    test = tf.constant(as_events(flow, data.test))
    # Digits has 297 test images: time log_prob on 5000 rows cycled from them.
    timing = tf.constant(as_events(flow, np.resize(data.test, (SAMPLE_SIZE, data.event_size))))
    log_probs, samples = {}, {}
    for system in order:
        run = runs[system]
        run.update(trainers[system].figures())
        rss_before = release_and_reset_peak()
        log_prob, sample = compiled_fns(trainers[system].model, system, options.xla)
        run["test_nll"] = -float(tf.reduce_mean(log_prob(test)))
        if data.name == "digits":
            run["test_bits_per_dim"] = run["test_nll"] / (data.event_size * math.log(2.0))
        log_probs[system] = lambda log_prob=log_prob: log_prob(timing)
        samples[system] = sample
        for fn in (log_probs[system], sample):
            fn().numpy()  # traces (the timed calls below warm up further)
        run["eval_peak_rss_growth_mib"] = _status_mib("VmHWM") - rss_before
        # As if alone: the larger of training's peak, and what training kept plus evaluation's.
        run["peak_rss_growth_mib"] = max(
            run["train_peak_rss_growth_mib"],
            run["train_retained_rss_mib"] + run["eval_peak_rss_growth_mib"],
        )
    calls = dict(warmup=options.warmup, calls=options.calls)
    for key, fns in (("log_prob", log_probs), ("sample", samples)):
        for system, rate in interleaved_throughput(fns, SAMPLE_SIZE, **calls).items():
            runs[system][key] = rate
    return runs


def run_cell(dataset, flow, index, options):
    """Every repeat of one cell; the cell's record."""
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    data = load(dataset)
    steps = options.digits_steps if dataset == "digits" else options.steps
    systems = [s for s in SYSTEMS if s == "tfp_flows" or flow in BUILTINS]
    record = {
        "dataset": dataset,
        "flow": flow,
        "description": DESCRIPTIONS[flow],
        "tfp_builtin": BUILTIN_NAMES.get(flow),
        "tfp_builtin_unavailable": NOT_AVAILABLE.get(flow),
    }
    if len(systems) == 2:
        record["same_start"] = check_same_start(flow, data, options.seed)
    runs = {system: [] for system in systems}
    orders = []
    for repeat in range(options.repeats):
        # Alternate which system goes first from cell to cell and repeat to repeat.
        order = systems if (index + repeat) % 2 == 0 else systems[::-1]
        orders.append(list(order))
        seed = options.seed + repeat
        for system, run in run_repeat(flow, data, seed, order, steps, options).items():
            runs[system].append(run)
            print(
                f"[{dataset} × {flow}, repeat {repeat + 1}/{options.repeats}] {system}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in run.items()),
                flush=True,
            )
    medians = {system: summarise(system_runs) for system, system_runs in runs.items()}
    record.update(
        steps=medians["tfp_flows"]["steps"],
        medians=medians,
        ratios=ratios(medians),
        runs=runs,
        orders=orders,
        cell_peak_rss_mib=_status_mib("VmHWM"),
        wall_seconds=time.perf_counter() - start,
        load_average=[load_start, os.getloadavg()[0]],  # 1-min, at the start and the end
    )
    return record


RATIO_KEYS = ("train", "train_median_epoch", "log_prob", "sample", "peak_rss_growth_mib")


def ratios(medians):
    """ours / TFP for each throughput (and for the memory growth), when TFP has the flow."""
    if "tfp_builtin" not in medians:
        return None
    ours, theirs = medians["tfp_flows"], medians["tfp_builtin"]
    return {key: ours[key] / theirs[key] if theirs[key] else math.nan for key in RATIO_KEYS}


# --- The matrix: one subprocess per cell -------------------------------------------------


def _cell_argv(args, dataset, flow, index, out):
    argv = [sys.executable, os.path.abspath(__file__), "--cell", dataset, flow, str(index)]
    argv += ["--cell-out", out, "--steps", str(args.steps)]
    argv += ["--digits-steps", str(args.digits_steps), "--repeats", str(args.repeats)]
    argv += ["--seed", str(args.seed), "--steps-per-execution", str(args.steps_per_execution)]
    argv += ["--warmup", str(args.warmup), "--calls", str(args.calls)]
    return argv + (["--xla"] if args.xla else [])


def run_cell_in_subprocess(args, dataset, flow, index):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "cell.json")
        errors = os.path.join(folder, "stderr.txt")
        with open(errors, "w") as stderr:
            code = subprocess.call(
                _cell_argv(args, dataset, flow, index, out), env=env, stderr=stderr, cwd=ROOT
            )
        if code == 0 and os.path.isfile(out):
            with open(out) as f:
                return json.load(f)
        with open(errors) as f:
            tail = f.read()[-3000:]
    print(f"[{dataset} × {flow}] FAILED (exit code {code}):\n{tail}", flush=True)
    return {"dataset": dataset, "flow": flow, "error": f"exit code {code}", "stderr": tail}


def run_matrix(args, after_each=None):
    """Every selected cell; `after_each(records)` runs after each, e.g. to save progress."""
    records, start = [], time.perf_counter()
    todo = cells(args.datasets, args.flows)
    for index, (dataset, flow) in enumerate(todo):
        print(
            f"--- cell {index + 1}/{len(todo)}: {dataset} × {flow} "
            f"({(time.perf_counter() - start) / 60:.1f} min elapsed, "
            f"load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        if args.isolation == "cell":
            records.append(run_cell_in_subprocess(args, dataset, flow, index))
        else:
            try:
                records.append(run_cell(dataset, flow, index, args))
            except Exception as error:  # noqa: BLE001 - a benchmark reports and goes on
                print(f"[{dataset} × {flow}] FAILED: {error!r}", flush=True)
                records.append({"dataset": dataset, "flow": flow, "error": repr(error)})
        if after_each:
            after_each(records)
    return records


def targets(records):
    """Every target of the issue, per cell: value, target, met (never raises)."""
    checks = []
    for record in records:
        if "error" in record:
            continue
        cell = f"{record['dataset']} × {record['flow']}"
        if record["dataset"] in TARGET_NLL:  # a target for tfp_flows; TFP's NLL is context
            value = record["medians"]["tfp_flows"]["test_nll"]
            checks.append(
                dict(
                    cell=cell,
                    what="tfp_flows test NLL (nats)",
                    value=value,
                    target=f"<= {TARGET_NLL[record['dataset']]}",
                    met=bool(value <= TARGET_NLL[record["dataset"]]),
                )
            )
        for key in ("train", "log_prob"):
            if record["ratios"]:
                value = record["ratios"][key]
                checks.append(
                    dict(
                        cell=cell,
                        what=f"{key} samples/s, tfp_flows / TFP",
                        value=value,
                        target=f">= {TARGET_RATIO}",
                        met=bool(value >= TARGET_RATIO),
                    )
                )
    return checks


# --- Report -------------------------------------------------------------------------------


def _rate(value):
    if not math.isfinite(value):
        return "NaN"
    return f"{value / 1e3:,.0f}k" if value >= 1e4 else f"{value / 1e3:.2f}k"


def _quality(record, median):
    if record["dataset"] == "digits":
        return f"{median['test_bits_per_dim']:.3f} b/d"
    return f"{median['test_nll']:.3f}"


def table(records):
    lines = [
        "| dataset | flow | system | weights | train samples/s | log_prob samples/s "
        "| sample samples/s | test NLL | peak RSS growth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        cell = f"| {record['dataset']} | {record['flow']} "
        if "error" in record:
            lines.append(cell + f"| FAILED: {record['error']} | | | | | | |")
            continue
        for system, median in record["medians"].items():
            name = "tfp_flows" if system == "tfp_flows" else record["tfp_builtin"]
            lines.append(
                cell + f"| {name} | {int(median['weights']):,} | {_rate(median['train'])} "
                f"| {_rate(median['log_prob'])} | {_rate(median['sample'])} "
                f"| {_quality(record, median)} | {median['peak_rss_growth_mib']:.0f} MiB |"
            )
        r = record["ratios"]
        if r is None:
            lines.append(cell + "| TFP: n/a | | | | | | |")
        else:
            lines.append(
                cell + f"| **ratio ours / TFP** | | **{r['train']:.2f}×** "
                f"| **{r['log_prob']:.2f}×** | {r['sample']:.2f}× | "
                f"| {r['peak_rss_growth_mib']:.2f}× |"
            )
    return "\n".join(lines)


def markdown(report):
    config, machine = report["config"], report["machine"]
    lines = [
        "## Performance matrix: tfp_flows vs TFP's built-in flows",
        "",
        f"Machine: {machine['cpu_count']} cores, {machine['processor']}, {machine['platform']}; "
        f"TF {machine['tensorflow']}, TFP {machine['tensorflow_probability']}, "
        f"Keras {machine['keras']}, tfp_flows {machine['tfp_flows']}; load average "
        f"{machine['load_average_start'][0]:.1f} at the start, "
        f"{machine['load_average_end'][0]:.1f} at the end. "
        f"Wall time {report['wall_seconds'] / 60:.1f} min.",
        "",
        f"2D toys (20k train / 5k test): {config['toy_steps_run'] or 'no'} steps, batch 512, "
        "Adam cosine-decayed from 2e-3, standardised data. Digits (1500 / 297): "
        f"{config['digits_steps_run'] or 'no'} steps, batch 128, cosine from 1e-3, fresh "
        f"dequantisation noise every pass. steps_per_execution {config['steps_per_execution']}, "
        f"XLA {'on' if config['xla'] else 'off'}, median of {config['repeats']} repeat(s).",
        "",
        table(report["cells"]),
        "",
        "Test NLL in nats (true entropies: moons 0.290, checkerboard 3.466, 8gaussians "
        f"2.840); digits in bits/dim (uniform: {UNIFORM_BITS_PER_DIM:.3f}). Train samples/s "
        "leave out the first epoch (tracing); log_prob and sample samples/s are medians of "
        f"{config['calls']} compiled calls on 5000 points after {config['warmup']} warm-up "
        "calls. " + MEMORY_NOTE,
    ]
    unavailable = {r["flow"]: r.get("tfp_builtin_unavailable") for r in report["cells"]}
    for flow, reason in unavailable.items():
        if reason:
            lines.append(f"\nTFP n/a for {flow}: {reason}")
    lines += ["", targets_table(report), ""]
    met = sum(check["met"] for check in report["targets"])
    lines.append(
        f"{met} of {len(report['targets'])} targets met (reported, never enforced): test NLL "
        f"≤ {', '.join(f'{v} on {k}' for k, v in TARGET_NLL.items())}; tfp_flows / TFP ≥ "
        f"{TARGET_RATIO}× for train and log_prob samples/s. Same start: with the same seed "
        "both systems have identical initial weights, and after the same noise is added to "
        "every weight the largest |Δ log p| on 1000 test points is ≤ 1e-4·max(1, |log p|) "
        "(the JSON holds the differences)."
    )
    return "\n".join(lines)


def targets_table(report):
    """One row per cell: test NLL against its target, the two ratios, the same-start check."""
    lines = [
        "| dataset | flow | test NLL ours / TFP (target) | train ratio | log_prob ratio "
        "| same start |",
        "|---|---|---|---|---|---|",
    ]

    def mark(ok):
        return "✓" if ok else "✗"

    for record in report["cells"]:
        if "error" in record:
            continue
        medians, r = record["medians"], record["ratios"]
        nll = " / ".join(_quality(record, m) for m in medians.values())
        target = TARGET_NLL.get(record["dataset"])
        if target is not None:
            nll += f" (≤ {target} {mark(medians['tfp_flows']['test_nll'] <= target)})"
        ratio = {
            key: f"{r[key]:.3f}× {mark(r[key] >= TARGET_RATIO)}" if r else "n/a"
            for key in ("train", "log_prob")
        }
        start = record.get("same_start")
        lines.append(
            f"| {record['dataset']} | {record['flow']} | {nll} | {ratio['train']} "
            f"| {ratio['log_prob']} | {mark(start['equivalent']) if start else 'n/a'} |"
        )
    return "\n".join(lines)


# --- Main -------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--flows", nargs="+", choices=FLOWS, default=list(FLOWS))
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps per 2D cell (default {DEFAULT_TOY_STEPS}; --quick "
        f"{QUICK_TOY_STEPS}); rounded to whole epochs of 40 steps",
    )
    parser.add_argument(
        "--digits-steps",
        type=int,
        default=None,
        help=f"training steps per digits cell (default {DEFAULT_DIGITS_STEPS}; --quick "
        f"{QUICK_DIGITS_STEPS}); rounded to whole passes of 12 steps",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per system and cell (seed + r); medians"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat")
    parser.add_argument(
        "--quick", action="store_true", help="tiny budget, few timed calls, all cells in-process"
    )
    parser.add_argument(
        "--isolation",
        choices=("cell", "none"),
        default=None,
        help="'cell': each cell in a fresh subprocess, for clean memory peaks (default); "
        "'none': all cells in this process (the default with --quick)",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=STEPS_PER_EXECUTION,
        help="Keras compile(steps_per_execution=...) for both systems",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="jit_compile=True for training, log_prob and sampling, both systems",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls (default 3)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls (default 30)")
    parser.add_argument(
        "--out",
        default=os.path.join(HERE, "results", "matrix.json"),
        help="JSON report; the markdown table goes next to it with .md",
    )
    parser.add_argument(
        "--cell", nargs=3, metavar=("DATASET", "FLOW", "INDEX"), help=argparse.SUPPRESS
    )
    parser.add_argument("--cell-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick_defaults = dict(
        steps=QUICK_TOY_STEPS, digits_steps=QUICK_DIGITS_STEPS, warmup=1, calls=5, isolation="none"
    )
    full_defaults = dict(
        steps=DEFAULT_TOY_STEPS,
        digits_steps=DEFAULT_DIGITS_STEPS,
        warmup=3,
        calls=30,
        isolation="cell",
    )
    for key, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats < 1 or args.steps < 1 or args.digits_steps < 1 or args.calls < 1:
        parser.error("--repeats, --steps, --digits-steps and --calls must be positive")
    return args


def _steps_run(records, toy):
    steps = [r["steps"] for r in records if (r["dataset"] != "digits") == toy]
    return int(steps[0]) if steps else None


def build_report(args, info, records, wall_seconds):
    done = [r for r in records if "error" not in r]
    return {
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("cell", "cell_out")},
            "toy_steps_run": _steps_run(done, toy=True),
            "digits_steps_run": _steps_run(done, toy=False),
            "toy_recipe": TOY_RECIPE,
            "digits_recipe": DIGITS_RECIPE,
            "architectures": ARCHITECTURES,
            "descriptions": DESCRIPTIONS,
            "sample_size": SAMPLE_SIZE,
            "true_entropy_nats": TRUE_ENTROPY,
            "target_nll_nats": TARGET_NLL,
            "target_ratio": TARGET_RATIO,
        },
        "machine": {**info, "load_average_end": list(os.getloadavg())},
        "memory_note": MEMORY_NOTE,
        "cells": records,
        "targets": targets(records),
        "wall_seconds": wall_seconds,
    }


def write_report(report, out):
    """The JSON report at `out`, its markdown next to it (.md); returns the markdown."""
    text = markdown(report)
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(text + "\n")
    return text


def main(argv=None):
    args = parse_args(argv)
    if args.cell:  # a child process: one cell, its record to --cell-out
        dataset, flow, index = args.cell
        record = run_cell(dataset, flow, int(index), args)
        with open(args.cell_out, "w") as f:
            json.dump(record, f)
        return
    start = time.perf_counter()
    info = machine_info()

    def save(records):  # after every cell, so that an interrupted run keeps what it measured
        write_report(build_report(args, info, records, time.perf_counter() - start), args.out)

    records = run_matrix(args, after_each=save)
    text = write_report(build_report(args, info, records, time.perf_counter() - start), args.out)
    print("\n" + text)
    print(f"\nwrote {os.path.abspath(args.out)} and its .md")


if __name__ == "__main__":
    main()
