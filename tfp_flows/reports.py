"""Key numbers of a run: printed as aligned lines and written to `results.json`."""

import json
import os

import numpy as np


def report(title, results, out_dir):
    """Prints `results` ({name: number or text}) under `title`; writes out_dir/results.json.

    Returns the JSON file's path. Numbers are printed with 4 decimals
    (3 significant digits below 1e-3); the JSON keeps them in full.
    """
    width = max(len(name) for name in results)
    print(f"\n{title}")
    for name, value in results.items():
        shown = _format(value)
        print(f"  {name:<{width}}  {shown}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=_plain)
    return path


def _format(value):
    if not isinstance(value, (float, np.floating)):
        return value
    return f"{value:.3e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
