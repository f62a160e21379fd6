"""The README's two set-up commands are the ones CI and users run."""

import json
import pathlib
import re

import numpy as np
import tensorflow as tf

from tfp_flows import flows
from tfp_flows.export import describe, export_saved_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands():
    """The README's set-up commands: (main job, tests)."""
    found = re.findall(
        r"```bash\n(python3 -m venv .venv && [^\n]+)\n```", (ROOT / "README.md").read_text()
    )
    main_jobs = [c for c in found if "tfp-flows train" in c]
    tests = [c for c in found if "pytest" in c]
    assert len(main_jobs) == len(tests) == 1, found
    return main_jobs[0], tests[0]


def test_ci_runs_the_readme_test_command():
    _, tests = _commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_main_job_options_exist():
    from tfp_flows.cli import build_parser

    main_job, _ = _commands()
    arguments = main_job.split("tfp-flows ", 1)[1].split()
    args = build_parser().parse_args(arguments)  # exits on an unknown option
    assert (args.dataset, args.flow) == ("moons", "realnvp")
    assert args.export == "saved_models"  # the main job also writes a TF Serving export


def _rest_examples():
    """(request body, response body) pairs of the README's curl examples."""
    text = (ROOT / "README.md").read_text()
    pairs = re.findall(r"curl [^\n]*-d '(\{.*?\})'\n```\n```json\n(\{.*?\})\n```", text)
    assert len(pairs) == 2, pairs
    return [(json.loads(request), json.loads(response)) for request, response in pairs]


def test_readme_rest_requests_match_the_exported_signatures(tmp_path):
    model = flows.realnvp(2, num_layers=2)
    path = export_saved_model(model, tmp_path, "moons")
    described = describe(tmp_path / "moons")[1]
    signatures = tf.saved_model.load(path).signatures
    for request, response in _rest_examples():
        name = request["signature_name"]
        inputs, outputs = described[name]["inputs"], described[name]["outputs"]
        if "instances" in request:  # row format: one input, batched
            ((key, (dtype, shape)),) = inputs.items()
            feed = {key: tf.constant(request["instances"], dtype)}
            assert [len(row) for row in request["instances"]] == [shape[1]] * len(feed[key])
        else:  # columnar format: named inputs
            assert set(request["inputs"]) == set(inputs)
            feed = {
                key: tf.constant(value, inputs[key][0]) for key, value in request["inputs"].items()
            }
            for key, value in feed.items():
                assert tf.TensorShape(inputs[key][1]).is_compatible_with(value.shape)
        result = signatures[name](**feed)
        ((output_name, _),) = outputs.items()  # one output: TF Serving returns it unnamed
        shown = response["predictions" if "instances" in request else "outputs"]
        assert np.shape(shown) == tuple(result[output_name].shape)


def test_gallery_shows_every_example_with_a_small_figure():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_gallery", ROOT / "examples" / "make_gallery.py"
    )
    gallery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gallery)
    readme = (ROOT / "README.md").read_text()
    examples = {p.stem for p in (ROOT / "examples").glob("*.py")}
    for name in gallery.GALLERY:
        assert name in examples, name
        assert f"(examples/{name}.py)" in readme and f"![](docs/{name}.png)" in readme, name
        figure = ROOT / "docs" / f"{name}.png"
        assert 0 < figure.stat().st_size < gallery.MAX_BYTES, figure
    assert "python examples/make_gallery.py" in readme


def _python_snippets():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_snippets_that_import_define_every_name_they_use():
    # A snippet that starts with its imports is one a user copies alone: every name it
    # uses must come from it (the variational-inference one once lacked `import keras`).
    # Snippets without imports continue the one before and are left out.
    import subprocess
    import sys

    complete = [s for s in _python_snippets() if s.startswith(("import ", "from "))]
    assert len(complete) >= 3
    for snippet in complete:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                "check",
                "--select",
                "F821,F401",
                "--no-cache",
                "--output-format",
                "concise",
                "--stdin-filename",
                "snippet.py",
                "-",
            ],
            input=snippet,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{result.stdout}\n--- in ---\n{snippet}"
