"""Checks of plain values (integers, paths, export names) that need no TensorFlow.

The command line uses them before it imports TensorFlow, so that a bad
option or path is refused at once; `tfp_flows.validation` and
`tfp_flows.export` build on them.
"""

import numbers
import os
import re

import numpy as np

INT32_MAX = 2**31 - 1
# The default most samples one `sample` request to an export may ask for: one request
# must not be able to exhaust a server's memory (n · D values are returned).
MAX_SAMPLES = 65536
EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)


def check_integer(value, name, minimum=1, maximum=INT32_MAX):
    """`value` as a Python int in [minimum, maximum], or a ValueError naming it."""
    kind = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be {kind or 'an integer'}, got {value!r}.")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        limit = "" if maximum is None else f" no larger than {maximum}"
        raise ValueError(
            f"{name} must be {kind or f'an integer of at least {minimum}'}{limit}, got {value}."
        )
    return value


def check_creatable(path, what):
    """Raises before anything is written when `path` cannot be created (or written) as a folder.

    Finds the nearest existing ancestor: it must be a writable folder. `what`
    names the folder in the messages ("the export folder", ...). Creates nothing.
    """
    existing = os.fspath(path)
    while not os.path.exists(existing):
        parent = os.path.dirname(existing) or "."
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise OSError(f"cannot create {what} {path}: {existing} is not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create {what} {path}: {existing} is read-only.")


def check_export_destination(base_path, name, version=None):
    """Raises before any work when `base_path/name[/version]` cannot take an export.

    For the CLI, which checks `--export` and `--name` before training, and
    for `export_saved_model`. Nothing is created. Returns the model folder.
    """
    if not EXPORT_NAME.fullmatch(str(name)):
        raise ValueError(
            f"model name must be a plain folder name (letters, digits, '.', '_', '-'), "
            f"got {name!r}."
        )
    if version is not None:
        check_integer(version, "version", maximum=2**63 - 1)
    model_dir = os.path.join(os.fspath(base_path), str(name))
    check_creatable(model_dir, "the export folder")
    if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
        raise FileExistsError(
            f"{os.path.join(model_dir, str(version))} already exists: versions are never "
            "overwritten; pass another version or leave it out to take the next free one."
        )
    return model_dir
