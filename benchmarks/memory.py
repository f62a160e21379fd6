"""Memory benchmark: does a digits Glow's resident memory grow from epoch to epoch?

Users report RAM growing epoch after epoch when training TFP's `tfb.Glow`
(tensorflow/probability#1177). This trains `flows.glow` on sklearn's digits
(dequantised afresh every epoch) with Keras `fit` and, after every epoch, also
runs `log_prob` on the test images and draws samples, as a training script
with evaluation would. It records the process's resident set size (RSS, from
/proc/self/status) at the end of each epoch and fits a line to the epochs
after the warm-up ones (the first traces, allocator pools and caches fill
during them).

    PYTHONPATH=. python benchmarks/memory.py                # 30 epochs
    PYTHONPATH=. python benchmarks/memory.py --quick        # 6 epochs of a small Glow: smoke test

A benchmark, not a test: it prints a table and writes JSON; it never fails on
the figure. The verdict line says whether the slope after warm-up stays under
`--tolerance` MB per epoch.
"""

import argparse
import time

import keras
import numpy as np
from common import machine_info, markdown_table, rss_mib, write_report

from tfp_flows import datasets, flows
from tfp_flows.training import fit_dequantized

GLOW = dict(levels=2, steps_per_level=4, hidden_channels=32)
QUICK_GLOW = dict(levels=1, steps_per_level=1, hidden_channels=8)  # --quick: every code path


class MemoryLog(keras.callbacks.Callback):
    """After each epoch: evaluates and samples like a training script would, then records RSS."""

    def __init__(self, test_images, sample_count=64):
        super().__init__()
        self.test_images, self.sample_count = test_images, sample_count
        self.rows = []
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        test_bits = float(np.mean(self.model.bits_per_dim(self.test_images)))
        self.model.sample(self.sample_count, seed=[0, epoch])
        rss, peak = rss_mib()
        self.rows.append(
            {
                "epoch": epoch + 1,
                "rss_mb": rss,
                "peak_rss_mb": peak,
                "loss": float(logs["loss"]),
                "test_bits_per_dim": test_bits,
                "seconds": time.perf_counter() - self._start,
            }
        )


def growth_per_epoch(rows, warmup):
    """Least-squares slope of RSS (MB per epoch) over the epochs after `warmup`."""
    steady = rows[warmup:]
    if len(steady) < 2:
        return float("nan")
    epochs = np.array([r["epoch"] for r in steady], float)
    rss = np.array([r["rss_mb"] for r in steady])
    return float(np.polyfit(epochs, rss, 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="6 epochs of a small Glow: a smoke test"
    )
    parser.add_argument("--epochs", type=int, help="epochs (default 30; 6 with --quick)")
    parser.add_argument("--warmup", type=int, help="epochs left out of the fit (default 5; 2)")
    parser.add_argument("--tolerance", type=float, default=1.0, help="MB per epoch")
    parser.add_argument("--out", default="benchmarks/results/memory.json")
    args = parser.parse_args(argv)
    epochs = args.epochs or (6 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)

    info = machine_info()
    data = datasets.load("digits")
    keras.utils.set_random_seed(0)
    start_rss, _ = rss_mib()
    architecture = QUICK_GLOW if args.quick else GLOW
    model = flows.glow(data.image_shape, value_range=data.value_range, **architecture)
    log = MemoryLog(data.images(data.test))
    fit_dequantized(
        model, data.images(data.train_counts), epochs=epochs, verbose=0, callbacks=[log]
    )
    slope = growth_per_epoch(log.rows, warmup)

    print(
        f"\nGlow on digits ({architecture['levels']} levels × {architecture['steps_per_level']} "
        f"steps, {architecture['hidden_channels']} channels), {epochs} epochs, batch 128"
    )
    print(f"RSS before building the model: {start_rss:.0f} MB\n")
    rows = [
        [
            r["epoch"],
            f"{r['rss_mb']:.1f}",
            f"{r['peak_rss_mb']:.1f}",
            f"{r['loss']:.3f}",
            f"{r['test_bits_per_dim']:.3f}",
            f"{r['seconds']:.1f}",
        ]
        for r in log.rows
    ]
    header = ["epoch", "RSS (MB)", "peak RSS (MB)", "train loss", "test bits/dim", "seconds"]
    print(markdown_table(header, rows))
    verdict = "no growth" if abs(slope) < args.tolerance else "GROWS"
    print(
        f"\nRSS slope over epochs {warmup + 1}-{epochs}: {slope:+.3f} MB/epoch "
        f"({verdict}; tolerance ±{args.tolerance} MB/epoch)"
    )
    write_report(
        {
            "machine": info,
            "glow": architecture,
            "epochs": epochs,
            "warmup_epochs": warmup,
            "start_rss_mb": start_rss,
            "rss_slope_mb_per_epoch": slope,
            "tolerance_mb_per_epoch": args.tolerance,
            "verdict": verdict,
            "per_epoch": log.rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
