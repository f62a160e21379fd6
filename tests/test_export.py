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


def _assert_runs_without_the_libraries(model, path, x, tmp_path):
    """The export at `path` loads where TFP and tfp_flows are absent and answers as `model`."""
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


def test_loads_and_runs_without_tfp_or_tfp_flows(exported, tmp_path):
    model, path = exported
    _assert_runs_without_the_libraries(model, path, _points(11), tmp_path)


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
    out = _saved_model_cli_run(path, "log_prob", {"x": x}, tmp_path)
    np.testing.assert_allclose(np.load(out / "log_prob.npy"), model.log_prob(x), atol=1e-5)


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


# --- Edges: every input gets the model's answer; exporters never collide ------------

NAN_CONTEXT_CHECK = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    signatures = tf.saved_model.load(sys.argv[1]).signatures
    x, context = np.load(sys.argv[2]), np.load(sys.argv[3])
    log_prob = signatures["log_prob"](x=x, context=context)["log_prob"].numpy()
    samples = signatures["sample"](n=tf.constant(2), seed=tf.constant([1, 2]), context=context)
    z = signatures["inverse"](x=x, context=context)["z"].numpy()
    print("RESULT", json.dumps({
        "log_prob": log_prob.tolist(),
        "samples": samples["samples"].numpy().tolist(),
        "z": z.tolist(),
    }).replace("NaN", '"nan"'))
""")


@pytest.fixture(scope="module")
def conditional_export(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2, context_size=3)
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(weight + 0.2 * rng.standard_normal(weight.shape).astype("float32"))
    base = tmp_path_factory.mktemp("conditional")
    return model, pathlib.Path(export_saved_model(model, base, "c", max_samples=50))


def test_export_gives_nan_for_non_finite_contexts_on_every_kernel_setting(
    conditional_export, tmp_path
):
    # With NaN in a context, ReLU kernels may return 0 (oneDNN) or NaN: the export must
    # give NaN either way, never a plausible number.
    model, path = conditional_export
    x = _points(4)
    context = np.array([[0.1, 0.2, 0.3], [np.nan, 0, 0], [0, np.inf, 0], [1, 1, 1]], "float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "context.npy", context)
    good = model.log_prob(x[[0, 3]], context=context[[0, 3]]).numpy()
    for onednn in ("0", "1"):
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                NAN_CONTEXT_CHECK,
                str(path),
                *(str(tmp_path / f) for f in ("x.npy", "context.npy")),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        out = json.loads(result.stdout.split("RESULT ", 1)[1])
        log_prob = np.array(out["log_prob"], dtype=float)
        assert np.isnan(log_prob[1:3]).all(), (onednn, log_prob)
        np.testing.assert_allclose(log_prob[[0, 3]], good, atol=1e-5)
        samples, z = np.array(out["samples"], dtype=float), np.array(out["z"], dtype=float)
        assert np.isnan(samples[:, 1:3]).all() and np.isfinite(samples[:, [0, 3]]).all()
        assert np.isnan(z[1:3]).all() and np.isfinite(z[[0, 3]]).all()


def test_export_sample_takes_at_most_max_samples(conditional_export):
    model, path = conditional_export
    sample = tf.saved_model.load(str(path)).signatures["sample"]
    context = np.zeros((1, 3), "float32")
    assert sample(n=tf.constant(50), seed=tf.constant([1, 2]), context=context)[
        "samples"
    ].shape == (50, 1, 2)
    for n in (51, 2**31 - 1, 0, -4):
        with pytest.raises(tf.errors.InvalidArgumentError, match="sample: n must be"):
            sample(n=tf.constant(n), seed=tf.constant([1, 2]), context=context)


def test_export_rows_with_nan_or_inf_x(exported):
    model, path = exported
    x = np.array([[0.1, 0.2], [np.nan, 0.0], [np.inf, 1.0]], "float32")
    log_prob = tf.saved_model.load(str(path)).signatures["log_prob"](x=x)["log_prob"].numpy()
    assert np.isfinite(log_prob[0]) and np.isnan(log_prob[1]) and np.isneginf(log_prob[2])
    np.testing.assert_allclose(log_prob, model.log_prob(x), atol=1e-5)


def test_concurrent_exporters_each_get_their_own_version(exported, tmp_path, monkeypatch):
    # Another process finishes version 1 after this one looked for the next free version:
    # the rename into place fails, and this export takes version 2 instead of failing.
    from tfp_flows import export

    model, _ = exported
    first = export_saved_model(model, tmp_path, "m")
    looked = []

    def stale_versions(model_dir):
        looked.append(model_dir)
        return [] if len(looked) == 1 else versions(model_dir)

    monkeypatch.setattr(export, "versions", stale_versions)
    second = export_saved_model(model, tmp_path, "m")
    assert os.path.basename(first) == "1" and os.path.basename(second) == "2"
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]


def test_two_processes_export_the_same_name_at_once(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        import keras
        from tfp_flows import flows
        from tfp_flows.export import export_saved_model
        model = flows.planar(2, num_layers=1)
        while time.time() < float(sys.argv[2]):
            time.sleep(0.01)
        print("EXPORTED", export_saved_model(model, sys.argv[1], "same"))
    """)
    import time

    start = str(time.time() + 25)  # both processes have imported TensorFlow by then
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    paths = sorted(out.split("EXPORTED ", 1)[1].strip() for out, _ in outputs)
    assert [os.path.basename(p) for p in paths] == ["1", "2"]
    assert sorted(os.listdir(tmp_path / "same")) == ["1", "2"]


def test_stale_temporary_folders_of_killed_exports_are_removed(exported, tmp_path):
    from tfp_flows.export import remove_stale_staging

    model, _ = exported
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    model_dir = tmp_path / "m"
    stale = model_dir / f".tmp-{dead.pid}-abc"
    stale.mkdir(parents=True)
    (stale / "tfp_flows_export.json").write_text(
        json.dumps({"host": __import__("socket").gethostname(), "pid": dead.pid})
    )
    (stale / "export").mkdir()
    alive = model_dir / f".tmp-{os.getpid()}-def"  # a live exporter's: left alone
    alive.mkdir()
    (alive / "tfp_flows_export.json").write_text(
        json.dumps({"host": __import__("socket").gethostname(), "pid": os.getpid()})
    )
    foreign = model_dir / ".tmp-mine"  # not ours (no owner file): left alone
    foreign.mkdir()
    export_saved_model(model, tmp_path, "m")
    assert not stale.exists() and alive.exists() and foreign.exists()
    assert sorted(os.listdir(model_dir)) == sorted([".tmp-mine", alive.name, "1"])
    assert remove_stale_staging(model_dir) == []


def test_non_ascii_digit_folders_are_not_versions(exported, tmp_path):
    model, _ = exported
    model_dir = tmp_path / "m"
    for name in ("²", "١٢", "3a"):
        (model_dir / name).mkdir(parents=True)
    assert versions(model_dir) == []
    path = export_saved_model(model, tmp_path, "m")
    assert os.path.basename(path) == "1"
    assert list(describe(model_dir)) == [1]


# --- Continuous flows: the ODE solver runs inside the SavedModel ------------------------


def _cnf_like_trained(solver, context_size=None):
    from tfp_flows.continuous import cnf

    keras.utils.set_random_seed(0)
    model = cnf(2, hidden_units=(16,), solver=solver, num_steps=4, context_size=context_size)
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:  # the output layer starts at zero: move it
        weight.assign(weight + 0.2 * rng.standard_normal(weight.shape).astype("float32"))
    return model


def _saved_model_cli_run(path, signature, inputs, outdir):
    """The outputs of `saved_model_cli run` (TF Serving's loader) on {name: array} inputs."""
    for name, value in inputs.items():
        np.save(outdir / f"{name}.npy", value)
    run = subprocess.run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            signature,
            "--inputs",
            ";".join(f"{name}={outdir / f'{name}.npy'}" for name in inputs),
            "--outdir",
            outdir / "out",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return outdir / "out"


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_cnf_signatures_run_the_solver_and_match_the_model(solver, tmp_path):
    model = _cnf_like_trained(solver)
    path = export_saved_model(model, tmp_path, f"cnf_{solver}")
    loaded = tf.saved_model.load(path).signatures
    x = _points()
    assert np.abs(model.log_prob(x) - model.base_distribution.log_prob(x)).max() > 0.01
    np.testing.assert_allclose(loaded["log_prob"](x=x)["log_prob"], model.log_prob(x), atol=1e-5)
    samples = loaded["sample"](n=tf.constant(6), seed=tf.constant([3, 4]))["samples"]
    np.testing.assert_allclose(samples, model.sample(6, seed=[3, 4]), atol=1e-5)
    forward, inverse = loaded["forward"](z=x), loaded["inverse"](x=x)
    np.testing.assert_allclose(forward["x"], model.forward(x), atol=1e-5)
    np.testing.assert_allclose(inverse["z"], model.inverse(x), atol=1e-5)
    np.testing.assert_allclose(
        inverse["log_det"], model.bijector.inverse_log_det_jacobian(x, event_ndims=1), atol=1e-5
    )
    if solver != "rk4":
        return
    # TF Serving's loader, and a machine without TFP or tfp_flows
    out = _saved_model_cli_run(path, "log_prob", {"x": x}, tmp_path)
    np.testing.assert_allclose(np.load(out / "log_prob.npy"), model.log_prob(x), atol=1e-5)
    _assert_runs_without_the_libraries(model, path, x, tmp_path)


def test_conditional_cnf_export_takes_a_context(tmp_path):
    model = _cnf_like_trained("rk4", context_size=3)
    path = export_saved_model(model, tmp_path, "cnf_conditional")
    signatures = describe(os.path.dirname(path))[1]
    for name in SIGNATURES:
        assert signatures[name]["inputs"]["context"] == ["float32", [None, 3]], name
    loaded = tf.saved_model.load(path).signatures
    x = _points(5)
    context = np.random.default_rng(1).standard_normal((5, 3)).astype("float32")
    expected = model.log_prob(x, context=context)
    assert np.abs(expected - model.log_prob(x, context=context[::-1])).max() > 1e-3
    np.testing.assert_allclose(
        loaded["log_prob"](x=x, context=context)["log_prob"], expected, atol=1e-5
    )
    samples = loaded["sample"](n=tf.constant(4), seed=tf.constant([1, 2]), context=context)
    np.testing.assert_allclose(
        samples["samples"], model.sample(4, seed=[1, 2], context=context), atol=1e-5
    )
    out = _saved_model_cli_run(path, "log_prob", {"x": x, "context": context}, tmp_path)
    np.testing.assert_allclose(np.load(out / "log_prob.npy"), expected, atol=1e-5)
