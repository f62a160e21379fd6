"""Benchmark: log_prob in process and through the exported SavedModel, against TFP's built-in.

For each flow (moons RealNVP, NSF, MAF at the matrix's architectures), in one
process and with the same weights, log_prob throughput at batch 5000 (median
of compiled calls) and latency at batch 1 (median and p99 over many calls),
every system's calls taken in turns so that load hits all alike:

- `TFP built-in`: TFP's built-in flow around the same networks
  (`tfp_builtin.py`), its `distribution.log_prob` in a plain `tf.function`,
  as a TFP user calls it;
- `in-process`: tfp_flows' `model.log_prob` (compiled on first call);
- `SavedModel`: the `log_prob` signature of `tfp_flows.export_saved_model`'s
  export loaded with `tf.saved_model.load` (the graph TF Serving runs,
  without its RPC layer);
- with `--xla`, also `in-process XLA` (tfp_flows' distribution's log_prob
  in a `tf.function(jit_compile=True)`) and `TFP built-in XLA`: what XLA
  would give, measured, not what the library or its export does.

Both flows start from the same seed and get the same weight noise (as after
training), and the run checks they compute the same log p (`same_start`).
Targets: in-process and SavedModel ≥ 2× TFP's built-in; SavedModel ≥ 0.9×
in-process.

    python benchmarks/serving.py [--flows realnvp nsf maf] [--calls 300] [--xla]

A benchmark, not a test: prints a markdown table, writes JSON, never fails on a target.
"""

import argparse
import os
import statistics
import tempfile

import keras
import numpy as np
import tensorflow as tf
import tfp_builtin
from common import machine_info, markdown_table, timed_calls, write_report

import tfp_flows
from tfp_flows.export import export_saved_model

TARGET_THROUGHPUT_RATIO = 0.9  # SavedModel / in-process
TARGET_TFP_RATIO = 2.0  # ours / TFP's built-in
BATCH = 5000
FLOWS = ("realnvp", "nsf", "maf")
# The matrix's architectures (benchmarks/matrix.py), for both systems.
ARCHITECTURES = {
    "realnvp": dict(num_layers=8, hidden_units=(64, 64), log_scale_clamp=3.0),
    "nsf": dict(num_layers=8, num_bins=8, bound=3.0, hidden_units=(64, 64)),
    "maf": dict(num_layers=5, hidden_units=(64, 64)),
}
BUILTINS = {
    "realnvp": (tfp_builtin.coupling_flow, "affine"),
    "nsf": (tfp_builtin.coupling_flow, "spline"),
    "maf": (tfp_builtin.autoregressive_flow, "affine"),
}


def build_models(flow, data, seed):
    """tfp_flows' flow and TFP's built-in, same seed, the same weight noise (σ 0.1) on both."""
    models = []
    for system in ("ours", "tfp"):
        keras.utils.set_random_seed(seed)
        if system == "ours":
            models.append(
                tfp_flows.flows.FLOWS[flow](2, standardize=data.train, **ARCHITECTURES[flow])
            )
        else:
            builder, transformer = BUILTINS[flow]
            models.append(builder(2, transformer, standardize=data.train, **ARCHITECTURES[flow]))
    # Weights away from the zero-initialised identity, as after training; same noise on both.
    start = tfp_builtin.same_start(*models, data.test[:1000], seed=seed, noise=0.1)
    return models[0], models[1], start


def measure(flow, data, args, base):
    ours, theirs, start = build_models(flow, data, args.seed)
    signature = tf.saved_model.load(export_saved_model(ours, base, flow)).signatures["log_prob"]
    systems = {
        "TFP built-in": tf.function(theirs.distribution.log_prob),
        "in-process": ours.log_prob,
        "SavedModel": lambda x: signature(x=x)["log_prob"],
    }
    if args.xla:
        systems["in-process XLA"] = tf.function(ours.distribution.log_prob, jit_compile=True)
        systems["TFP built-in XLA"] = tf.function(theirs.distribution.log_prob, jit_compile=True)
    big = tf.constant(np.resize(data.test, (BATCH, 2)))
    one = tf.constant(data.test[:1])
    reference = systems["in-process"](big).numpy()
    agreement = {
        name: float(np.max(np.abs(fn(big).numpy() - reference))) for name, fn in systems.items()
    }
    throughput = {name: [] for name in systems}
    latency = {name: [] for name in systems}
    # Calls alternate between the systems, so a load spike on the shared machine hits all.
    for _ in range(args.rounds):
        batch = {name: lambda fn=fn: fn(big) for name, fn in systems.items()}
        for name, seconds in timed_calls(batch, warmup=5, calls=30).items():
            throughput[name].append(BATCH / statistics.median(seconds))
        single = {name: lambda fn=fn: fn(one) for name, fn in systems.items()}
        for name, seconds in timed_calls(single, warmup=5, calls=args.calls).items():
            latency[name].extend(seconds)
    results = {
        name: {
            "throughput_batch_5000": float(np.median(throughput[name])),
            "latency_batch_1_median_ms": 1e3 * float(np.median(latency[name])),
            "latency_batch_1_p99_ms": 1e3 * float(np.percentile(latency[name], 99)),
            "latency_calls": len(latency[name]),
            "max_abs_diff_from_in_process": agreement[name],
        }
        for name in systems
    }
    tfp = results["TFP built-in"]["throughput_batch_5000"]
    ratios = {
        name: r["throughput_batch_5000"] / tfp
        for name, r in results.items()
        if name != "TFP built-in"
    }
    saved_over_in_process = (
        results["SavedModel"]["throughput_batch_5000"]
        / results["in-process"]["throughput_batch_5000"]
    )
    return dict(
        results=results,
        ratios_over_tfp=ratios,
        throughput_ratio_saved_model_over_in_process=saved_over_in_process,
        same_start=start,
        log_prob_max_abs=float(np.max(np.abs(reference))),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", nargs="+", choices=FLOWS, default=list(FLOWS))
    parser.add_argument("--calls", type=int, default=300, help="timed batch-1 calls per round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of timed calls (each system in turn); medians",
    )
    parser.add_argument("--xla", action="store_true", help="XLA rows for both systems too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "serving.json"),
    )
    args = parser.parse_args(argv)

    data = tfp_flows.datasets.load("moons", seed=args.seed)
    per_flow = {}
    with tempfile.TemporaryDirectory() as base:
        for flow in args.flows:
            per_flow[flow] = measure(flow, data, args, base)
            print(f"{flow}: done", flush=True)
    checks = []
    for flow, m in per_flow.items():
        for name in ("in-process", "SavedModel"):
            value = m["ratios_over_tfp"][name]
            checks.append(
                dict(
                    what=f"{flow} {name} / TFP built-in, log_prob at batch {BATCH}",
                    value=value,
                    target=f">= {TARGET_TFP_RATIO}",
                    met=bool(value >= TARGET_TFP_RATIO),
                )
            )
        value = m["throughput_ratio_saved_model_over_in_process"]
        checks.append(
            dict(
                what=f"{flow} SavedModel / in-process, log_prob at batch {BATCH}",
                value=value,
                target=f">= {TARGET_THROUGHPUT_RATIO}",
                met=bool(value >= TARGET_THROUGHPUT_RATIO),
            )
        )
    report = {
        "config": vars(args),
        "machine": {**machine_info(), "load_average_end": list(os.getloadavg())},
        "architectures": ARCHITECTURES,
        "flows": per_flow,
        "targets": checks,
    }
    header = ["flow", "system", f"log_prob samples/s (batch {BATCH})", "/ TFP built-in"]
    rows = []
    for flow, m in per_flow.items():
        for name, r in m["results"].items():
            ratio = m["ratios_over_tfp"].get(name)
            rows.append(
                [
                    flow,
                    name,
                    f"{r['throughput_batch_5000'] / 1e3:,.0f}k",
                    "—" if ratio is None else f"{ratio:.2f}×",
                    f"{r['latency_batch_1_median_ms']:.3f} ms",
                    f"{r['latency_batch_1_p99_ms']:.3f} ms",
                ]
            )
    print(markdown_table(header + ["latency batch 1, median", "p99"], rows))
    for flow, m in per_flow.items():
        ratio = m["throughput_ratio_saved_model_over_in_process"]
        mark = "PASS" if ratio >= TARGET_THROUGHPUT_RATIO else "FAIL"
        print(
            f"\n{flow}: SavedModel / in-process throughput: {ratio:.2f}x "
            f"(target >= {TARGET_THROUGHPUT_RATIO}): {mark}; same start: "
            f"{'yes' if m['same_start']['equivalent'] else 'NO'}"
        )
    met = sum(c["met"] for c in checks)
    print(f"\n{met} of {len(checks)} targets met (reported, never enforced).")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
