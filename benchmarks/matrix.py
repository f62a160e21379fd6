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
  through tfp_flows' own parametrisation (`RationalQuadraticSpline.tfp_bijector`);
- MAF → `tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=...)`, the event
  reversed between steps;
- planar, Glow → no usable TFP built-in (n/a; the reasons are in `NOT_AVAILABLE`).

The built-ins (`tfp_builtin.py`) run the very same Keras 3 networks as
tfp_flows' flow (`MLP`, `MADE`), owned by a Keras model, so with the same
seed both start from the same weights; each cell checks that, and that both
compute the same log p(x) once every weight is perturbed alike. What differs
is the implementation of the flow around the networks. Four systems train
in each cell that has a built-in, their epochs alternating:

- `tfp_flows` and `tfp_builtin`: Keras `fit` at the cell's recipe, the same
  optimizer, `--steps-per-execution` (10) for both: the main comparison,
  with log_prob, sampling and peak memory;
- `tfp_loop`: TFP's built-in trained by the loop a TFP user writes by hand,
  a plain `@tf.function` step (`tf.GradientTape`, `apply_gradients`) called
  per batch, at the same batch, steps and Adam schedule;
- `tfp_flows_defaults`: tfp_flows exactly as a user first writes it,
  `model.compile(keras.optimizers.Adam(1e-3))` and `model.fit(...)` (the
  library's defaults: `steps_per_execution="auto"`, the largest divisor of
  an epoch's steps up to 20 per compiled call; no XLA), same batch size.

Train samples/s of the last three are also reported over `tfp_loop`'s.
With `--zuko-python PYTHON` (an interpreter with torch and zuko), RealNVP
cells add zuko's `zuko.flows.RealNVP` at the same couplings and widths,
trained by a plain PyTorch loop in that interpreter right after each
repeat's `tfp_loop` (`--zuko-threads` sets torch's threads).

    cd /work/main
    python benchmarks/matrix.py --quick                       # smoke test, every cell
    python benchmarks/matrix.py                               # the matrix
    python benchmarks/matrix.py --datasets moons --flows realnvp maf --repeats 3

Each cell runs in a fresh subprocess (`--isolation cell`), so its peak-memory
figures are not inflated by the cells before it; `--isolation none` runs all
cells in this process (faster; peaks then include earlier cells' leftovers).
This is a benchmark, not a test: it prints a markdown table, writes it to
`--out` with `.md`, writes every number (with machine info) to `--out` as
JSON, and never fails on a missed target.
"""

import argparse
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
import tfp_builtin
from common import (
    EpochTimer,
    compiled_fns,
    machine_info,
    markdown_table,
    medians,
    rate,
    release_and_reset_peak,
    rss_mib,
    throughputs,
)
from common import write_report as write_json

from tfp_flows import datasets, flows
from tfp_flows.training import cosine_adam

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TOY_DATASETS = ("moons", "checkerboard", "8gaussians")
TOY_FLOWS = ("realnvp", "nsf", "maf", "planar")
DIGITS_FLOWS = ("realnvp", "glow")
DATASETS = (*TOY_DATASETS, "digits")
FLOWS = ("realnvp", "nsf", "maf", "planar", "glow")
# The comparison in Keras `fit`, both systems at the cell's recipe:
SYSTEMS = ("tfp_flows", "tfp_builtin")
# ... and against the loop a TFP user writes by hand: TFP's built-in flow trained by a
# plain @tf.function step at the same recipe, and tfp_flows at Keras' defaults
# (`compile(Adam(1e-3))`, `fit`: the library's own defaults, no XLA).
LOOP_SYSTEMS = ("tfp_loop", "tfp_flows_defaults")
OURS = ("tfp_flows", "tfp_flows_defaults")
LOG_SCALE_CLAMP = 3.0
SAMPLE_SIZE = 5000
SAMPLE_SEED = (1, 2)

# The CLI's recipe on the 2D toys (20k train / 5k test): cosine decay from 2e-3,
# batch 512, 10 steps per compiled call, standardised data.
TOY_RECIPE = dict(num_train=20000, num_test=5000, batch_size=512, learning_rate=2e-3)
# image_bits_per_dim.py's on digits (1500 train / 297 test), on fresh
# dequantisation noise every pass (datasets.dequantizing_pipeline).
DIGITS_RECIPE = dict(batch_size=128, learning_rate=1e-3)
DIGITS_SHAPE, DIGITS_RANGE = (8, 8, 1), 17.0
DEFAULT_TOY_STEPS = 2000
DEFAULT_DIGITS_STEPS = 1000
QUICK_TOY_STEPS, QUICK_DIGITS_STEPS = 80, 24  # 2 epochs each: one traces, one is timed
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
# --quick: the smallest flows that still run every code path (a smoke test; its
# figures mean nothing): most of a smoke run is tracing, which grows with depth.
QUICK_ARCHITECTURES = {
    "realnvp": dict(num_layers=2, hidden_units=(16,)),
    "nsf": dict(num_layers=2, num_bins=4, bound=3.0, hidden_units=(16,)),
    "maf": dict(num_layers=2, hidden_units=(16,)),
    "planar": dict(num_layers=2),
    "glow": dict(levels=1, steps_per_level=1, hidden_channels=8),
}
DESCRIPTIONS = {
    "realnvp": "8 affine couplings alternating halves, MLP 64-64, log-scale 3·tanh(s/3)",
    "nsf": "8 rational-quadratic spline couplings (8 bins on [-3, 3]), MLP 64-64",
    "maf": "5 MADE steps 64-64, reversed between steps, log-scale 3·tanh(s/3)",
    "planar": "16 planar steps",
    "glow": "multi-scale Glow, 2 levels × 4 steps, ResNet 32 channels, logit step",
}
NOT_AVAILABLE = {
    "planar": "TFP has no planar-flow bijector.",
    "glow": "tfb.Glow builds its coupling networks as tf_keras (Keras 2) layers and its "
    "ActNorm and 1×1-convolution parameters as raw tf.Variables inside the bijector: Keras "
    "3's fit tracks neither, so they would never train (STACK.md, TFP#1439).",
}

TRUE_ENTROPY = {"moons": 0.290, "checkerboard": 3.466, "8gaussians": 2.831}  # nats
TARGET_NLL = {"moons": 0.31, "checkerboard": 3.49, "8gaussians": 2.86}
TARGET_RATIO = 1.5  # ours / TFP, train samples/s (in fit, and over the hand-written loop)
TARGET_LOG_PROB = 2.0  # ours / TFP, log_prob samples/s at batch 5000
TARGET_ZUKO = 3.0  # tfp_flows at Keras' defaults / zuko's RealNVP, train samples/s
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


# --- The systems -----------------------------------------------------------------------

# TFP's built-in flow of each family (tfp_builtin.py): the builder, and its transformer.
BUILTINS = {
    "realnvp": (tfp_builtin.coupling_flow, "affine"),
    "nsf": (tfp_builtin.coupling_flow, "spline"),
    "maf": (tfp_builtin.autoregressive_flow, "affine"),
}


def architectures(quick=False):
    return QUICK_ARCHITECTURES if quick else ARCHITECTURES


def build(system, flow, data, quick=False):
    """A fresh model of `system` for `flow` on `data`, or None if the system has none.

    tfp_flows' systems (`tfp_flows`, `tfp_flows_defaults`) are the library's
    factory; TFP's (`tfp_builtin`, `tfp_loop`) the built-in flow around the
    same networks. Each system differs from its partner only in how it trains.
    """
    architecture = architectures(quick)[flow]
    if flow == "glow":
        if system not in OURS:
            return None
        return flows.glow(DIGITS_SHAPE, value_range=DIGITS_RANGE, **architecture)
    # (MAF's steps clamp at the same 3, the affine transformer's default.)
    clamp = {"log_scale_clamp": LOG_SCALE_CLAMP} if flow == "realnvp" else {}
    if system in OURS:
        return flows.FLOWS[flow](data.event_size, standardize=data.train, **architecture, **clamp)
    if flow not in BUILTINS:
        return None
    builder, transformer = BUILTINS[flow]
    return builder(data.event_size, transformer, standardize=data.train, **architecture, **clamp)


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
    """One system's model and training, run one epoch at a time (`fit_epoch`).

    The cell's recipe: 2D toys, the arrays shuffled, batches of 512; digits,
    one pass of `datasets.dequantizing_pipeline` (fresh noise) per epoch,
    batches of 128; Adam cosine-decayed over the whole run
    (`training.cosine_adam`). One epoch at a time lets the systems' epochs
    alternate; the optimizer (and its schedule) carries on across epochs as
    in one long run. How the system trains:

    - `tfp_flows`, `tfp_builtin`: Keras `fit` at the recipe, compiled with
      `--steps-per-execution` and `--xla`;
    - `tfp_flows_defaults`: Keras `fit` as a user writes it, `compile(Adam(1e-3))`
      (the library's defaults otherwise: steps_per_execution "auto", no XLA), same batches;
    - `tfp_loop`: no Keras loop; the recipe's optimizer and batches and the
      `@tf.function` step of `tfp_builtin.tf_function_step`, called once per
      batch from Python over a `tf.data` pipeline.
    """

    def __init__(self, system, model, flow, data, steps, seed, options):
        recipe = DIGITS_RECIPE if data.name == "digits" else TOY_RECIPE
        batch_size, self.num_examples = recipe["batch_size"], len(data.train)
        self.steps_per_epoch = math.ceil(self.num_examples / batch_size)
        self.epochs = max(2, round(steps / self.steps_per_epoch))
        optimizer = cosine_adam(recipe["learning_rate"], self.epochs, self.num_examples, batch_size)
        if data.name == "digits":
            counts = as_events(flow, data.train_counts)
            pipeline = datasets.dequantizing_pipeline(counts, batch_size=batch_size, seed=seed)
            self.source = dict(x=pipeline, shuffle=False)
        else:
            # The hand loop's batches: indices shuffled every epoch, rows gathered per
            # batch, as Keras' fit does with arrays (an element-wise shuffle buffer of
            # 20k points took 2-4x as long here): the loops differ, not the input.
            train = tf.constant(data.train)
            pipeline = (
                tf.data.Dataset.range(len(data.train))
                .shuffle(len(data.train), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size)
                .map(lambda rows: tf.gather(train, rows))
                .prefetch(tf.data.AUTOTUNE)
            )
            self.source = dict(x=data.train, batch_size=batch_size, shuffle=True)
        self.model, self.epoch_seconds, self.loss = model, [], math.nan
        if system == "tfp_loop":
            self.step = tfp_builtin.tf_function_step(model, optimizer, jit_compile=options.xla)
            self.batches = pipeline
        else:
            self.step = None
            if system == "tfp_flows_defaults":
                model.compile(keras.optimizers.Adam(1e-3))
            else:
                model.compile(
                    optimizer=optimizer,
                    jit_compile=options.xla,
                    steps_per_execution=options.steps_per_execution,
                )

    def fit_epoch(self):
        if self.step is not None:
            start = time.perf_counter()
            losses = [self.step(batch) for batch in self.batches]
            self.loss = float(tf.reduce_mean(tf.stack(losses)))  # waits for the last step
            self.epoch_seconds.append(time.perf_counter() - start)
            return
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


def count_weights(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# --- zuko (PyTorch), in its own interpreter -------------------------------------------

# zuko's RealNVP at the cell's architecture and recipe, trained by the loop a PyTorch user
# writes (the training rows reshuffled every epoch, Adam cosine-annealed per step), on the
# same standardised rows; train samples/s over epochs 2..E, log_prob samples/s at batch
# 5000 (median of timed calls under torch.no_grad()), test NLL in data units.
ZUKO_SCRIPT = r"""
import json, math, statistics, sys, time
import numpy as np
import torch
import zuko

config = json.loads(sys.argv[1])
if config["threads"]:
    torch.set_num_threads(config["threads"])
torch.manual_seed(config["seed"])
train = np.load(config["train"]).astype(np.float32)
test = np.load(config["test"]).astype(np.float32)
mean, std = train.mean(0), train.std(0)
scale = torch.tensor(std)
standard = lambda a: torch.tensor((a - mean) / std)
x_train, x_test = standard(train), standard(test)
flow = zuko.flows.RealNVP(
    features=x_train.shape[1],
    transforms=config["num_layers"],
    hidden_features=tuple(config["hidden_units"]),
)
batch, epochs = config["batch_size"], config["epochs"]
steps_per_epoch = math.ceil(len(x_train) / batch)
optimizer = torch.optim.Adam(flow.parameters(), lr=config["learning_rate"])
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
seconds = []
for epoch in range(epochs):
    start = time.perf_counter()
    order = torch.randperm(len(x_train))
    for i in range(steps_per_epoch):
        loss = -flow().log_prob(x_train[order[i * batch : (i + 1) * batch]]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    seconds.append(time.perf_counter() - start)
log_det = float(torch.log(scale).sum())
timing = torch.tensor(np.resize(x_test.numpy(), (config["sample_size"], x_test.shape[1])))
with torch.no_grad():
    test_nll = float(-flow().log_prob(x_test).mean()) + log_det
    for _ in range(config["warmup"]):
        flow().log_prob(timing)
    calls = []
    for _ in range(config["calls"]):
        start = time.perf_counter()
        flow().log_prob(timing)
        calls.append(time.perf_counter() - start)
later = seconds[1:]
print(json.dumps(dict(
    weights=sum(p.numel() for p in flow.parameters()),
    train=len(x_train) * len(later) / sum(later),
    train_median_epoch=len(x_train) / statistics.median(later),
    first_epoch_seconds=seconds[0],
    train_seconds=sum(seconds),
    steps=epochs * steps_per_epoch,
    final_train_loss=float(loss.detach()) + log_det,
    test_nll=test_nll,
    log_prob=config["sample_size"] / statistics.median(calls),
    torch=torch.__version__,
    zuko=zuko.__version__,
    threads=torch.get_num_threads(),
)))
"""


def run_zuko(python, flow, data, steps, seed, options):
    """zuko's RealNVP on the cell's data and recipe in `python` (an interpreter with torch and
    zuko); its figures, or {"error": ...} if it could not run."""
    architecture = architectures(options.quick)[flow]
    steps_per_epoch = math.ceil(len(data.train) / TOY_RECIPE["batch_size"])
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: os.path.join(folder, f"{name}.npy") for name in ("train", "test")}
        np.save(paths["train"], data.train)
        np.save(paths["test"], data.test)
        config = dict(
            **paths,
            seed=seed,
            num_layers=architecture["num_layers"],
            hidden_units=list(architecture["hidden_units"]),
            batch_size=TOY_RECIPE["batch_size"],
            learning_rate=TOY_RECIPE["learning_rate"],
            epochs=max(2, round(steps / steps_per_epoch)),
            sample_size=SAMPLE_SIZE,
            warmup=options.warmup,
            calls=options.calls,
            threads=options.zuko_threads,
        )
        try:
            result = subprocess.run(
                [python, "-c", ZUKO_SCRIPT, json.dumps(config)],
                capture_output=True,
                text=True,
                timeout=1800,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return {"error": repr(error)}
    if result.returncode != 0:
        return {"error": f"exit code {result.returncode}: {result.stderr[-1500:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- One cell -------------------------------------------------------------------------


def check_same_start(flow, data, seed, quick=False, num_points=1000):
    """Whether both systems, built with the same seed, start alike and compute the same function
    (`tfp_builtin.same_start`)."""
    models = {}
    for system in SYSTEMS:
        keras.utils.set_random_seed(seed)
        models[system] = build(system, flow, data, quick)
    return tfp_builtin.same_start(
        models["tfp_flows"], models["tfp_builtin"], data.test[:num_points], seed
    )


def run_repeat(flow, data, seed, order, steps, options):
    """Trains and evaluates the systems (in `order`) with epochs and timed calls interleaved.

    `order` holds the two `SYSTEMS` (or tfp_flows alone) and then the
    `LOOP_SYSTEMS`, if run. Each of the two systems' build, first (tracing)
    epoch, and its evaluation's tracing run alone, each after freeing what
    can be freed and resetting the peak RSS: the growth of the peak in those
    phases is its memory (`peak_rss_growth_mib`, see MEMORY_NOTE). The timed
    epochs and calls then alternate between the systems, so that the load
    from other processes on a shared machine hits all alike. The loop
    systems are measured for training (and test NLL) only: their log_prob
    and sample are those of the system they share a model class with.
    """
    models, runs = {}, {}
    measured = [system for system in order if system in SYSTEMS]
    # Every model first: setting the seed clears TF's caches of instantiated
    # functions, which would make the next call of a traced step retrace-slow.
    for system in order:
        rss_before = release_and_reset_peak()
        keras.utils.set_random_seed(seed)
        models[system] = build(system, flow, data, options.quick)
        runs[system] = {"weights": count_weights(models[system])}
        runs[system]["build_rss_mib"] = rss_mib()[0] - rss_before
    trainers = {}
    for system in order:
        rss_before = release_and_reset_peak()
        trainers[system] = Trainer(system, models[system], flow, data, steps, seed, options)
        trainers[system].fit_epoch()
        built = runs[system].pop("build_rss_mib")
        if system in measured:
            resident, peak = rss_mib()
            runs[system]["train_peak_rss_growth_mib"] = built + peak - rss_before
            runs[system]["train_retained_rss_mib"] = built + resident - rss_before
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
        log_prob, sample = compiled_fns(
            trainers[system].model, SAMPLE_SIZE, SAMPLE_SEED, options.xla
        )
        run["test_nll"] = -float(tf.reduce_mean(log_prob(test)))
        if data.name == "digits":
            run["test_bits_per_dim"] = run["test_nll"] / (data.event_size * math.log(2.0))
        if system not in measured:
            continue
        log_probs[system] = lambda log_prob=log_prob: log_prob(timing)
        samples[system] = sample
        for fn in (log_probs[system], sample):
            fn().numpy()  # traces (the timed calls below warm up further)
        run["eval_peak_rss_growth_mib"] = rss_mib()[1] - rss_before
        # As if alone: the larger of training's peak, and what training kept plus evaluation's.
        run["peak_rss_growth_mib"] = max(
            run["train_peak_rss_growth_mib"],
            run["train_retained_rss_mib"] + run["eval_peak_rss_growth_mib"],
        )
    calls = dict(warmup=options.warmup, calls=options.calls)
    for key, fns in (("log_prob", log_probs), ("sample", samples)):
        for system, value in throughputs(fns, SAMPLE_SIZE, **calls).items():
            runs[system][key] = value
    return runs


def run_cell(dataset, flow, index, options):
    """Every repeat of one cell; the cell's record."""
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    data = load(dataset)
    steps = options.digits_steps if dataset == "digits" else options.steps
    has_builtin = flow in BUILTINS
    systems = list(SYSTEMS) if has_builtin else ["tfp_flows"]
    loop_systems = list(LOOP_SYSTEMS) if has_builtin and not options.fit_only else []
    record = {
        "dataset": dataset,
        "flow": flow,
        "description": DESCRIPTIONS[flow]
        if not options.quick
        else f"smoke-test size: {QUICK_ARCHITECTURES[flow]}",
        "tfp_builtin": tfp_builtin.NAMES[flow] if has_builtin else None,
        "tfp_builtin_unavailable": NOT_AVAILABLE.get(flow),
    }
    if has_builtin:
        record["same_start"] = check_same_start(flow, data, options.seed, options.quick)
    # zuko (PyTorch) RealNVP beside the hand-written TFP loop, given an interpreter with it.
    zuko = bool(options.zuko_python and flow == "realnvp" and loop_systems)
    runs = {system: [] for system in systems + loop_systems + (["zuko"] if zuko else [])}
    orders = []
    for repeat in range(options.repeats):
        # Alternate which system goes first from cell to cell and repeat to repeat.
        flip = (index + repeat) % 2 == 1
        order = (systems[::-1] if flip else systems) + (
            loop_systems[::-1] if flip else loop_systems
        )
        orders.append(list(order))
        seed = options.seed + repeat
        repeat_runs = run_repeat(flow, data, seed, order, steps, options)
        if zuko:  # right after the same repeat's TFP loop, in its own process
            zuko_run = run_zuko(options.zuko_python, flow, data, steps, seed, options)
            if "error" in zuko_run:
                print(f"[{dataset} × {flow}] zuko FAILED: {zuko_run['error']}", flush=True)
                record["zuko_error"], zuko = zuko_run["error"], False
                runs.pop("zuko")
            else:
                versions = {key: zuko_run.pop(key) for key in ("torch", "zuko", "threads")}
                record["zuko_versions"], repeat_runs["zuko"] = versions, zuko_run
        for system, run in repeat_runs.items():
            runs[system].append(run)
            print(
                f"[{dataset} × {flow}, repeat {repeat + 1}/{options.repeats}] {system}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in run.items()),
                flush=True,
            )
    summary = {system: medians(system_runs) for system, system_runs in runs.items()}
    main = {system: summary[system] for system in systems}
    record.update(
        steps=main["tfp_flows"]["steps"],
        medians=main,
        ratios=ratios(main),
        runs=runs,
        orders=orders,
        cell_peak_rss_mib=rss_mib()[1],
        wall_seconds=time.perf_counter() - start,
        load_average=[load_start, os.getloadavg()[0]],  # 1-min, at the start and the end
    )
    if loop_systems:
        record["loop"] = loop_comparison(summary)
    return record


RATIO_KEYS = ("train", "train_median_epoch", "log_prob", "sample", "peak_rss_growth_mib")


def ratios(medians):
    """ours / TFP for each throughput (and for the memory growth), when TFP has the flow."""
    if "tfp_builtin" not in medians:
        return None
    ours, theirs = medians["tfp_flows"], medians["tfp_builtin"]
    return {key: ours[key] / theirs[key] if theirs[key] else math.nan for key in RATIO_KEYS}


LOOP_RATIO_KEYS = ("train", "train_median_epoch")


def loop_comparison(summary):
    """The hand-written TFP loop's figures, and every other system's train rates over it."""
    loop = summary["tfp_loop"]
    others = ("tfp_flows", "tfp_flows_defaults", "tfp_builtin")
    comparison = {
        "medians": {system: summary[system] for system in LOOP_SYSTEMS},
        "ratios": {
            system: {key: summary[system][key] / loop[key] for key in LOOP_RATIO_KEYS}
            for system in others + (("zuko",) if "zuko" in summary else ())
        },
    }
    if "zuko" in summary:
        zuko = summary["zuko"]
        comparison["medians"]["zuko"] = zuko
        comparison["over_zuko"] = {
            system: {key: summary[system][key] / zuko[key] for key in LOOP_RATIO_KEYS}
            for system in ("tfp_flows_defaults", "tfp_flows", "tfp_loop")
        }
    return comparison


# --- The matrix: one subprocess per cell -------------------------------------------------


def _cell_argv(args, dataset, flow, index, out):
    argv = [sys.executable, os.path.abspath(__file__), "--cell", dataset, flow, str(index)]
    argv += ["--cell-out", out, "--steps", str(args.steps)]
    argv += ["--digits-steps", str(args.digits_steps), "--repeats", str(args.repeats)]
    argv += ["--seed", str(args.seed), "--steps-per-execution", str(args.steps_per_execution)]
    argv += ["--warmup", str(args.warmup), "--calls", str(args.calls)]
    if args.zuko_python:
        argv += ["--zuko-python", args.zuko_python, "--zuko-threads", str(args.zuko_threads)]
    flags = [("--xla", args.xla), ("--fit-only", args.fit_only), ("--quick", args.quick)]
    return argv + [flag for flag, given in flags if given]


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


def _check(cell, what, value, target, met):
    return dict(cell=cell, what=what, value=value, target=target, met=bool(met))


def targets(records):
    """Every target of the issue, per cell: value, target, met (never raises)."""
    checks = []
    for record in records:
        if "error" in record:
            continue
        cell = f"{record['dataset']} × {record['flow']}"
        if record["dataset"] in TARGET_NLL:  # a target for tfp_flows; TFP's NLL is context
            value, target = (
                record["medians"]["tfp_flows"]["test_nll"],
                TARGET_NLL[record["dataset"]],
            )
            checks.append(
                _check(cell, "tfp_flows test NLL (nats)", value, f"<= {target}", value <= target)
            )
        if record["ratios"]:
            for key, goal in (("train", TARGET_RATIO), ("log_prob", TARGET_LOG_PROB)):
                value = record["ratios"][key]
                what = f"{key} samples/s, tfp_flows / TFP"
                checks.append(_check(cell, what, value, f">= {goal}", value >= goal))
        if "loop" in record:
            for system, what in LOOP_TARGETS.items():
                value = record["loop"]["ratios"][system]["train"]
                checks.append(
                    _check(cell, what, value, f">= {TARGET_RATIO}", value >= TARGET_RATIO)
                )
            if "over_zuko" in record["loop"]:
                value = record["loop"]["over_zuko"]["tfp_flows_defaults"]["train"]
                what = "train samples/s, tfp_flows at Keras defaults / zuko"
                checks.append(_check(cell, what, value, f">= {TARGET_ZUKO}", value >= TARGET_ZUKO))
    return checks


LOOP_TARGETS = {
    "tfp_flows_defaults": "train samples/s, tfp_flows at Keras defaults / TFP @tf.function loop",
    "tfp_flows": "train samples/s, tfp_flows / TFP @tf.function loop",
}


# --- Report -------------------------------------------------------------------------------


def _quality(record, median):
    if record["dataset"] == "digits":
        return f"{median['test_bits_per_dim']:.3f} b/d"
    return f"{median['test_nll']:.3f}"


def _mark(ok):
    return "✓" if ok else "✗"


def table(records):
    """Every system of every cell, and the ratios ours / TFP of the two in Keras `fit`."""
    rows = []
    for record in records:
        cell = [record["dataset"], record["flow"]]
        if "error" in record:
            rows.append(cell + [f"FAILED: {record['error']}"] + [""] * 6)
            continue
        for system, median in record["medians"].items():
            rows.append(
                cell
                + [
                    "tfp_flows" if system == "tfp_flows" else record["tfp_builtin"],
                    f"{int(median['weights']):,}",
                    rate(median["train"]),
                    rate(median["log_prob"]),
                    rate(median["sample"]),
                    _quality(record, median),
                    f"{median['peak_rss_growth_mib']:.0f} MiB",
                ]
            )
        r = record["ratios"]
        if r is None:
            rows.append(cell + ["TFP: n/a"] + [""] * 6)
        else:
            rows.append(
                cell
                + [
                    "**ratio ours / TFP**",
                    "",
                    f"**{r['train']:.2f}×**",
                    f"**{r['log_prob']:.2f}×**",
                    f"{r['sample']:.2f}×",
                    "",
                    f"{r['peak_rss_growth_mib']:.2f}×",
                ]
            )
    header = ["dataset", "flow", "system", "weights", "train samples/s", "log_prob samples/s"]
    return markdown_table(header + ["sample samples/s", "test NLL", "peak RSS growth"], rows)


def loop_table(records):
    """Train samples/s against the hand-written TFP loop, one row per cell that has it."""
    rows = []
    for record in records:
        if "loop" not in record:
            continue
        loop, r = record["loop"]["medians"], record["loop"]["ratios"]
        defaults = r["tfp_flows_defaults"]["train"]
        rows.append(
            [
                record["dataset"],
                record["flow"],
                rate(loop["tfp_loop"]["train"]),
                rate(loop["tfp_flows_defaults"]["train"]),
                f"**{defaults:.2f}×** {_mark(defaults >= TARGET_RATIO)}",
                f"{r['tfp_flows']['train']:.2f}×",
                f"{r['tfp_builtin']['train']:.2f}×",
                f"{r['tfp_flows_defaults']['train_median_epoch']:.2f}×",
                " / ".join(_quality(record, loop[s]) for s in ("tfp_loop", "tfp_flows_defaults")),
            ]
            + _zuko_columns(record)
        )
    header = [
        "dataset",
        "flow",
        "TFP loop train samples/s",
        "tfp_flows defaults train samples/s",
        "defaults / loop",
        "tfp_flows (recipe) / loop",
        "TFP in fit / loop",
        "defaults / loop, median epoch",
        "test NLL loop / defaults",
        "zuko train samples/s (test NLL)",
        "zuko / loop",
        "defaults / zuko",
    ]
    return markdown_table(header, rows)


def _zuko_columns(record):
    loop = record["loop"]
    if "zuko" not in loop["medians"]:
        return ["—"] * 3
    zuko, over_zuko = loop["medians"]["zuko"], loop["over_zuko"]
    return [
        f"{rate(zuko['train'])} ({zuko['test_nll']:.3f})",
        f"{loop['ratios']['zuko']['train']:.2f}×",
        f"**{over_zuko['tfp_flows_defaults']['train']:.2f}×**",
    ]


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
        f"2.831); digits in bits/dim (uniform: {UNIFORM_BITS_PER_DIM:.3f}). Train samples/s "
        "leave out the first epoch (tracing); log_prob and sample samples/s are medians of "
        f"{config['calls']} compiled calls on 5000 points after {config['warmup']} warm-up "
        "calls. " + MEMORY_NOTE,
    ]
    unavailable = {r["flow"]: r.get("tfp_builtin_unavailable") for r in report["cells"]}
    for flow, reason in unavailable.items():
        if reason:
            lines.append(f"\nTFP n/a for {flow}: {reason}")
    if any("loop" in record for record in report["cells"]):
        lines += [
            "",
            "### Against the loop a TFP user writes by hand",
            "",
            loop_table(report["cells"]),
            "",
            "TFP loop: the same TFP built-in flow and networks trained by a plain "
            "`@tf.function` step (`tf.GradientTape`, `optimizer.apply_gradients`) called once "
            "per batch from Python, at the cell's batch, steps and Adam schedule. tfp_flows "
            "defaults: `model.compile(keras.optimizers.Adam(1e-3))` and `model.fit(...)` at "
            "the same batch size, nothing else set (the library's steps_per_execution "
            "'auto': up to 20 steps per compiled call; no XLA). tfp_flows "
            f"(recipe) and TFP in fit: the table above (steps_per_execution "
            f"{config['steps_per_execution']}). Target: defaults / loop ≥ {TARGET_RATIO}×.",
        ]
        if any("over_zuko" in record.get("loop", {}) for record in report["cells"]):
            lines.append(
                "\nzuko: `zuko.flows.RealNVP` (PyTorch) at the same couplings and hidden "
                "widths, trained in its own process right after the same repeat's TFP loop by "
                "a plain PyTorch loop (rows reshuffled every epoch, Adam cosine-annealed from "
                "the same rate, the same standardised rows and batch); its log_prob at batch "
                f"5000 under `torch.no_grad()`. Target: defaults / zuko ≥ {TARGET_ZUKO}×."
            )
    lines += ["", targets_table(report), ""]
    met = sum(check["met"] for check in report["targets"])
    lines.append(
        f"{met} of {len(report['targets'])} targets met (reported, never enforced): test NLL "
        f"≤ {', '.join(f'{v} on {k}' for k, v in TARGET_NLL.items())}; tfp_flows / TFP ≥ "
        f"{TARGET_RATIO}× for train and {TARGET_LOG_PROB}× for log_prob samples/s, and "
        f"{TARGET_RATIO}× for train samples/s "
        "against the TFP loop (tfp_flows at Keras defaults and at the recipe). Same start: "
        "with the same seed both systems have identical initial weights, and after the same "
        "noise is added to every weight the largest |Δ log p| on 1000 test points is "
        "≤ 1e-4·max(1, |log p|) (the JSON holds the differences)."
    )
    return "\n".join(lines)


def targets_table(report):
    """One row per cell: test NLL against its target, the ratios, the same-start check."""
    rows = []
    for record in report["cells"]:
        if "error" in record:
            continue
        medians, r = record["medians"], record["ratios"]
        nll = " / ".join(_quality(record, m) for m in medians.values())
        target = TARGET_NLL.get(record["dataset"])
        if target is not None:
            nll += f" (≤ {target} {_mark(medians['tfp_flows']['test_nll'] <= target)})"
        ratio = {
            key: f"{r[key]:.3f}× {_mark(r[key] >= goal)}" if r else "n/a"
            for key, goal in (("train", TARGET_RATIO), ("log_prob", TARGET_LOG_PROB))
        }
        loop = record.get("loop")
        if loop:
            value = loop["ratios"]["tfp_flows_defaults"]["train"]
            ratio["loop"] = f"{value:.3f}× {_mark(value >= TARGET_RATIO)}"
        start = record.get("same_start")
        rows.append(
            [
                record["dataset"],
                record["flow"],
                nll,
                ratio["train"],
                ratio["log_prob"],
                ratio.get("loop", "n/a"),
                _mark(start["equivalent"]) if start else "n/a",
            ]
        )
    header = ["dataset", "flow", "test NLL ours / TFP (target)", "train ratio", "log_prob ratio"]
    return markdown_table(header + ["defaults / TFP loop, train", "same start"], rows)


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
        "--quick",
        action="store_true",
        help="a smoke test: small flows, 2 epochs, few timed calls, all cells in-process",
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
        help="Keras compile(steps_per_execution=...) for tfp_flows and TFP in fit",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="jit_compile=True for training, log_prob and sampling (not for tfp_flows at "
        "Keras' defaults)",
    )
    parser.add_argument(
        "--fit-only",
        action="store_true",
        help="leave out the hand-written TFP loop and tfp_flows at Keras' defaults",
    )
    parser.add_argument(
        "--zuko-python",
        default=None,
        metavar="PYTHON",
        help="an interpreter with torch and zuko: adds zuko's RealNVP (PyTorch, its own "
        "process, after each repeat's TFP loop) to the RealNVP cells' loop comparison",
    )
    parser.add_argument(
        "--zuko-threads",
        type=int,
        default=0,
        help="torch.set_num_threads for zuko (default 0: torch's own default, one per core); "
        "on a loaded machine torch's threads wait on each other: 1 can be several times faster",
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
            "architectures": architectures(args.quick),
            "descriptions": DESCRIPTIONS,
            "sample_size": SAMPLE_SIZE,
            "true_entropy_nats": TRUE_ENTROPY,
            "target_nll_nats": TARGET_NLL,
            "target_ratio": TARGET_RATIO,
            "target_log_prob_ratio": TARGET_LOG_PROB,
            "target_zuko_ratio": TARGET_ZUKO,
        },
        "machine": {**info, "load_average_end": list(os.getloadavg())},
        "memory_note": MEMORY_NOTE,
        "cells": records,
        "targets": targets(records),
        "wall_seconds": wall_seconds,
    }


def save_report(report, out):
    """The JSON report at `out`, its markdown next to it (.md); returns the markdown."""
    text = markdown(report)
    write_json(report, out, verbose=False)
    with open(os.path.splitext(os.path.abspath(out))[0] + ".md", "w") as f:
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
        save_report(build_report(args, info, records, time.perf_counter() - start), args.out)

    records = run_matrix(args, after_each=save)
    text = save_report(build_report(args, info, records, time.perf_counter() - start), args.out)
    print("\n" + text)
    print(f"\nwrote {os.path.abspath(args.out)} and its .md")


if __name__ == "__main__":
    main()
