"""Benchmark: test NLL on the 2D toys at the CLI's default budget, against the targets.

Each row is the very command a user types, `tfp-flows train ...`, run in a
subprocess; the script reads the run's `metrics.json` and prints a markdown
table of test NLL against the data's true entropy and the target.

The budget is the CLI's default: 4000 optimizer steps of 512 points (100
epochs of the default 20k points), Adam cosine-decayed from `--learning-rate`.
The toys are generators, so the runs draw 100k training points and pass
over them 20 times (3920 steps, the same 2M points seen): on 20k points
repeated 100 times a flow large enough for the checkerboard's edges overfits
(train 3.486 against test 3.520 nats). The flow is a neural spline flow of
12 couplings, 32 bins, MLPs 128-128, Adam from 3e-3; `--flow`,
`--num-layers`, ... are passed through to try others.

    cd /work/main
    python benchmarks/toy_quality.py                      # three datasets, ~30 min
    python benchmarks/toy_quality.py --datasets moons --epochs 2 --num-train 5000   # smoke

This is a benchmark, not a test: it never fails on a missed target.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from common import machine_info, markdown_table, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
TRUE_ENTROPY = {"moons": 0.290, "checkerboard": 3.466, "8gaussians": 2.840}  # nats
TARGET_NLL = {"moons": 0.31, "checkerboard": 3.49, "8gaussians": 2.86}
BATCH_SIZE = 512
FLOW = [
    "--flow", "nsf",
    "--num-layers", "12",
    "--num-bins", "32",
    "--hidden-units", "128", "128",
    "--learning-rate", "3e-3",
]  # fmt: skip


def parse_args(argv=None):
    # Unknown options go to `tfp-flows train`: no abbreviations that could swallow them.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--datasets", nargs="+", choices=sorted(TARGET_NLL), default=list(TARGET_NLL)
    )
    parser.add_argument("--num-train", type=int, default=100_000, help="training points")
    parser.add_argument("--epochs", type=int, default=20, help="passes (20 of 100k: 3920 steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=os.path.join(HERE, "results", "toy_quality.json"),
        help="JSON report (every run's metrics and command)",
    )
    args, flow = parser.parse_known_args(argv)
    args.flow = flow or FLOW  # any other `tfp-flows train` options replace the default flow
    return args


def run(dataset, args, workdir):
    out = os.path.join(workdir, dataset)
    command = [
        sys.executable, "-m", "tfp_flows.cli", "train",
        "--dataset", dataset,
        "--num-train", str(args.num_train),
        "--epochs", str(args.epochs),
        "--batch-size", str(BATCH_SIZE),
        "--seed", str(args.seed),
        "--out", out,
        "--verbose", "0",
        *args.flow,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    return dict(
        dataset=dataset,
        command=" ".join(["tfp-flows", *command[3:]]).replace(out, f"runs/{dataset}"),
        steps=args.epochs * math.ceil(args.num_train / BATCH_SIZE),
        test_nll=metrics["test_nll"],
        train_nll=metrics["train_nll"],
        test_nll_median=metrics["test_nll_median"],
        true_entropy=TRUE_ENTROPY[dataset],
        target=TARGET_NLL[dataset],
        met=bool(metrics["test_nll"] <= TARGET_NLL[dataset]),
        weights=metrics["num_weights"],
        seconds=seconds,
    )


def table(rows):
    header = ["dataset", "test NLL", "train NLL", "true entropy", "target", "met", "steps"]
    return markdown_table(
        header + ["weights", "time"],
        [
            [
                r["dataset"],
                f"{r['test_nll']:.4f}",
                f"{r['train_nll']:.4f}",
                f"{r['true_entropy']:.3f}",
                f"≤ {r['target']}",
                "yes" if r["met"] else "no",
                r["steps"],
                f"{r['weights']:,}",
                f"{r['seconds']:.0f} s",
            ]
            for r in rows
        ],
    )


def main(argv=None):
    args = parse_args(argv)
    info = machine_info()
    with tempfile.TemporaryDirectory() as workdir:
        rows = []
        for dataset in args.datasets:
            rows.append(run(dataset, args, workdir))
            print(f"{dataset}: test NLL {rows[-1]['test_nll']:.4f} nats", flush=True)
    info["load_average_end"] = list(os.getloadavg())
    print(f"\n## Test NLL at the CLI's budget ({rows[0]['steps']} steps of {BATCH_SIZE})\n")
    print(table(rows))
    print(f"\nFlow: tfp-flows train {' '.join(args.flow)}; 5000 test points, nats.")
    write_report(dict(config=vars(args), machine=info, runs=rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
