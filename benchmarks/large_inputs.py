"""Large inputs: `log_prob` and `sample` on 10^5–10^7 points, throughput and peak memory.

`FlowModel` runs eager inputs larger than `model.chunk_size` rows (65536 for
vectors) in chunks, so the memory a call needs beyond its inputs and outputs
is one chunk's activations, whatever N is. This measures it: each cell runs
in a fresh process (peak memory is a per-process figure) that builds the
moons RealNVP (8 couplings, MLP 2×64, weights moved off the identity), warms
the call up on 1000 points, then times one call on N points and reads the
process's peak resident memory (VmHWM) before and after. The same cells with
chunking off (`chunk_size = N`, one call over everything) show what the
chunks save; those stop at 3·10^6 points, where they already need gigabytes.

    PYTHONPATH=. python benchmarks/large_inputs.py            # 1e5 .. 1e7
    PYTHONPATH=. python benchmarks/large_inputs.py --quick    # 1e5 only, in one process

A benchmark, not a test: it prints a markdown table and writes JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from common import machine_info, markdown_table, rss_mib, write_report

SIZES = (100_000, 1_000_000, 3_000_000, 10_000_000)
QUICK_SIZES = (100_000,)  # above one chunk (65536 rows): both paths run
UNCHUNKED_LIMIT = 3_000_000
OPS = ("log_prob", "sample")


def run_cell(op, n, chunked):
    """In this process: one timed call of `op` on n points; returns its figures."""
    import numpy as np

    from tfp_flows import flows

    model = flows.realnvp(2, num_layers=8, hidden_units=(64, 64))
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(weight + 0.1 * rng.standard_normal(weight.shape).astype("float32"))
    if not chunked:
        model.chunk_size = n
    points = rng.standard_normal((n, 2)).astype("float32")
    # Two small calls of different sizes: the compiled function is then traced for any
    # batch size, and the timed call neither traces nor touches more memory than it needs.
    for size in (1000, 1001):
        if op == "log_prob":
            model.log_prob(points[:size]).numpy()
        else:
            model.sample(size, seed=0).numpy()
    rss_before, peak_before = rss_mib()
    started = time.perf_counter()
    if op == "log_prob":
        result = model.log_prob(points).numpy()
    else:
        result = model.sample(n, seed=1).numpy()
    seconds = time.perf_counter() - started
    _, peak_after = rss_mib()
    data_mb = (points.nbytes + result.nbytes) / 2**20
    return {
        "op": op,
        "n": n,
        "chunked": chunked,
        "chunk_size": model.chunk_size,
        "seconds": seconds,
        "samples_per_second": n / seconds,
        "rss_before_mb": rss_before,
        "peak_growth_mb": max(0.0, peak_after - max(peak_before, rss_before)),
        "inputs_and_outputs_mb": data_mb,
        "finite": bool(np.isfinite(result).all()),
    }


def cells(sizes):
    for n in sizes:
        for op in OPS:
            yield op, n, True
            if n <= UNCHUNKED_LIMIT:
                yield op, n, False


def markdown(rows):
    header = ["op", "N", "chunked", "samples/s", "peak memory growth (MB)"]
    return markdown_table(
        header + ["inputs + outputs (MB)"],
        [
            [
                r["op"],
                f"{r['n']:.0e}",
                "yes" if r["chunked"] else "no",
                f"{r['samples_per_second'] / 1e3:.0f}k",
                f"{r['peak_growth_mb']:.0f}",
                f"{r['inputs_and_outputs_mb']:.0f}",
            ]
            for r in rows
        ],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, every cell in this process (a smoke test; peaks are not per cell)",
    )
    parser.add_argument("--sizes", type=float, nargs="+", default=None)
    parser.add_argument("--out", default="benchmarks/results/large_inputs.json")
    parser.add_argument("--cell", nargs=3, metavar=("OP", "N", "CHUNKED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        op, n, chunked = args.cell[0], int(float(args.cell[1])), args.cell[2] == "1"
        print("RESULT " + json.dumps(run_cell(op, n, chunked)))
        return

    sizes = [int(s) for s in args.sizes] if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    rows = []
    for op, n, chunked in cells(sizes):
        if args.quick:
            rows.append(run_cell(op, n, chunked))
            continue
        result = subprocess.run(
            [sys.executable, __file__, "--cell", op, str(n), "1" if chunked else "0"],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        if result.returncode != 0:
            raise SystemExit(f"cell {op} {n} failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(result.stdout.split("RESULT ", 1)[1]))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    if not all(row["finite"] for row in rows):
        raise SystemExit("some results were not finite")
    table = markdown(rows)
    print("\n" + table)
    write_report({"machine": machine_info(), "rows": rows, "markdown": table}, args.out)


if __name__ == "__main__":
    main()
