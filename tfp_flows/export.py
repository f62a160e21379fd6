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
in-memory `model.sample(n, seed=seed)`.

A conditional flow's export adds `context`: float[None, C] to the inputs of
every signature. `log_prob`, `bits_per_dim`, `forward` and `inverse` pair
the i-th row of `x` (or `z`) with the i-th context (one row broadcasts);
`sample` draws `n` per context: `samples` is float[n, None, D], equal to
`model.sample(n, seed=seed, context=context)`.
"""

import math
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

SIGNATURES = ("serving_default", "log_prob", "bits_per_dim", "sample", "forward", "inverse")


def signature_functions(model):
    """{name: (function, input_signature)} for every signature of `model`'s export."""
    dtype = tf.as_dtype(model.dtype)
    events = [None, *model.event_shape]
    bijector = model.bijector
    event_ndims = len(model.event_shape)
    dims = model.event_size * math.log(2.0)
    # A conditional flow's signatures take a `context` too, and pass it to every step.
    context_spec = (
        [tf.TensorSpec([None, model.context_size], dtype, name="context")]
        if model.conditional
        else []
    )

    def transform(direction, points, context):
        points, kwargs = model._conditioned(points, context)
        method = getattr(bijector, direction)
        log_det = getattr(bijector, f"{direction}_log_det_jacobian")
        return method(points, **kwargs), log_det(points, event_ndims=event_ndims, **kwargs)

    def log_prob(x, context=None):
        return {"log_prob": model._log_prob(x, context)}

    def bits_per_dim(x, context=None):
        return {"bits_per_dim": -model._log_prob(x, context) / dims}

    def sample(n, seed, context=None):
        return {"samples": model._sample(n, seed, context=context)}

    def forward(z, context=None):
        x, log_det = transform("forward", z, context)
        return {"x": x, "log_det": log_det}

    def inverse(x, context=None):
        z, log_det = transform("inverse", x, context)
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


def export_saved_model(model, base_path, name, version=None):
    """Writes `model` as `<base_path>/<name>/<version>/` for TF Serving; returns that path.

    Arguments:
        model: a `FlowModel`.
        base_path: the model base folder (TF Serving's `--model_base_path`
            parent, e.g. "saved_models").
        name: the model's name, a folder under `base_path`.
        version: a positive integer; by default one more than the highest
            version there.

    The version folder is built in a hidden temporary folder beside it and
    renamed into place once complete, so TF Serving never sees a partial
    export; an existing version is never overwritten.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(name)):
        raise ValueError(f"model name must be a plain folder name, got {name!r}.")
    model_dir = os.path.join(os.fspath(base_path), name)
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the export folder {model_dir}: {error}") from error
    if version is None:
        version = max(versions(model_dir), default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}.")
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(
            f"{target} already exists: versions are never overwritten; pass another version "
            "or leave it out to take the next free one."
        )
    if not os.access(model_dir, os.W_OK):
        raise PermissionError(f"cannot write to {model_dir}: nothing was exported.")

    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for signature, (function, input_signature) in signature_functions(model).items():
            archive.add_endpoint(signature, function, input_signature=input_signature)
        export_dir = os.path.join(staging, "export")
        archive.write_out(export_dir, verbose=False)
        os.rename(export_dir, target)  # atomic on one file system; fails if target appeared
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def versions(model_dir):
    """The integer versions under `model_dir` (what TF Serving would load), sorted."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(entry)
        for entry in os.listdir(model_dir)
        if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry))
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
