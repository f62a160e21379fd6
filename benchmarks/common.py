"""What every benchmark script shares: machine info and JSON reports, timing, memory, tables.

- `machine_info()`, `write_report(report, path)`: the stack and machine a
  report's numbers come from, and the JSON file they go to.
- Timing: `EpochTimer` (wall time of each Keras epoch), `timed_calls` and
  `throughputs` (calls of several functions taken in turns, so that load from
  other processes on a shared machine hits all alike; medians), `medians`,
  and `compiled_fns` (a model's log_prob and sample as a user calls them).
- Memory: `rss_mib()` (this process's VmRSS and VmHWM), `release_and_reset_peak()`.
- Tables: `markdown_table(header, rows)`, `rate(samples_per_second)`.

TFP's built-in flows, the baselines, are in `tfp_builtin.py`. Importing this
module does not import TensorFlow (a script whose own process never needs it,
like toy_quality.py's, should not pay its 7-12 s); the parts that need it
import it when called.
"""

import contextlib
import ctypes
import gc
import importlib.metadata
import json
import math
import os
import platform
import sys
import time

import numpy as np

# --- Machine and reports --------------------------------------------------------


def _version(module, distribution):
    """The imported module's version, else the installed distribution's (without importing)."""
    if module in sys.modules:
        return sys.modules[module].__version__
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info():
    """The machine and the stack: cores, platform, versions, load average now."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "tensorflow": _version("tensorflow", "tensorflow"),
        "tensorflow_probability": _version("tensorflow_probability", "tensorflow-probability"),
        "keras": _version("keras", "keras"),
        "tfp_flows": _version("tfp_flows", "tfp-flows"),
        # The machine is shared: a high load average means noisier timings.
        "load_average_start": list(os.getloadavg()),
    }


def write_report(report, path, verbose=True):
    """Writes `report` as indented JSON to `path`, creating its folder; prints where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    if verbose:
        print(f"wrote {path}")


# --- Timing -----------------------------------------------------------------------


def _epoch_timer_class():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of each Keras epoch (`times`), so that the first one (which traces) can
        be left out."""

        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer


def __getattr__(name):
    # `EpochTimer` is a Keras callback: the class is made (and Keras imported) on first use.
    if name == "EpochTimer":
        globals()[name] = _epoch_timer_class()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _wait(result):
    """Blocks until a call's result exists (`.numpy()` waits for TensorFlow's)."""
    return result.numpy() if hasattr(result, "numpy") else result


def timed_calls(fns, warmup=3, calls=30):
    """Seconds of each of `calls` calls of every `fns[name]()`, after `warmup` untimed ones.

    Each round calls every function once, in an order that alternates between
    rounds, so that load from other processes hits all alike. Returns
    {name: [seconds, ...]}.
    """
    for fn in fns.values():
        for _ in range(warmup):
            _wait(fn())
    seconds = {name: [] for name in fns}
    names = list(fns)
    for call in range(calls):
        for name in names if call % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            _wait(fns[name]())
            seconds[name].append(time.perf_counter() - start)
    return seconds


def throughputs(fns, size, warmup=3, calls=30):
    """{name: samples/s} of each `fns[name]()` on `size` samples, from its median timed call."""
    return {
        name: size / float(np.median(times))
        for name, times in timed_calls(fns, warmup, calls).items()
    }


def compiled_fns(model, sample_size, seed=(1, 2), jit_compile=False):
    """(log_prob of a batch, sample of `sample_size`): compiled once, as a user would call them.

    A tfp_flows `FlowModel`'s own methods (compiled by the library on their
    first eager call), else `tf.function`s over the model's distribution's;
    with `jit_compile` both through XLA. `sample()` takes the stateless `seed`.
    """
    import tensorflow as tf

    from tfp_flows import FlowModel

    seed = tf.constant(seed, tf.int32)
    if isinstance(model, FlowModel) and not jit_compile:
        return model.log_prob, lambda: model.sample(sample_size, seed=seed)
    dist = model.distribution
    log_prob = tf.function(dist.log_prob, jit_compile=jit_compile)
    sample = tf.function(lambda s: dist.sample(sample_size, seed=s), jit_compile=jit_compile)
    return log_prob, lambda: sample(seed)


def medians(runs):
    """{key: median over `runs`} of a list of {key: number} (NaN-safe: a NaN run shows as NaN)."""
    return {key: float(np.median([run[key] for run in runs])) for key in runs[0]}


# --- Memory -------------------------------------------------------------------------


def rss_mib():
    """(VmRSS, VmHWM): this process's resident set now and its peak, in MiB (None off Linux)."""
    fields = {"VmRSS": None, "VmHWM": None}
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in fields:
                fields[name] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def release_and_reset_peak():
    """Frees what can be freed and resets the peak (VmHWM) to the resident set; returns it."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back to the OS
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux >= 4.0: VmHWM := VmRSS
    return rss_mib()[0]


# --- Tables ---------------------------------------------------------------------------


def markdown_table(header, rows):
    """A markdown table: `header` a list of column titles, `rows` lists of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def rate(samples_per_second):
    """Samples/s as "123k" (or "1.23k" below 10k), "NaN" when not finite."""
    if not math.isfinite(samples_per_second):
        return "NaN"
    if samples_per_second >= 1e4:
        return f"{samples_per_second / 1e3:,.0f}k"
    return f"{samples_per_second / 1e3:.2f}k"
