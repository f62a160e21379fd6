"""The README's two set-up commands are the ones CI and users run."""

import pathlib
import re

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
