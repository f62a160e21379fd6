"""Smoke runs of the benchmark scripts: they run and write their JSON (figures are not checked)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_serving_benchmark_runs(tmp_path):
    out = tmp_path / "serving.json"
    args = ["--flows", "realnvp", "--calls", "20", "--rounds", "1", "--out", str(out)]
    printed = _run("serving.py", *args)
    (flow,) = json.loads(out.read_text())["flows"].values()
    assert set(flow["results"]) == {"TFP built-in", "in-process", "SavedModel"}
    assert flow["throughput_ratio_saved_model_over_in_process"] > 0
    assert all(ratio > 0 for ratio in flow["ratios_over_tfp"].values())
    # The same weights in both systems, and every system computes the same log p.
    assert flow["same_start"]["equivalent"]
    tolerance = 1e-4 * max(1.0, flow["log_prob_max_abs"])
    assert all(r["max_abs_diff_from_in_process"] <= tolerance for r in flow["results"].values())
    assert "SavedModel / in-process throughput" in printed


def test_realnvp_benchmark_runs(tmp_path):
    out = tmp_path / "realnvp.json"
    printed = _run("realnvp_moons.py", "--quick", "--steps-per-execution", "10", "--out", str(out))
    report = json.loads(out.read_text())
    assert set(report["medians"]) == {"tfp_flows", "tfp_builtin"}
    assert report["ratios"]["default"]["train"] > 0
    assert "| ratio tfp_flows / tfp_builtin |" in printed
    # Same seed, same networks: identical weights and the same function.
    assert report["same_start"]["same_initial_weights"] and report["same_start"]["equivalent"]


def test_image_bits_per_dim_benchmark_runs(tmp_path):
    out = tmp_path / "image_bits_per_dim.json"
    # A dense flow, NSF-AR (the spline transformer in MADE steps) and an image flow,
    # at --quick's small sizes: most of a smoke run is tracing.
    flows = ["realnvp", "nsf_ar", "glow"]
    printed = _run("image_bits_per_dim.py", "--quick", "--flows", *flows, "--out", str(out))
    report = json.loads(out.read_text())
    assert "cpu_count" in report["machine"]
    medians = report["digits"]["medians"]
    assert set(medians) == set(flows)
    for name, summary in medians.items():
        # Finite, and better than a uniform density on [0, 17) (log2 17 = 4.087).
        assert 0 < summary["final_bits_per_dim"] < 4.087, name
        assert summary["nonfinite_loss_runs"] == 0, name
        [run] = report["digits"]["runs"][name]
        assert [c["step"] for c in run["checkpoints"]] == [20, 40]
    assert "| flow | weights | test bits/dim (final) |" in printed


def test_memory_benchmark_runs(tmp_path):
    out = tmp_path / "memory.json"
    printed = _run("memory.py", "--quick", "--epochs", "3", "--warmup", "1", "--out", str(out))
    report = json.loads(out.read_text())
    assert [row["epoch"] for row in report["per_epoch"]] == [1, 2, 3]
    assert all(
        row["rss_mb"] > 0 and row["peak_rss_mb"] >= row["rss_mb"] for row in report["per_epoch"]
    )
    assert report["verdict"] in ("no growth", "GROWS")
    assert "MB/epoch" in printed


def test_toy_quality_benchmark_runs(tmp_path):
    out = tmp_path / "toy_quality.json"
    flow = ["--flow", "nsf", "--num-layers", "2", "--num-bins", "4", "--hidden-units", "8"]
    printed = _run(
        "toy_quality.py", "--datasets", "moons", "--epochs", "2", "--num-train", "1000",
        *flow, "--out", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    (row,) = report["runs"]
    assert row["dataset"] == "moons" and row["steps"] == 4 and row["seed"] == 0
    assert report["summary"]["moons"]["test_nll_mean"] == row["test_nll"]
    assert row["command"].startswith("tfp-flows train --dataset moons --num-train 1000")
    assert " ".join(flow) in row["command"]
    assert row["test_nll"] > 0.29 and isinstance(row["met"], bool)
    assert "| moons |" in printed


def test_large_inputs_benchmark_runs(tmp_path):
    out = tmp_path / "large.json"
    printed = _run("large_inputs.py", "--quick", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {(r["op"], r["n"], r["chunked"]) for r in rows} >= {("log_prob", 100_000, True)}
    assert all(r["finite"] and r["samples_per_second"] > 0 for r in rows)
    assert "| log_prob | 1e+05 | yes |" in printed


def test_continuous_benchmark_runs(tmp_path):
    out = tmp_path / "continuous.json"
    printed = _run("continuous.py", "--quick", "--out", str(out))
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["dataset"] == "moons" and row["true_entropy"] == 0.29
    for system in ("flow_matching", "nsf_equal_time", "ffjord_equal_time"):
        assert row[system]["test_nll"] > 0.29, system  # finite, never below the entropy
    assert row["flow_matching_steps"] == 8  # 2 epochs of 4 batches
    assert row["nsf_equal_time"]["steps"] >= 1 and row["ffjord_equal_time"]["steps"] >= 1
    assert row["epoch_ratio_ml_over_fm"] > 0 and isinstance(report["met_epoch_ratio_target"], bool)
    for kind in ("log_prob_per_second", "sample_per_second"):
        assert set(row[kind]) == {"cnf", "nsf", "ffjord"} and min(row[kind].values()) > 0
    assert "| moons | 0.290 |" in printed and "seconds per epoch: at least" in printed
