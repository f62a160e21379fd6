"""SavedModel export: signatures, equality with the in-memory model, TF Serving's loader."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import flows
from tfp_flows.export import SIGNATURES, describe, export_saved_model, versions

SAVED_MODEL_CLI = pathlib.Path(sys.executable).with_name("saved_model_cli")


def _trained_like(family, dtype="float32"):
    keras.utils.set_random_seed(0)
    model = flows.FLOWS[family](2, num_layers=3, dtype=dtype)
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(weight + 0.2 * rng.standard_normal(weight.shape).astype(dtype))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _trained_like("realnvp")
    base = tmp_path_factory.mktemp("saved_models")
    return model, pathlib.Path(export_saved_model(model, base, "moons"))


def _points(n=7, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2)).astype("float32")


def test_layout_and_signatures(exported):
    model, path = exported
    assert path.name == "1" and (path / "saved_model.pb").is_file()
    assert (path / "variables").is_dir()
    signatures = describe(path.parent)[1]
    assert set(signatures) == set(SIGNATURES)
    assert signatures["log_prob"] == {
        "inputs": {"x": ["float32", [None, 2]]},
        "outputs": {"log_prob": ["float32", [None]]},
    }
    assert signatures["serving_default"] == signatures["log_prob"]
    assert signatures["sample"]["inputs"] == {"n": ["int32", []], "seed": ["int32", [2]]}
    assert signatures["sample"]["outputs"] == {"samples": ["float32", [None, 2]]}
    assert set(signatures["forward"]["outputs"]) == {"x", "log_det"}
    assert set(signatures["inverse"]["outputs"]) == {"z", "log_det"}


@pytest.mark.parametrize("family", sorted(flows.FLOWS))
def test_every_signature_matches_the_model(family, tmp_path):
    model = _trained_like(family)
    loaded = tf.saved_model.load(export_saved_model(model, tmp_path, family)).signatures
    x = _points()
    np.testing.assert_allclose(loaded["log_prob"](x=x)["log_prob"], model.log_prob(x), atol=1e-5)
    np.testing.assert_allclose(
        loaded["serving_default"](x=x)["log_prob"], model.log_prob(x), atol=1e-5
    )
    np.testing.assert_allclose(
        loaded["bits_per_dim"](x=x)["bits_per_dim"], model.bits_per_dim(x), atol=1e-5
    )
    samples = loaded["sample"](n=tf.constant(6), seed=tf.constant([3, 4]))["samples"]
    np.testing.assert_allclose(samples, model.sample(6, seed=[3, 4]), atol=1e-5)
    forward = loaded["forward"](z=x)
    np.testing.assert_allclose(forward["x"], model.forward(x), atol=1e-5)
    np.testing.assert_allclose(
        forward["log_det"], model.bijector.forward_log_det_jacobian(x, event_ndims=1), atol=1e-5
    )
    inverse = loaded["inverse"](x=x)
    np.testing.assert_allclose(inverse["z"], model.inverse(x), atol=1e-5)
    np.testing.assert_allclose(
        inverse["log_det"], model.bijector.inverse_log_det_jacobian(x, event_ndims=1), atol=1e-5
    )


def test_float64_model_exports_float64_signatures(tmp_path):
    model = _trained_like("planar", dtype="float64")
    path = export_saved_model(model, tmp_path, "planar64")
    signature = describe(os.path.dirname(path))[1]["log_prob"]
    assert signature["inputs"]["x"][0] == "float64"


LOAD_WITHOUT_THE_LIBRARIES = textwrap.dedent("""
    import sys
    # Make both libraries unimportable, as on a serving machine without them.
    sys.modules["tensorflow_probability"] = None
    sys.modules["tfp_flows"] = None
    import numpy as np
    import tensorflow as tf
    path, inputs = sys.argv[1], np.load(sys.argv[2])
    signatures = tf.saved_model.load(path).signatures
    out = {
        "log_prob": signatures["log_prob"](x=tf.constant(inputs))["log_prob"].numpy().tolist(),
        "samples": signatures["sample"](n=tf.constant(4), seed=tf.constant([5, 6]))[
            "samples"].numpy().tolist(),
    }
    for name in ("tensorflow_probability", "tfp_flows"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(name + " was importable")
    print("RESULT", __import__("json").dumps(out))
""")


def test_loads_and_runs_without_tfp_or_tfp_flows(exported, tmp_path):
    model, path = exported
    x = _points(11)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_THE_LIBRARIES, str(path), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    np.testing.assert_allclose(out["log_prob"], model.log_prob(x), atol=1e-5)
    np.testing.assert_allclose(out["samples"], model.sample(4, seed=[5, 6]), atol=1e-5)


def test_saved_model_cli_show_and_run(exported, tmp_path):
    model, path = exported
    shown = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", path, "--all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in shown.stdout
    x = _points(9, seed=1)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "log_prob",
            "--inputs",
            f"x={tmp_path / 'x.npy'}",
            "--outdir",
            tmp_path / "out",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "log_prob.npy"), model.log_prob(x), atol=1e-5
    )


def test_versions_count_up_and_are_never_overwritten(exported, tmp_path):
    model, _ = exported
    first = export_saved_model(model, tmp_path, "m")
    second = export_saved_model(model, tmp_path, "m")
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    stamp = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    with pytest.raises(FileExistsError, match="already exists"):
        export_saved_model(model, tmp_path, "m", version=1)
    assert os.path.getmtime(os.path.join(first, "saved_model.pb")) == stamp
    assert export_saved_model(model, tmp_path, "m", version=7).endswith("7")
    assert versions(tmp_path / "m") == [1, 2, 7]
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2", "7"]


def test_failed_export_leaves_nothing_behind(exported, tmp_path, monkeypatch):
    model, _ = exported

    def interrupted(self, path, **kwargs):
        os.makedirs(os.path.join(path, "variables"))
        raise KeyboardInterrupt("interrupted mid-write")

    # ExportArchive() hands out a backend-specific subclass: patch that one.
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(model, tmp_path, "m")
    assert os.listdir(tmp_path / "m") == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"version": 0}, ValueError, "positive integer"),
        ({"version": "2"}, ValueError, "positive integer"),
        ({"name": "../escape"}, ValueError, "plain folder name"),
    ],
)
def test_bad_export_arguments(exported, tmp_path, kwargs, error, message):
    model, _ = exported
    with pytest.raises(error, match=message):
        export_saved_model(model, tmp_path, **{"name": "m", **kwargs})


def test_unwritable_base_path_is_named(exported, tmp_path):
    model, _ = exported
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot create the export folder"):
        export_saved_model(model, blocker, "m")


def test_describe_names_missing_and_corrupt_exports(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        describe(tmp_path / "none")
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="cannot load the SavedModel at .*broken"):
        describe(tmp_path / "broken")


def test_conditional_export_takes_a_context_in_every_signature(tmp_path):
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2, context_size=3)
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(weight + 0.2 * rng.standard_normal(weight.shape).astype("float32"))
    path = pathlib.Path(export_saved_model(model, tmp_path, "conditional"))
    signatures = describe(path.parent)[1]
    for name in SIGNATURES:
        assert signatures[name]["inputs"]["context"] == ["float32", [None, 3]], name
    assert signatures["sample"]["outputs"] == {"samples": ["float32", [None, None, 2]]}

    loaded = tf.saved_model.load(str(path)).signatures
    x, context = _points(5), rng.standard_normal((5, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded["log_prob"](x=x, context=context)["log_prob"],
        model.log_prob(x, context=context),
        atol=1e-5,
    )
    samples = loaded["sample"](n=tf.constant(4), seed=tf.constant([1, 2]), context=context)
    np.testing.assert_allclose(
        samples["samples"], model.sample(4, seed=[1, 2], context=context), atol=1e-5
    )
    inverse = loaded["inverse"](x=x, context=context)
    np.testing.assert_allclose(inverse["z"], model.inverse(x, context=context), atol=1e-5)
    forward = loaded["forward"](z=inverse["z"], context=context)
    np.testing.assert_allclose(forward["log_det"], -inverse["log_det"], atol=1e-5)

    # TF Serving's loader path, with both inputs.
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "context.npy", context)
    run = subprocess.run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "log_prob",
            "--inputs",
            f"x={tmp_path / 'x.npy'};context={tmp_path / 'context.npy'}",
            "--outdir",
            tmp_path / "out",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "log_prob.npy"), model.log_prob(x, context=context), atol=1e-5
    )
