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
    printed = _run("serving.py", "--calls", "20", "--rounds", "1", "--out", str(out))
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"in-process", "SavedModel"}
    assert report["throughput_ratio_saved_model_over_in_process"] > 0
    assert "SavedModel / in-process throughput" in printed


def test_realnvp_benchmark_runs(tmp_path):
    out = tmp_path / "realnvp.json"
    printed = _run("realnvp_moons.py", "--quick", "--steps-per-execution", "10", "--out", str(out))
    report = json.loads(out.read_text())
    assert set(report["medians"]) == {"tfp_flows", "tfp_builtin"}
    assert report["ratios"]["default"]["train"] > 0
    assert "| ratio tfp_flows / tfp_builtin |" in printed
