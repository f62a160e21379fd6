import json
import re
import subprocess
import sys
import textwrap

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
    splines = [layer.transformer for layer in model.flow_layers if hasattr(layer, "transformer")]
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


@pytest.fixture
def plotted_entropy(monkeypatch):
    """The true_entropy each CLI run hands to plot_all (for training.png's floor line)."""
    from tfp_flows import plotting

    seen, plot_all = [], plotting.plot_all

    def spy(*args, **kwargs):
        seen.append(kwargs.get("true_entropy"))
        return plot_all(*args, **kwargs)

    monkeypatch.setattr(plotting, "plot_all", spy)
    return seen


def test_train_on_a_csv_file(tmp_path, capsys, plotted_entropy):
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
    assert plotted_entropy == [None]  # a user's file has no known entropy


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


# --- The CLI owns only what it writes ---------------------------------------------

SMALL = ["--num-train", "600", "--num-test", "100", "--num-layers", "2", "--hidden-units", "8"]
SMALL += ["--verbose", "0"]


def _train(out, *extra, epochs=2):
    return cli.main(["train", "--out", str(out), "--epochs", str(epochs), *SMALL, *extra])


def test_a_folder_holding_the_users_own_backup_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "notes.txt").write_text("my own backup")
    assert _train(out) == 1
    assert "already holds backup, which tfp-flows did not write" in capsys.readouterr().err
    assert (out / "backup" / "notes.txt").read_text() == "my own backup"
    assert sorted(p.name for p in out.iterdir()) == ["backup"]


def test_the_users_model_keras_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_bytes(b"the user's model")
    assert _train(out) == 1
    assert "already holds model.keras" in capsys.readouterr().err
    assert (out / "model.keras").read_bytes() == b"the user's model"


def test_other_files_in_the_folder_are_left_alone(tmp_path, plotted_entropy):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _train(out) == 0
    assert plotted_entropy == [datasets.TRUE_ENTROPY["moons"]]  # training.png's floor
    assert (out / "notes.txt").read_text() == "keep me"
    record = json.loads((out / "run.json").read_text())
    assert record["state"] == "complete" and "notes.txt" not in record["files"]
    assert {"model.keras", "metrics.json", "history.csv", "plots/samples.png"} <= set(
        record["files"]
    )


def test_a_finished_run_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    stamp = (out / "model.keras").stat().st_mtime_ns
    (out / "plots" / "mine.png").write_bytes(b"a figure of my own")
    capsys.readouterr()
    assert _train(out) == 1
    assert "already holds a finished run (realnvp on moons, test NLL" in capsys.readouterr().err
    assert (out / "model.keras").stat().st_mtime_ns == stamp
    assert _train(out, "--overwrite", "--seed", "1") == 0
    assert (out / "model.keras").stat().st_mtime_ns != stamp
    assert (out / "plots" / "mine.png").read_bytes() == b"a figure of my own"
    assert json.loads((out / "metrics.json").read_text())["arguments"]["seed"] == 1


class _Interrupted(Exception):
    pass


def _interrupt_after(epochs, monkeypatch):
    """Makes the CLI's training stop abruptly right after epoch `epochs`'s backup."""

    from tfp_flows import callbacks

    class Interrupting(callbacks.AtomicBackupAndRestore):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch + 1 == epochs:
                raise _Interrupted

    monkeypatch.setattr(callbacks, "AtomicBackupAndRestore", Interrupting)


def test_a_resume_with_other_options_is_refused_by_name(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after(2, patch)
        with pytest.raises(_Interrupted):
            _train(out, epochs=4)
    assert (out / "backup").is_dir()
    capsys.readouterr()
    for changed, message in [
        (["--dataset", "circles"], '--dataset was "moons", now "circles"'),
        (["--num-layers", "3"], "--num-layers was 2, now 3"),  # the later option wins
        (["--no-standardize"], "--standardize was true, now false"),
    ]:
        assert _train(out, *changed, epochs=4) == 1
        err = capsys.readouterr().err
        assert "holds an interrupted run with other options" in err and message in err, err
    assert (out / "backup").is_dir()  # nothing of the interrupted run was touched

    # The same options resume it, say so, and log every epoch exactly once, even if
    # the kill came between an epoch's history row and its backup (a row too many).
    with open(out / "history.csv") as f:
        rows = f.read().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
    with open(out / "history.csv", "a") as f:
        f.write("2," + ",".join(rows[-1].split(",")[1:]) + "\n")
    assert _train(out, epochs=4) == 0
    assert "resuming the interrupted run in" in capsys.readouterr().out
    with open(out / "history.csv") as f:
        epochs = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == 2 and metrics["epochs_run"] == 4


def test_a_resume_with_overwrite_starts_afresh(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_after(1, patch)
        with pytest.raises(_Interrupted):
            _train(out, epochs=3)
    assert _train(out, "--dataset", "circles", "--overwrite", epochs=3) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "circles" and metrics["resumed_after_epoch"] is None
    assert metrics["epochs_run"] == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--export", "EXPORTS", "--name", "bad name"], "model name must be a plain folder name"),
        (["--export", "A_FILE"], "cannot create the export folder"),
        (["--out", "A_FILE"], "it is a file, not a folder|is not a folder"),
    ],
)
def test_output_paths_are_checked_before_training(
    tmp_path, capsys, monkeypatch, arguments, message
):
    (tmp_path / "A_FILE").write_text("a file")
    arguments = [str(tmp_path / a) if a in ("EXPORTS", "A_FILE") else a for a in arguments]
    loaded = []
    monkeypatch.setattr(datasets, "load", lambda *a, **k: loaded.append(a))
    out = [] if "--out" in arguments else ["--out", str(tmp_path / "run")]
    assert cli.main(["train", *out, *arguments, *SMALL]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert loaded == [] and not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--learning-rate", "nan"),
        ("--learning-rate", "0"),
        ("--clipnorm", "-1"),
        ("--seed", "-1"),
        ("--seed", str(2**32)),
        ("--num-test", "0"),
        ("--num-train", "-5"),
        ("--hidden-units", "0"),
        ("--epochs", "2.5"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["train", option, value])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_a_csv_with_missing_values_is_named(tmp_path, capsys):
    path = tmp_path / "gaps.csv"
    path.write_text("1.0,2.0\n3.0,nan\n5.0,6.0\n")
    assert cli.main(["train", "--data", str(path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "gaps.csv has missing or non-finite values (NaN, Inf) in 1 of 3 rows" in err
    assert not (tmp_path / "run").exists()


# --- A quiet, instant command line ----------------------------------------------------


def test_help_version_and_usage_errors_answer_without_importing_tensorflow():
    # What a user's `tfp-flows ...` runs: arguments first, TensorFlow only for real work.
    script = textwrap.dedent("""
        import contextlib, io, sys
        sys.argv = ["tfp-flows"]
        from tfp_flows.cli import main
        for argv in (["--version"], ["train", "--help"], ["train", "--flow", "nope"],
                     ["train", "--flow", "planar", "--num-bins", "4"], ["export", "--help"]):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(argv)
                except SystemExit as stop:
                    code = stop.code
            shown = (out.getvalue() + err.getvalue())[:1500].replace("\\n", " ")
            print(repr(argv), code, "tensorflow" in sys.modules, shown)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    for line in lines:
        assert " False " in line, line  # TensorFlow was not imported
    assert "tfp-flows 0.1.0" in lines[0] and " 0 " in lines[0]
    assert " 0 " in lines[1] and "--transformer" in lines[1]
    assert " 2 " in lines[2] and "invalid choice: 'nope'" in lines[2]
    assert (
        " 2 " in lines[3]
        and "--num-bins applies to spline transformers; planar has none" in lines[3]
    )


def test_help_gives_each_default_once():
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    assert "(default: None)" not in text and "(default: True)" not in text
    for action in train._actions:
        shown = train._get_formatter()._get_help_string(action) or ""
        assert shown.count("default") <= 1, (action.option_strings, shown)
    assert "(default: 64 64)" in " ".join(text.split())  # --hidden-units, a list
    assert "own data file" in " ".join(cli.build_parser().format_help().split())


def test_the_parsers_tables_match_the_library():
    import inspect

    from tfp_flows import continuous, flows
    from tfp_flows.bijectors import continuous as ode
    from tfp_flows.bijectors import transformers

    families = {**flows.FLOWS, "cnf": flows.cnf}
    assert sorted(cli.FLOW_LAYERS) == sorted(families)
    for name, factory in families.items():
        parameters = inspect.signature(factory).parameters
        assert cli.FLOW_LAYERS[name] == parameters["num_layers"].default, name
        assert (name in cli.NETWORK_FLOWS) == ("hidden_units" in parameters), name
    parameters = inspect.signature(flows.cnf).parameters
    assert cli.CNF_OPTIONS == {option: parameters[option].default for option in cli.CNF_OPTIONS}
    assert cli.CNF_TRAININGS == continuous.TRAININGS and cli.CNF_SOLVERS == ode.SOLVERS
    assert cli.TRANSFORMERS == tuple(transformers.TRANSFORMERS)
    expected = {}
    for transformer in transformers.TRANSFORMERS:
        for option, default in transformers.defaults(transformer).items():
            names, _ = expected.get(option, ((), None))
            expected[option] = ((*names, transformer), default)
    assert cli.TRANSFORMER_OPTIONS == expected
    assert cli.DATASETS == datasets.NAMES


@pytest.mark.parametrize(
    ("content", "arguments", "columns", "delimiter"),
    [
        ("x;y;z\n1;2;3\n4;5;6\n7;8;9\n", [], ("x", "y", "z"), "';'"),
        ("a\tb\n1\t2\n3\t4\n5\t6\n", [], ("a", "b"), "'\\t'"),
        ("1 2\n3 4\n5 6\n", [], None, "whitespace"),
        ("1|2\n3|4\n5|6\n", ["--delimiter", "|"], None, "'|'"),
        ("10,20\n1,2\n3,4\n", ["--header", "yes"], ("10", "20"), "','"),
    ],
)
def test_data_files_with_headers_and_delimiters(tmp_path, content, arguments, columns, delimiter):
    path = tmp_path / "table.txt"
    path.write_text(content)
    parsed = cli.build_parser().parse_args(["train", "--data", str(path), *arguments])
    data = datasets.load_file(path, delimiter=parsed.delimiter, header=parsed.header)
    assert data.columns == columns
    assert delimiter in data.description
    rows = [line for line in content.splitlines()[1 if columns else 0 :]]
    assert len(data.train) + len(data.test) == len(rows)
    first = [
        float(v) for v in rows[0].replace(";", " ").replace("|", " ").replace(",", " ").split()
    ]
    assert any(np.allclose(row, first) for row in np.concatenate([data.train, data.test]))


@pytest.mark.parametrize(
    ("content", "arguments", "message"),
    [
        ("x,y\n1,2\n3,4\n", ["--header", "no"], "line 1, column 1 is 'x', not a number"),
        ("1,2\n3,\n5,6\n", [], "line 2, column 2 is an empty field \\(a missing value\\)"),
        ("1,2\n3,4,5\n", [], "line 2: 3 fields where the rows before have 2"),
        ("a,b,c\n1,2\n3,4\n", [], "the header names 3 columns but the rows have 2"),
    ],
)
def test_unreadable_tables_are_named_with_a_hint(tmp_path, capsys, content, arguments, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    argv = ["train", "--data", str(path), "--out", str(tmp_path / "run"), *arguments]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


# --- The continuous flow ------------------------------------------------------------


def test_cnf_trains_by_flow_matching_and_a_resume_must_keep_its_training(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "cnf"
    cnf = ["--flow", "cnf", "--training", "flow_matching", "--solver", "rk4", "--num-steps", "4"]
    with monkeypatch.context() as patch:
        _interrupt_after(1, patch)
        with pytest.raises(_Interrupted):
            _train(out, *cnf)
    capsys.readouterr()
    changed = [*cnf[:3], "maximum_likelihood", *cnf[4:]]
    assert _train(out, *changed) == 1
    assert '--training was "flow_matching", now "maximum_likelihood"' in capsys.readouterr().err
    assert _train(out, *cnf) == 0
    assert "cnf (flow matching) on moons: test NLL" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == 1 and metrics["epochs_run"] == 2
    model = keras.models.load_model(out / "model.keras")
    assert model.training == "flow_matching"
    steps = [(layer.solver, layer.num_steps) for layer in model.continuous_layers]
    assert steps == [("rk4", 4)] * 2  # SMALL's --num-layers 2
    test = datasets.load("moons", num_train=600, num_test=100, seed=0).test
    assert -float(np.mean(model.log_prob(test))) == pytest.approx(metrics["test_nll"], abs=1e-5)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--solver", "rk4"], "--solver applies to cnf, not to realnvp"),
        (["--flow", "cnf", "--num-steps", "8"], "--num-steps applies to the rk4 solver, not"),
        (["--flow", "cnf", "--solver", "rk4", "--rtol", "1e-3"], "--rtol applies to the dopri5"),
    ],
)
def test_cnf_options_apply_where_they_mean_something(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
