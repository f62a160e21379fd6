"""Benchmark: the exported SavedModel against the in-process model, on log_prob.

Throughput at batch 5000 (median of compiled calls) and latency at batch 1
(median and p99 over many calls; the two systems' calls taken in turns) for
the default moons RealNVP, in-process (`model.log_prob`, compiled on first
call) and through the SavedModel's
`log_prob` signature loaded with `tf.saved_model.load` (the graph TF Serving
runs, without its RPC layer). Target: SavedModel >= 0.9x in-process
throughput at batch 5000.

    python benchmarks/serving.py [--calls 300] [--out benchmarks/results/serving.json]

A benchmark, not a test: prints a markdown table, writes JSON, never fails on a target.
"""

import argparse
import os
import statistics
import tempfile

import keras
import numpy as np
import tensorflow as tf
from common import machine_info, markdown_table, timed_calls, write_report

import tfp_flows
from tfp_flows.export import export_saved_model

TARGET_THROUGHPUT_RATIO = 0.9


def build_model(seed):
    keras.utils.set_random_seed(seed)
    data = tfp_flows.datasets.load("moons", seed=seed)
    model = tfp_flows.flows.realnvp(2, standardize=data.train)
    # Weights away from the zero-initialised identity, as after training.
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(weight + 0.1 * rng.standard_normal(weight.shape).astype("float32"))
    return model, data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls per measurement")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds (in-process, SavedModel, ...); medians",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "serving.json"),
    )
    args = parser.parse_args(argv)

    model, data = build_model(args.seed)
    with tempfile.TemporaryDirectory() as base:
        signature = tf.saved_model.load(export_saved_model(model, base, "moons")).signatures[
            "log_prob"
        ]
        systems = {
            "in-process": model.log_prob,
            "SavedModel": lambda x: signature(x=x)["log_prob"],
        }
        big = tf.constant(np.resize(data.test, (5000, 2)))
        one = tf.constant(data.test[:1])
        np.testing.assert_allclose(
            systems["SavedModel"](big), systems["in-process"](big), atol=1e-5
        )
        throughput = {name: [] for name in systems}
        latency = {name: [] for name in systems}
        # Calls alternate between the systems, so a load spike on the shared machine hits both.
        for _ in range(args.rounds):
            batch = {name: lambda fn=fn: fn(big) for name, fn in systems.items()}
            for name, seconds in timed_calls(batch, warmup=5, calls=30).items():
                throughput[name].append(5000 / statistics.median(seconds))
            single = {name: lambda fn=fn: fn(one) for name, fn in systems.items()}
            for name, seconds in timed_calls(single, warmup=5, calls=args.calls).items():
                latency[name].extend(seconds)

    results = {
        name: {
            "throughput_batch_5000": float(np.median(throughput[name])),
            "latency_batch_1_median_ms": 1e3 * float(np.median(latency[name])),
            "latency_batch_1_p99_ms": 1e3 * float(np.percentile(latency[name], 99)),
            "latency_calls": len(latency[name]),
        }
        for name in systems
    }
    ratio = (
        results["SavedModel"]["throughput_batch_5000"]
        / results["in-process"]["throughput_batch_5000"]
    )
    report = {
        "config": vars(args),
        "machine": machine_info(),
        "results": results,
        "throughput_ratio_saved_model_over_in_process": ratio,
        "target": {
            "value": ratio,
            "target": f">= {TARGET_THROUGHPUT_RATIO}",
            "pass": bool(ratio >= TARGET_THROUGHPUT_RATIO),
        },
    }
    header = ["system", "log_prob samples/s (batch 5000)", "latency batch 1, median", "p99"]
    rows = [
        [
            name,
            f"{m['throughput_batch_5000'] / 1e3:,.0f}k",
            f"{m['latency_batch_1_median_ms']:.3f} ms",
            f"{m['latency_batch_1_p99_ms']:.3f} ms",
        ]
        for name, m in results.items()
    ]
    print(markdown_table(header, rows))
    mark = "PASS" if ratio >= TARGET_THROUGHPUT_RATIO else "FAIL"
    print(
        f"\nSavedModel / in-process throughput: {ratio:.2f}x "
        f"(target >= {TARGET_THROUGHPUT_RATIO}): {mark}"
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
