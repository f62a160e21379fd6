"""Smoke run of benchmarks/matrix.py: it runs and writes a well-formed report."""

import json
import math
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RATES = ("train", "log_prob", "sample", "weights")


def test_matrix_quick_subset(tmp_path):
    out = tmp_path / "matrix.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "matrix.py"),
            "--quick",
            "--datasets",
            "moons",
            "--flows",
            "realnvp",
            "maf",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"config", "machine", "cells", "targets", "wall_seconds", "memory_note"} <= set(report)
    assert [(c["dataset"], c["flow"]) for c in report["cells"]] == [
        ("moons", "realnvp"),
        ("moons", "maf"),
    ]
    for cell in report["cells"]:
        assert set(cell["medians"]) == {"tfp_flows", "tfp_builtin"}
        for median in cell["medians"].values():
            assert all(math.isfinite(median[key]) and median[key] > 0 for key in RATES)
            assert math.isfinite(median["test_nll"]) and median["peak_rss_growth_mib"] >= 0
        assert all(
            math.isfinite(cell["ratios"][key]) and cell["ratios"][key] > 0 for key in RATES[:3]
        )
        # Same seed, same networks: identical weights and the same function.
        assert cell["same_start"]["equivalent"]
        assert cell["medians"]["tfp_flows"]["weights"] == cell["medians"]["tfp_builtin"]["weights"]
        # The hand-written TFP loop and tfp_flows at Keras' defaults trained the same flow.
        loop = cell["loop"]
        assert set(loop["medians"]) == {"tfp_loop", "tfp_flows_defaults"}
        for median in loop["medians"].values():
            assert median["weights"] == cell["medians"]["tfp_flows"]["weights"]
            assert math.isfinite(median["test_nll"]) and median["train"] > 0
        assert set(loop["ratios"]) == {"tfp_flows", "tfp_flows_defaults", "tfp_builtin"}
        assert all(math.isfinite(r["train"]) and r["train"] > 0 for r in loop["ratios"].values())
    assert {check["what"] for check in report["targets"]} >= {
        "tfp_flows test NLL (nats)",
        "train samples/s, tfp_flows / TFP",
        "log_prob samples/s, tfp_flows / TFP",
        "train samples/s, tfp_flows at Keras defaults / TFP @tf.function loop",
    }
    table = (tmp_path / "matrix.md").read_text()
    assert "| **ratio ours / TFP** |" in table and table in result.stdout
    assert "### Against the loop a TFP user writes by hand" in table
