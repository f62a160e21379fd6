"""A training killed mid-run resumes from its last completed epoch (BackupAndRestore)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time


def _epochs_logged(path):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_killed_training_resumes_from_the_last_epoch(tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "tfp_flows",
        "train",
        "--dataset",
        "moons",
        "--num-train",
        "4000",
        "--num-test",
        "1000",
        "--epochs",
        "40",
        "--steps-per-execution",
        "1",
        "--out",
        str(out),
        "--verbose",
        "2",
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while len(_epochs_logged(out / "history.csv")) < 5:
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline, "training did not get through 5 epochs"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done = _epochs_logged(out / "history.csv")
    assert 5 <= len(done) < 40 and (out / "backup").is_dir()

    # As a user runs it: no TF_CPP_MIN_LOG_LEVEL of their own, so TensorFlow stays quiet.
    quiet = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=quiet)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming the interrupted run in" in second.stdout
    for noise in ("I0000", "E0000", "W0000", "cuInit", "oneDNN", "absl::InitializeLog"):
        assert noise not in second.stderr, second.stderr[-3000:]
    # Keras prints "Epoch k/40" for each epoch it runs: the resumed run starts
    # right after the last backed-up one, not at 1.
    first_epoch = int(second.stdout.split("Epoch ", 1)[1].split("/", 1)[0])
    assert first_epoch > 1
    assert first_epoch - 1 <= len(done)
    epochs = _epochs_logged(out / "history.csv")
    assert epochs[-1] == 39
    assert sorted(set(epochs)) == list(range(40))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == len(epochs)
    assert not (out / "backup").exists()  # Keras removes it once training completes

    # The same run, never interrupted, ends at the same test NLL within noise
    # (the resumed run restores weights and optimizer state, not the shuffling).
    reference = tmp_path / "reference"
    command[command.index(str(out))] = str(reference)
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    expected = json.loads((reference / "metrics.json").read_text())["test_nll"]
    assert abs(metrics["test_nll"] - expected) < 0.05, (metrics["test_nll"], expected)
