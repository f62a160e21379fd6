import json
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfp_flows import cli, datasets


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "tfp_flows", *args], capture_output=True, text=True, timeout=300
    )


def test_help_explains_every_option():
    result = _run("train", "--help")
    assert result.returncode == 0
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    options = [o for action in train._actions for o in action.option_strings if o != "-h"]
    assert len(options) > 15
    for option in options:
        assert option in result.stdout


def test_unknown_dataset_is_a_usage_error():
    result = _run("train", "--dataset", "nope")
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr


def test_default_training_gives_a_good_moons_model(tmp_path):
    # The README's main job with its defaults; the bound is a correctness bound
    # (an untrained flow scores ~2 nats, the data's entropy is 0.29).
    out = tmp_path / "moons"
    saved = tmp_path / "saved_models"
    assert cli.main(["train", "--out", str(out), "--verbose", "0", "--export", str(saved)]) == 0
    assert (saved / "moons" / "1" / "saved_model.pb").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_nll"] < 0.40
    assert metrics["epochs_run"] == 100
    for plot in ("samples", "density", "latent", "training"):
        assert (out / metrics["plots"][plot]).stat().st_size > 10_000
    assert (out / "history.csv").read_text().count("\n") == 101
    model = keras.models.load_model(out / "model.keras")
    test = datasets.load("moons", seed=0).test
    assert -float(np.mean(model.log_prob(test))) == pytest.approx(metrics["test_nll"], abs=1e-5)


def test_patience_validates_on_a_training_split_not_the_test_set(tmp_path):
    out = tmp_path / "sin"
    code = cli.main(
        [
            "train",
            "--dataset",
            "sin",
            "--flow",
            "planar",
            "--epochs",
            "3",
            "--num-train",
            "2000",
            "--num-test",
            "500",
            "--patience",
            "1",
            "--out",
            str(out),
            "--verbose",
            "0",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"] == "last 10% of the training set"
    assert np.isfinite(metrics["test_nll"])
    assert metrics["history"]["loss"][-1] < metrics["history"]["loss"][0]
    assert len(metrics["history"]["val_loss"]) == metrics["epochs_run"]


def test_bad_numbers_are_usage_errors():
    for option in ("--num-layers", "--epochs", "--batch-size", "--num-bins"):
        with pytest.raises(SystemExit) as exit_info:
            cli.build_parser().parse_args(["train", option, "0"])
        assert exit_info.value.code == 2


def test_num_bins_is_for_spline_flows_only(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--flow", "realnvp", "--num-bins", "16"])
    assert exit_info.value.code == 2
    assert "--num-bins applies to spline flows (nsf), not to realnvp" in capsys.readouterr().err


def test_num_bins_reaches_the_spline_couplings(tmp_path):
    out = tmp_path / "nsf"
    argv = ["train", "--dataset", "circles", "--flow", "nsf", "--num-bins", "4", "--num-layers"]
    argv += ["2", "--hidden-units", "8", "--epochs", "1", "--num-train", "1000", "--num-test"]
    assert cli.main([*argv, "100", "--out", str(out), "--verbose", "0"]) == 0
    model = keras.models.load_model(out / "model.keras")
    splines = [layer for layer in model.flow_layers if hasattr(layer, "num_bins")]
    assert [layer.num_bins for layer in splines] == [4, 4]


def test_export_and_inspect_a_run(tmp_path, capsys):
    out, saved = tmp_path / "run", tmp_path / "saved_models"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "circles",
                "--epochs",
                "1",
                "--num-train",
                "1000",
                "--num-test",
                "200",
                "--out",
                str(out),
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    assert cli.main(["export", str(out), "--name", "circles", "--base-path", str(saved)]) == 0
    assert (
        cli.main(
            ["export", str(out), "--name", "circles", "--base-path", str(saved), "--version", "5"]
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["inspect", str(saved / "circles")]) == 0
    printed = capsys.readouterr().out
    assert "version 1:" in printed and "version 5:" in printed
    assert "input  x: float32 [-1, 2]" in printed
    assert "output samples: float32 [-1, 2]" in printed
    assert "input  n: int32 scalar" in printed
    # An existing version is refused, and named.
    assert (
        cli.main(
            ["export", str(out), "--name", "circles", "--base-path", str(saved), "--version", "5"]
        )
        == 1
    )
    assert "already exists" in capsys.readouterr().err


def test_export_and_inspect_name_missing_or_corrupt_files(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nope"), "--name", "m"]) == 1
    assert f"no trained model at {tmp_path / 'nope' / 'model.keras'}" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.keras").write_bytes(b"not a zip file")
    assert cli.main(["export", str(tmp_path / "bad"), "--name", "m"]) == 1
    assert "cannot load the model at" in capsys.readouterr().err
    assert cli.main(["inspect", str(tmp_path / "nothing")]) == 1
    assert "no SavedModel versions" in capsys.readouterr().err


def test_train_on_a_csv_file(tmp_path, capsys):
    points = datasets.load("circles", num_train=600, num_test=1, seed=0).train
    np.savetxt(tmp_path / "mine.csv", points, delimiter=",")
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(tmp_path / "mine.csv"),
                "--epochs",
                "2",
                "--out",
                str(out),
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "mine" and np.isfinite(metrics["test_nll"])
    assert "realnvp on mine" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no data file at"),
        (b"1,2\nthree,4\n", "cannot read .*bad.csv as a numeric"),
        (b"\x00\x01\x02", "cannot read .*bad.csv"),
        (b"1,2\n", "must hold a 2-D table"),
    ],
)
def test_unreadable_data_files_are_named(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["train", "--data", str(path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_unknown_flow_is_a_usage_error():
    result = _run("train", "--flow", "glow")
    assert result.returncode == 2
    assert "invalid choice: 'glow'" in result.stderr and "usage:" in result.stderr
