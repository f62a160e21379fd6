"""Portable exports: each family converted, run in its real runtime, compared with the model.

Tiny untrained models with randomised weights (nothing is trained): the
conversions dominate the time, so each (family, format) is converted once
per module and shared by the tests.
"""

import json
import os
import pathlib
import re

import numpy as np
import pytest

from tfp_flows import cli, flows, portable

TOLERANCE = 1e-4  # of max(1, |value|), as the issue asks
ROWS = 6


def _randomised(model, stddev, seed=0, data=None):
    """Builds `model` (initialising ActNorm from `data`) and moves its weights off the identity."""
    data = data if data is not None else np.zeros((2, *model.event_shape), np.float32)
    model.log_prob(data)
    if model.needs_data_initialization:
        model.initialize_from_data(data)
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(weight.numpy() + stddev * rng.standard_normal(weight.shape).astype("float32"))
    return model


def _glow():
    model = flows.glow((4, 4, 2), levels=1, steps_per_level=1, hidden_channels=4)
    pixels = np.random.default_rng(1).uniform(0, 256, (16, 4, 4, 2)).astype(np.float32)
    # A ResNet sums 9·channels inputs: a small scale keeps its outputs O(1) (see the registry).
    return _randomised(model, 0.1, data=pixels)


# The CLI's and the factories' usual models end in a standardising step (a constant
# Jacobian whose log-det TFLite once folded to its first term, and whose TFP constants
# tf2onnx wanted as inputs): RealNVP and MAF here have one, of unequal scales.
DATA = np.random.default_rng(2).normal([1.0, -1.0, 0.0], [2.0, 0.5, 3.0], (200, 3))
FAMILIES = {
    "realnvp": lambda: _randomised(
        flows.realnvp(3, num_layers=2, hidden_units=8, standardize=DATA), 0.3
    ),
    "nsf": lambda: _randomised(flows.nsf(3, num_layers=2, hidden_units=8, num_bins=4), 0.3),
    "maf": lambda: _randomised(flows.maf(3, num_layers=2, hidden_units=8, standardize=DATA), 0.3),
    "planar": lambda: _randomised(flows.planar(3, num_layers=3), 0.5),
    "radial": lambda: _randomised(flows.radial(3, num_layers=3), 0.5),
    "glow": _glow,
}
CONVERTIBLE = [
    (name, fmt)
    for name in FAMILIES
    for fmt in ("tflite", "onnx")
    if (name, fmt) != ("glow", "onnx")
]


@pytest.fixture(scope="module")
def models():
    return {name: make() for name, make in FAMILIES.items()}


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    """{(family, format): (folder, loaded export)}, converted lazily, once per module."""
    cache = {}
    base = tmp_path_factory.mktemp("portable")

    def get(name, fmt):
        if (name, fmt) not in cache:
            writer = portable.export_tflite if fmt == "tflite" else portable.export_onnx
            folder = pathlib.Path(writer(models[name], base / f"{name}_{fmt}"))
            cache[name, fmt] = folder, portable.load(folder)
        return cache[name, fmt]

    return get


def _points(model, seed=3):
    """Base noise z and its forward image x, the data-side points (in a bounded flow's support)."""
    z = np.random.default_rng(seed).standard_normal((ROWS, *model.event_shape)).astype(np.float32)
    return z, np.array(model.forward(z))


def _close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    error = np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))
    assert error <= TOLERANCE, error
    return error


@pytest.mark.parametrize("name,fmt", CONVERTIBLE)
def test_every_signature_equals_the_model_in_its_runtime(models, exports, name, fmt):
    model = models[name]
    folder, exported = exports(name, fmt)
    assert set(exported.signatures) == set(portable.SIGNATURES)
    z, x = _points(model)
    _close(exported.run("log_prob", x=x)["log_prob"], model.log_prob(x))
    forward = exported.run("forward", z=z)
    want_x, want_log_det = model.forward_and_log_det(z)
    _close(forward["x"], want_x)
    _close(forward["log_det"], want_log_det)
    inverse = exported.run("inverse", x=x)
    want_z, want_log_det = model.inverse_and_log_det(x)
    _close(inverse["z"], want_z)
    _close(inverse["log_det"], want_log_det)
    # Sampling without an RNG op: the caller's noise through the forward map.
    _close(exported.run("from_noise", z=z)["samples"], model.forward(z))
    # The batch is dynamic: one row and a larger batch run too.
    _close(exported.run("log_prob", x=x[:1])["log_prob"], model.log_prob(x[:1]))
    many = np.concatenate([z] * 5)
    _close(exported.run("from_noise", z=many)["samples"], model.forward(many))
    # The manifest records the checked errors, each within the tolerance.
    manifest = json.loads((folder / portable.MANIFEST).read_text())
    assert manifest["format"] == fmt and manifest["family"].startswith(name)
    for outputs in manifest["max_error"].values():
        assert all(0 <= error <= portable.TOLERANCE for error in outputs.values())
    assert sorted(os.listdir(folder)) == sorted([portable.MANIFEST, *manifest["files"]])


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_nan_and_infinite_rows_keep_their_answers(models, exports, fmt):
    model = models["realnvp"]
    _, exported = exports("realnvp", fmt)
    _, x = _points(model)
    x[1], x[2], x[3] = np.nan, np.inf, -np.inf
    got = exported.run("log_prob", x=x)["log_prob"]
    want = np.asarray(model.log_prob(x))
    assert np.isnan(got[1]) and np.isnan(want[1])
    assert got[2] == got[3] == want[2] == -np.inf  # TFLite stores a constant -inf as -3.4e38
    _close(got[[0, 4, 5]], want[[0, 4, 5]])


@pytest.mark.parametrize("name", ["nsf", "planar"])
def test_the_tflite_file_holds_built_in_ops_only(exports, name, capfd):
    import tensorflow as tf

    folder, _ = exports(name, "tflite")
    capfd.readouterr()
    tf.lite.experimental.Analyzer.analyze(
        model_content=(folder / portable.TFLITE_FILE).read_bytes()
    )
    report = capfd.readouterr().out
    assert "Subgraph#0" in report
    ops = set(re.findall(r"Op#\d+ (\w+)", report))
    assert ops and not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_conditional_flow_runs_with_its_context(fmt, tmp_path):
    model = flows.realnvp(3, num_layers=2, hidden_units=8, context_size=2)
    model.log_prob(np.zeros((1, 3), np.float32), np.zeros((1, 2), np.float32))
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(0.3 * rng.standard_normal(weight.shape).astype("float32"))
    export = portable.export_tflite if fmt == "tflite" else portable.export_onnx
    exported = portable.load(export(model, tmp_path / "conditional"))
    rng = np.random.default_rng(5)
    z = rng.standard_normal((ROWS, 3)).astype(np.float32)
    context = rng.standard_normal((ROWS, 2)).astype(np.float32)
    x = np.asarray(model.forward(z, context))
    _close(exported.run("log_prob", x=x, context=context)["log_prob"], model.log_prob(x, context))
    samples = exported.run("from_noise", z=z, context=context)["samples"]
    _close(samples, model.forward(z, context))
    # The context matters: another context gives other samples.
    assert not np.allclose(samples, exported.run("from_noise", z=z, context=-context)["samples"])


def test_families_that_cannot_convert_are_refused_by_name(models, tmp_path):
    with pytest.raises(portable.PortableExportError, match="glow .*cannot be exported to ONNX"):
        portable.export_onnx(models["glow"], tmp_path / "glow")
    wide = flows.realnvp(2, num_layers=1, hidden_units=4, dtype="float64")
    wide.log_prob(np.zeros((1, 2)))
    with pytest.raises(portable.PortableExportError, match="float32"):
        portable.export_tflite(wide, tmp_path / "wide")
    assert os.listdir(tmp_path) == []  # nothing written, not even a temporary folder


def test_a_wrong_conversion_is_refused_not_written(models, tmp_path, monkeypatch):
    model = models["realnvp"]
    real = portable.runtime

    def off_by_a_little(fmt, content):
        exported = real(fmt, content)
        runner = exported._runners["forward"]
        exported._runners["forward"] = lambda inputs: {
            key: value + 1e-3 for key, value in runner(inputs).items()
        }
        return exported

    monkeypatch.setattr(portable, "runtime", off_by_a_little)
    with pytest.raises(portable.PortableExportError, match="'forward' output .* differs"):
        portable.export_tflite(model, tmp_path / "wrong")
    assert os.listdir(tmp_path) == []


def test_an_existing_path_is_never_overwritten(models, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="never overwrite"):
        portable.export_tflite(models["realnvp"], mine)
    assert os.listdir(mine) == ["notes.txt"]


def test_cli_exports_tflite_to_a_versioned_folder(models, tmp_path, capsys):
    run, base = tmp_path / "run", tmp_path / "saved_models"
    run.mkdir()
    model = models["realnvp"]
    model.save(run / "model.keras")
    argv = ["export", str(run), "--name", "moons", "--base-path", str(base), "--format", "tflite"]
    assert cli.main(argv) == 0
    assert "as tflite to" in capsys.readouterr().out
    assert os.listdir(base / "moons" / "tflite") == ["1"]
    exported = portable.load(base / "moons" / "tflite" / "1")
    z, x = _points(model)
    _close(exported.run("log_prob", x=x)["log_prob"], model.log_prob(x))
    # An existing version is refused before the model is loaded or converted.
    assert cli.main([*argv, "--version", "1"]) == 1
    assert "already exists" in capsys.readouterr().err
    # TF Serving's integer versions under base/moons are untouched: none were made.
    assert [entry for entry in os.listdir(base / "moons") if entry.isdigit()] == []


def test_cli_names_a_family_it_cannot_convert_and_writes_nothing(models, tmp_path, capsys):
    run, base = tmp_path / "run", tmp_path / "saved_models"
    run.mkdir()
    models["glow"].save(run / "model.keras")
    argv = ["export", str(run), "--name", "glow", "--base-path", str(base), "--format", "onnx"]
    assert cli.main(argv) == 1
    assert "glow + logit cannot be exported to ONNX" in capsys.readouterr().err
    assert not base.exists()


def test_cli_checks_the_destination_before_loading_the_run(tmp_path, capsys):
    taken = tmp_path / "saved_models"
    taken.write_text("a file, not a folder")
    argv = ["export", str(tmp_path / "no_run"), "--name", "m", "--base-path", str(taken)]
    assert cli.main([*argv, "--format", "tflite"]) == 1
    error = capsys.readouterr().err
    assert "is not a folder" in error and "no trained model" not in error
    assert taken.read_text() == "a file, not a folder"


def test_onnx_without_its_extra_is_a_named_error(models, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    with pytest.raises(portable.PortableExportError, match=r"needs tf2onnx.*tfp-flows\[portable\]"):
        portable.export_onnx(models["realnvp"], tmp_path / "onnx")
    assert os.listdir(tmp_path) == []
