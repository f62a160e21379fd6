"""SavedModel export in TF Serving's layout: `<base_path>/<name>/<version>/`.

The export is a plain TensorFlow graph (stock TF ops, no TFP, no tfp_flows):
it loads with `tf.saved_model.load`, `saved_model_cli run` and TF Serving in a
process where neither library is installed. Signatures, each with named
inputs and outputs and a `None` batch dimension (D is the event size):

| signature | inputs | outputs |
|---|---|---|
| `serving_default`, `log_prob` | `x`: float[None, D] | `log_prob`: float[None] |
| `bits_per_dim` | `x`: float[None, D] | `bits_per_dim`: float[None] |
| `sample` | `n`: int32[], `seed`: int32[2] | `samples`: float[None, D] |
| `forward` | `z`: float[None, D] | `x`: float[None, D], `log_det`: float[None] |
| `inverse` | `x`: float[None, D] | `z`: float[None, D], `log_det`: float[None] |

`sample` is stateless: the same seed gives the same samples, equal to the
in-memory `model.sample(n, seed=seed)`; `n` must lie in [1, max_samples]
(65536 by default, an argument of `export_saved_model`), so that one request
cannot exhaust a server's memory.

Every signature gives the in-process model's answer for every input: a row
with NaN gives NaN, a row with ±Inf (or outside an image flow's support)
log-density -inf, and a context row with NaN or Inf gives NaN outputs, on
every CPU kernel setting.

A conditional flow's export adds `context`: float[None, C] to the inputs of
every signature. `log_prob`, `bits_per_dim`, `forward` and `inverse` pair
the i-th row of `x` (or `z`) with the i-th context (one row broadcasts);
`sample` draws `n` per context: `samples` is float[n, None, D], equal to
`model.sample(n, seed=seed, context=context)`.
"""

import json
import math
import os
import re
import shutil
import socket
import tempfile

import keras
import tensorflow as tf

from tfp_flows import validation
from tfp_flows.checks import MAX_SAMPLES
from tfp_flows.checks import check_export_destination as check_destination

SIGNATURES = ("serving_default", "log_prob", "bits_per_dim", "sample", "forward", "inverse")


_STAGING_PREFIX = ".tmp-"
_STAGING_OWNER = "tfp_flows_export.json"
_VERSION = re.compile(r"[0-9]+", re.ASCII)


def signature_functions(model, max_samples=MAX_SAMPLES):
    """{name: (function, input_signature)} for every signature of `model`'s export.

    Each function calls the model's public methods, so the export computes
    what the model does in process, with the same answers for every input (a
    NaN row gives NaN, an Inf row or one outside a bounded support -inf, a
    NaN or Inf context NaN). `sample` refuses `n` outside [1, max_samples]
    with an INVALID_ARGUMENT error.
    """
    max_samples = validation.check_integer(max_samples, "max_samples")
    dtype = tf.as_dtype(model.dtype)
    events = [None, *model.event_shape]
    dims = model.event_size * math.log(2.0)
    # A conditional flow's signatures take a `context` too, and pass it to every step.
    context_spec = (
        [tf.TensorSpec([None, model.context_size], dtype, name="context")]
        if model.conditional
        else []
    )

    def log_prob(x, context=None):
        return {"log_prob": model.log_prob(x, context)}

    def bits_per_dim(x, context=None):
        return {"bits_per_dim": -model.log_prob(x, context) / dims}

    def sample(n, seed, context=None):
        checks = [
            tf.debugging.assert_positive(n, message="sample: n must be a positive integer"),
            tf.debugging.assert_less_equal(
                n, max_samples, message=f"sample: n must be at most {max_samples}"
            ),
        ]
        with tf.control_dependencies(checks):
            n = tf.identity(n)
        return {"samples": model.sample(n, seed=seed, context=context)}

    def forward(z, context=None):
        x, log_det = model.forward_and_log_det(z, context)
        return {"x": x, "log_det": log_det}

    def inverse(x, context=None):
        z, log_det = model.inverse_and_log_det(x, context)
        return {"z": z, "log_det": log_det}

    x_spec = [tf.TensorSpec(events, dtype, name="x"), *context_spec]
    return {
        "serving_default": (log_prob, x_spec),
        "log_prob": (log_prob, x_spec),
        "bits_per_dim": (bits_per_dim, x_spec),
        "sample": (
            sample,
            [
                tf.TensorSpec([], tf.int32, name="n"),
                tf.TensorSpec([2], tf.int32, name="seed"),
                *context_spec,
            ],
        ),
        "forward": (forward, [tf.TensorSpec(events, dtype, name="z"), *context_spec]),
        "inverse": (inverse, x_spec),
    }


def export_saved_model(model, base_path, name, version=None, max_samples=MAX_SAMPLES):
    """Writes `model` as `<base_path>/<name>/<version>/` for TF Serving; returns that path.

    Arguments:
        model: a `FlowModel`.
        base_path: the model base folder (TF Serving's `--model_base_path`
            parent, e.g. "saved_models").
        name: the model's name, a folder under `base_path`.
        version: a positive integer; by default one more than the highest
            version there.
        max_samples: the most samples one call of the `sample` signature may
            ask for (larger `n` is an INVALID_ARGUMENT error).

    The version folder is built in a hidden temporary folder beside it and
    renamed into place once complete, so TF Serving never sees a partial
    export; an existing version is never overwritten. Several processes may
    export the same name at once: each gets its own version. Temporary
    folders left by exports that were killed (their process is gone) are
    removed.
    """
    model_dir = check_destination(base_path, name, version)
    max_samples = validation.check_integer(max_samples, "max_samples")
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the export folder {model_dir}: {error}") from error
    if not os.access(model_dir, os.W_OK):
        raise PermissionError(f"cannot write to {model_dir}: nothing was exported.")
    remove_stale_staging(model_dir)

    staging = tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=model_dir)
    try:
        with open(os.path.join(staging, _STAGING_OWNER), "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
        archive = keras.export.ExportArchive()
        archive.track(model)
        for signature, (function, input_signature) in signature_functions(
            model, max_samples
        ).items():
            archive.add_endpoint(signature, function, input_signature=input_signature)
        export_dir = os.path.join(staging, "export")
        archive.write_out(export_dir, verbose=False)
        return _move_into_place(export_dir, model_dir, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(export_dir, model_dir, version):
    """Renames the finished export to its version folder; the next free one if none was asked.

    The rename is atomic on one file system and fails when the target exists
    (a non-empty folder), so two exporters racing for a version never both
    get it: the loser takes the next one.
    """
    for _ in range(1000):
        target_version = version if version is not None else max(versions(model_dir), default=0) + 1
        target = os.path.join(model_dir, str(target_version))
        try:
            if os.path.exists(target):
                raise FileExistsError(target)
            os.rename(export_dir, target)
            return target
        except OSError as error:
            if not os.path.exists(target):
                raise
            if version is not None:
                raise FileExistsError(
                    f"{target} already exists: versions are never overwritten; pass another "
                    "version or leave it out to take the next free one."
                ) from error
    raise OSError(f"could not find a free version under {model_dir}.")


def remove_stale_staging(model_dir):
    """Removes the temporary folders of exports on this host whose process has died.

    Only folders this module made (named ".tmp-PID-..." and holding its owner
    file) are touched; returns the paths removed.
    """
    removed = []
    host = socket.gethostname()
    for entry in os.listdir(model_dir):
        path = os.path.join(model_dir, entry)
        owner_file = os.path.join(path, _STAGING_OWNER)
        if not entry.startswith(_STAGING_PREFIX) or not os.path.isfile(owner_file):
            continue
        try:
            with open(owner_file) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            continue
        if owner.get("host") == host and not _alive(owner.get("pid")):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def versions(model_dir):
    """The integer versions under `model_dir` (what TF Serving would load), sorted."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(entry)
        for entry in os.listdir(model_dir)
        if _VERSION.fullmatch(entry) and os.path.isdir(os.path.join(model_dir, entry))
    )


def describe(model_dir):
    """{version: {signature: {"inputs": {...}, "outputs": {...}}}} of an exported model.

    Each tensor is described as (dtype name, shape with None for unknown).
    Raises FileNotFoundError naming the folder when there is no export, and
    ValueError naming the path when a version cannot be read.
    """
    found = versions(model_dir)
    if not found:
        raise FileNotFoundError(f"no SavedModel versions (integer folders) under {model_dir}.")
    description = {}
    for version in found:
        path = os.path.join(model_dir, str(version))
        try:
            loaded = tf.saved_model.load(path)
        except Exception as error:  # noqa: BLE001 - TF raises many types for a bad file
            raise ValueError(f"cannot load the SavedModel at {path}: {error}") from error
        description[version] = {
            name: {
                "inputs": {
                    key: _tensor(spec)
                    for key, spec in function.structured_input_signature[1].items()
                },
                "outputs": {
                    key: _tensor(spec) for key, spec in function.structured_outputs.items()
                },
            }
            for name, function in sorted(loaded.signatures.items())
        }
    return description


def _tensor(spec):
    return [spec.dtype.name, spec.shape.as_list() if spec.shape.rank is not None else None]
