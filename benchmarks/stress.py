"""Numerical stress: every flow family on every 2D toy dataset at a high learning rate.

Each cell of the matrix trains `flows.FLOWS[family](2, standardize=data.train)`
(default depths) with Adam at 1e-2, ten times the usual rate, for 5000 steps
(batch 512, 20k training points, 10 steps per compiled call), with
`RestoreOnNaN` as the only guard. It then checks what a user would rely on:
are the weights finite, is the test NLL finite, and does `log_prob` stay
NaN-free far outside the data (64 points on the circle |x| = 1e3 plus the four
axis points at distance 1e3, where a zero density, −inf, is an honest answer
but NaN is not).

    cd /work/main
    PYTHONPATH=. python benchmarks/stress.py --quick        # 300 steps, smoke test
    PYTHONPATH=. python benchmarks/stress.py                # the full matrix (~15 min)
    PYTHONPATH=. python benchmarks/stress.py --datasets moons sin --flows planar

A stress benchmark, not a test: it prints a markdown matrix and writes every
detail to JSON; a FAIL cell is reported, never raised.
"""

import argparse
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from common import machine_info, markdown_table, write_report

import tfp_flows
from tfp_flows.callbacks import RestoreOnNaN

BATCH_SIZE = 512
STEPS_PER_EXECUTION = 10
NUM_TRAIN, NUM_TEST = 20000, 5000
FAR_RADIUS = 1e3
FAR_CIRCLE_POINTS = 64
QUICK_STEPS = 300


# --- One cell ---------------------------------------------------------------


def far_away_points(radius=FAR_RADIUS, count=FAR_CIRCLE_POINTS):
    """Points on the circle |x| = radius, plus the four axis points written exactly.

    The circle's own axis points carry rounding (cos(π/2)·1e3 ≈ 6e-14), so the
    exact ones are added: a coordinate of exactly 0 is where a norm or a
    division is most likely to break.
    """
    angles = 2.0 * np.pi * np.arange(count) / count
    circle = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    axes = radius * np.array([(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)])
    return np.concatenate([circle, axes]).astype(np.float32)


def count_values(values):
    """How many of `values` are NaN, −inf, +inf and finite."""
    values = np.asarray(values)
    return {
        "nan": int(np.isnan(values).sum()),
        "neg_inf": int(np.isneginf(values).sum()),
        "pos_inf": int(np.isposinf(values).sum()),
        "finite": int(np.isfinite(values).sum()),
    }


def train(model, data, epochs, learning_rate):
    """Fits the model under `RestoreOnNaN`; returns (steps run, the guard)."""
    guard = RestoreOnNaN(verbose=False)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), steps_per_execution=STEPS_PER_EXECUTION
    )
    model.fit(
        data.train,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        callbacks=[guard],
        verbose=0,
    )
    steps_per_epoch = math.ceil(len(data.train) / BATCH_SIZE)
    if guard.stopped_at is None:
        return epochs * steps_per_epoch, guard
    # The guard sees the last step of each compiled call, so this counts the
    # whole call in which the loss turned non-finite.
    epoch, batch = guard.stopped_at
    return epoch * steps_per_epoch + batch + 1, guard


def evaluate(model, data):
    """Weights, test NLL and far-away log_prob after training."""
    weights_finite = all(np.isfinite(w).all() for w in model.get_weights())
    test_log_prob = model.log_prob(data.test).numpy()
    far_log_prob = model.log_prob(far_away_points()).numpy()
    return {
        "weights_finite": bool(weights_finite),
        # A mean, so one NaN or −inf test point shows; the counts say how many.
        "test_nll": -float(np.mean(test_log_prob)),
        "test_log_prob": count_values(test_log_prob),
        "far_log_prob": count_values(far_log_prob),
        "far_log_prob_range": _finite_range(far_log_prob),
    }


def _finite_range(values):
    finite = values[np.isfinite(values)]
    return [float(finite.min()), float(finite.max())] if finite.size else None


def outcome(cell):
    """The cell's outcome ("ok", "stopped-restored" or "FAIL") and a FAIL's reasons."""
    reasons = []
    if "error" in cell:
        reasons.append(f"error: {cell['error']}")
    else:
        if not cell["weights_finite"]:
            reasons.append("non-finite weights")
        if not math.isfinite(cell["test_nll"]):
            reasons.append(f"test NLL {cell['test_nll']}")
        if cell["far_log_prob"]["nan"]:
            reasons.append(f"{cell['far_log_prob']['nan']} NaN far-away log_prob")
        if cell["far_log_prob"]["pos_inf"]:
            reasons.append(f"{cell['far_log_prob']['pos_inf']} +inf far-away log_prob")
    if reasons:
        return "FAIL", reasons
    return ("stopped-restored" if cell["stopped_on_nan"] else "ok"), []


def run_cell(dataset, family, epochs, args):
    """Trains and checks one (dataset, family) cell; never raises."""
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    cell = {"dataset": dataset.name, "flow": family}
    try:
        model = tfp_flows.flows.FLOWS[family](2, standardize=dataset.train)
        steps, guard = train(model, dataset, epochs, args.learning_rate)
        cell.update(
            steps_run=steps,
            stopped_on_nan=guard.stopped_at is not None,
            stopped_at=guard.stopped_at,
            restored_from_epoch=guard.restored_from,
            **evaluate(model, dataset),
        )
    except Exception as error:  # a crash is a result here: report it as a cell
        cell["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    cell["outcome"], cell["fail_reasons"] = outcome(cell)
    cell["wall_seconds"] = time.perf_counter() - start
    return cell


# --- Report -----------------------------------------------------------------

LEGEND = (
    "Cells: outcome and test NLL (nats, 5000 test points). "
    "**ok**: trained to the end, no NaN anywhere, finite NLL. "
    "**stopped-restored**: the loss turned non-finite, `RestoreOnNaN` stopped training "
    "and restored finite weights, and the NLL is finite. "
    "**FAIL**: non-finite weights or test NLL, NaN (or +inf) `log_prob` far away, or a crash."
)


def _short(outcome_name):
    return {"stopped-restored": "stopped"}.get(outcome_name, outcome_name)


def matrix(cells, datasets, families):
    rows = []
    for name in datasets:
        row = [name]
        for family in families:
            cell = cells[name][family]
            nll = f" {cell['test_nll']:.2f}" if "test_nll" in cell else ""
            row.append(_short(cell["outcome"]) + nll)
        rows.append(row)
    return markdown_table(["dataset", *families], rows)


def far_away_summary(cells, datasets, families):
    """One line per family: NaN / −inf / finite counts of far-away log_prob, summed."""
    rows = []
    for family in families:
        family_cells = [cells[name][family] for name in datasets]
        checked = [cell for cell in family_cells if "far_log_prob" in cell]
        totals = {
            key: sum(cell["far_log_prob"][key] for cell in checked)
            for key in ("nan", "neg_inf", "pos_inf", "finite")
        }
        ranges = [cell["far_log_prob_range"] for cell in checked if cell["far_log_prob_range"]]
        span = (
            f"{min(r[0] for r in ranges):.0f} … {max(r[1] for r in ranges):.0f}" if ranges else "—"
        )
        rows.append(
            [family, *(totals[key] for key in ("nan", "neg_inf", "pos_inf", "finite")), span]
        )
    return markdown_table(["flow", "NaN", "−inf", "+inf", "finite", "finite range (nats)"], rows)


def details(cells, datasets, families):
    """Lines for the cells that stopped or failed, which the matrix cannot explain."""
    lines = []
    for name in datasets:
        for family in families:
            cell = cells[name][family]
            if cell["outcome"] == "FAIL":
                lines.append(f"- FAIL {name} × {family}: " + "; ".join(cell["fail_reasons"]))
            elif cell["outcome"] == "stopped-restored":
                good = cell["restored_from_epoch"]
                source = "the initial weights" if good < 0 else f"the weights of epoch {good + 1}"
                lines.append(
                    f"- stopped {name} × {family}: non-finite loss by step {cell['steps_run']} "
                    f"(epoch {cell['stopped_at'][0] + 1}); restored {source}"
                )
    return lines


# --- Main -------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(tfp_flows.datasets.TOY_2D),
        choices=list(tfp_flows.datasets.TOY_2D),
        help="2D toy datasets (default: all)",
    )
    parser.add_argument(
        "--flows",
        nargs="+",
        default=list(tfp_flows.flows.FLOWS),
        choices=list(tfp_flows.flows.FLOWS),
        help="flow families (default: all)",
    )
    parser.add_argument("--steps", type=int, default=5000, help="training steps per cell")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, smoke test")
    parser.add_argument(
        "--learning-rate", type=float, default=1e-2, help="Adam's rate (the stress: 10× usual)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and initial weights")
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "stress.json"),
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = QUICK_STEPS
    return args


def main(argv=None):
    args = parse_args(argv)
    # Each cell builds a new model whose compiled log_prob TF then reports as
    # "retracing"; expected here, and it would bury the progress lines.
    tf.get_logger().setLevel("ERROR")
    info = machine_info()
    steps_per_epoch = math.ceil(NUM_TRAIN / BATCH_SIZE)
    epochs = max(1, round(args.steps / steps_per_epoch))
    start = time.perf_counter()
    cells = {}
    for name in args.datasets:
        dataset = tfp_flows.datasets.load(name, NUM_TRAIN, NUM_TEST, seed=args.seed)
        cells[name] = {}
        for family in args.flows:
            cell = run_cell(dataset, family, epochs, args)
            cells[name][family] = cell
            print(
                f"{name} × {family}: {cell['outcome']}, NLL {cell.get('test_nll', 'n/a')}, "
                f"{cell.get('steps_run', 0)} steps, {cell['wall_seconds']:.0f} s",
                flush=True,
            )
    info["load_average_end"] = list(os.getloadavg())
    total_seconds = time.perf_counter() - start
    report = {
        "config": {
            **vars(args),
            "epochs": epochs,
            "steps": epochs * steps_per_epoch,
            "batch_size": BATCH_SIZE,
            "steps_per_execution": STEPS_PER_EXECUTION,
            "num_train": NUM_TRAIN,
            "num_test": NUM_TEST,
            "far_away_points": f"{FAR_CIRCLE_POINTS} on |x| = {FAR_RADIUS:g} + 4 axis points",
        },
        "machine": info,
        "total_wall_seconds": total_seconds,
        "cells": cells,
    }
    print_report(report, args, total_seconds)
    write_report(report, args.out)


def print_report(report, args, total_seconds):
    cells, config = report["cells"], report["config"]
    print(
        f"\n## Stress: {config['steps']} steps, Adam {args.learning_rate:g}, batch {BATCH_SIZE}, "
        f"steps_per_execution {STEPS_PER_EXECUTION}, standardised data\n"
    )
    print(matrix(cells, args.datasets, args.flows))
    print(f"\n{LEGEND}")
    for line in details(cells, args.datasets, args.flows):
        print(line)
    print(f"\n### log_prob far away ({config['far_away_points']}), summed over datasets\n")
    print(far_away_summary(cells, args.datasets, args.flows))
    print(f"\nTotal wall time: {total_seconds / 60:.1f} min.")


if __name__ == "__main__":
    main()
