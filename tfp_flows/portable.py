"""Portable exports: a flow as a TFLite flatbuffer or as ONNX graphs, checked in their runtimes.

For phones, browsers and services without TensorFlow. The same computation
as the SavedModel export (`tfp_flows.export`), minus the `sample` signature:
random-number ops are missing from TFLite's built-ins and from ONNX, so
sampling is `from_noise`, the flow's forward map applied to base noise z
that the caller draws (standard normal, shape [n, *event_shape]):
`from_noise(z)` equals `model.forward(z)`, and `model.sample` is that map of
the model's own draws. Signatures (D the event shape, C the context size of a
conditional flow, whose every signature also takes `context`: float[None, C]):

| signature | inputs | outputs |
|---|---|---|
| `log_prob` | `x`: float[None, *D] | `log_prob`: float[None] |
| `forward` | `z`: float[None, *D] | `x`: float[None, *D], `log_det`: float[None] |
| `inverse` | `x`: float[None, *D] | `z`: float[None, *D], `log_det`: float[None] |
| `from_noise` | `z`: float[None, *D] | `samples`: float[None, *D] |

Formats:
- `tflite`: one `model.tflite` with all four signatures, converted by
  TensorFlow's converter with built-in ops only (`TFLITE_BUILTINS`, no
  Flex/TF ops), run by the TFLite interpreter (`ai_edge_litert` when
  installed, else `tf.lite.Interpreter`).
- `onnx`: one `<signature>.onnx` per signature (an ONNX graph has one set
  of inputs), converted by `tf2onnx` and run by `onnxruntime` (the
  `portable` extra: `pip install tfp-flows[portable]`).

Every export is checked before it is written: each signature runs in its
runtime on probe points (base noise, its forward image, a NaN row and an
infinite row, at two batch sizes) and must give the in-process model's
answers within `TOLERANCE` of max(1, |value|), NaN and ±inf in the same
places. A family or runtime that cannot take the flow raises
`PortableExportError` naming both, and nothing is written; the errors
measured are kept in the export's `signatures.json`.

Known limits (each refused by name): ONNX cannot take the image flows (Glow,
multi-scale RealNVP): their ResNets guard empty batches with a `tf.cond`,
which tf2onnx turns into an ONNX `If` whose `Conv` nodes ONNX Runtime cannot
type-check ("Attribute dilations has incorrect size"), and their logit step's
`Log1p` has no ONNX counterpart in tf2onnx. TFLite takes them. Conditional
flows convert to both (their batch shapes broadcast without BroadcastArgs,
see `tfp_flows.context.broadcast`). Portable exports are float32 and use
the default standard normal base.

Example:
    >>> import numpy as np, tempfile, os
    >>> from tfp_flows import flows, portable
    >>> model = flows.realnvp(2, num_layers=2, hidden_units=8)
    >>> model.log_prob(np.zeros((1, 2), np.float32)).shape  # builds it (fit would too)
    TensorShape([1])
    >>> folder = portable.export_tflite(model, os.path.join(tempfile.mkdtemp(), "moons"))
    >>> exported = portable.load(folder)
    >>> z = np.zeros((3, 2), np.float32)
    >>> np.allclose(exported.run("from_noise", z=z)["samples"], model.forward(z), atol=1e-5)
    True
"""

import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from tfp_flows import __version__, checks
from tfp_flows import export as export_lib

FORMATS = ("saved_model", "tflite", "onnx")
PORTABLE_FORMATS = ("tflite", "onnx")
SIGNATURES = ("log_prob", "forward", "inverse", "from_noise")
# The most an exported signature may differ from the in-process model, in units of
# max(1, |value|): the runtimes' kernels round differently from TensorFlow's (measured
# at most 2e-6 of that scale on the test models: see README, "Portable exports").
TOLERANCE = 1e-4
MANIFEST = "signatures.json"
TFLITE_FILE = "model.tflite"
ONNX_OPSET = 17
_PROBE_ROWS = 7


class PortableExportError(ValueError):
    """A flow that a portable format or its runtime cannot take, named with the reason."""


def family(model):
    """A short readable name of the model's flow family, for messages ("realnvp", "glow", ...)."""
    from tfp_flows import layers
    from tfp_flows.layers.image import MultiScaleLayer

    names = []
    for step in model.flow_layers:
        if isinstance(step, MultiScaleLayer):
            name = step.step
        elif isinstance(step, layers.MaskedAutoregressiveLayer):
            name = "iaf" if step.inverse else "maf"
            if step.transformer.name != "affine":
                name += f" ({step.transformer.name})"
        elif isinstance(step, layers.CouplingLayer):
            name = "realnvp" if step.transformer.name == "affine" else "nsf"
            if step.transformer.name not in ("affine", "spline"):
                name = f"coupling ({step.transformer.name})"
        elif isinstance(step, layers.PlanarLayer):
            name = "planar"
        elif isinstance(step, layers.RadialLayer):
            name = "radial"
        elif isinstance(step, layers.ContinuousFlowLayer):
            name = "cnf"
        elif isinstance(step, (layers.PermuteLayer, layers.ScaleAndShiftLayer)):
            continue  # fixed steps between or after the family's own
        else:
            name = getattr(step, "name", type(step).__name__)
        if name not in names:
            names.append(name)
    return " + ".join(names) or "identity"


def signature_functions(model, format="tflite"):
    """{name: (function, input_signature)} of the portable signatures (see the module's table).

    For TFLite, `log_prob` makes its -inf at run time: the converter stores a
    constant -inf (the density of an infinite row, or of one outside a bounded
    support) as the lowest float, -3.4e38.
    """
    functions = export_lib.signature_functions(model)
    forward, forward_spec = functions["forward"]

    def from_noise(z, context=None):
        return {"samples": forward(z, context)["x"]}

    log_prob_function, x_spec = functions["log_prob"]

    def log_prob(x, context=None):
        value = log_prob_function(x, context)["log_prob"]
        if format != "tflite":
            return {"log_prob": value}
        minus_inf = tf.math.log(tf.zeros_like(value))
        return {"log_prob": tf.where(value == value.dtype.min, minus_inf, value)}

    portable = {"log_prob": (log_prob, x_spec)}
    portable.update({name: functions[name] for name in ("forward", "inverse")})
    portable["from_noise"] = (from_noise, forward_spec)
    return portable


def check_convertible(model, format):
    """Raises PortableExportError, before any conversion, for a flow `format` is known to refuse."""
    _check_format(format)
    if not model.built:
        raise PortableExportError("the model is not built: call it (or fit it) once first.")
    if tf.as_dtype(model.dtype) != tf.float32:
        raise PortableExportError(
            f"{family(model)}: portable exports are float32 (TFLite's built-in kernels and the "
            f"runtimes' common ground), the model computes in {model.dtype}."
        )
    if getattr(model, "_custom_base", False):
        raise PortableExportError(
            f"{family(model)}: a custom base distribution is TFP's own code, whose shape logic "
            "(BroadcastArgs and friends) the portable runtimes lack: export it as a SavedModel."
        )
    if format == "onnx":
        from tfp_flows.layers import ImageCouplingLayer

        for step in model.flow_layers:
            for layer in step.walk() if hasattr(step, "walk") else [step]:
                if isinstance(layer, ImageCouplingLayer):
                    raise PortableExportError(
                        f"{family(model)} cannot be exported to ONNX: its image coupling "
                        f"{layer.name!r} runs a ResNet guarded by a tf.cond (empty batches), "
                        "which tf2onnx turns into an ONNX If whose Conv nodes onnxruntime "
                        "cannot type-check. Use --format tflite or saved_model."
                    )


def tflite_model(model):
    """The model as a TFLite flatbuffer (bytes) with the four signatures, built-in ops only."""
    check_convertible(model, "tflite")
    functions = {
        name: tf.function(function, input_signature=spec).get_concrete_function()
        for name, (function, spec) in signature_functions(model, "tflite").items()
    }
    with tempfile.TemporaryDirectory(prefix="tfp_flows_tflite-") as folder:
        module = tf.Module()
        module.model = model
        # The raw variables too: the converter freezes them by these references.
        module.variables_ = [variable.value for variable in model.variables]
        tf.saved_model.save(module, folder, signatures=functions)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=list(functions))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return converter.convert()
        except Exception as error:  # noqa: BLE001 - the converter raises many types
            raise PortableExportError(
                f"{family(model)} cannot be converted to TFLite with built-in ops only: "
                f"{_first_lines(error)}"
            ) from error


def onnx_models(model):
    """{signature: serialized ONNX model (bytes)}, one graph per signature, by tf2onnx."""
    check_convertible(model, "onnx")
    tf2onnx = _import_optional("tf2onnx", "onnx")
    models = {}
    for name, (function, spec) in signature_functions(model, "onnx").items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proto, _ = tf2onnx.convert.from_function(
                    tf.function(function, input_signature=spec),
                    input_signature=spec,
                    opset=ONNX_OPSET,
                )
        except Exception as error:  # noqa: BLE001 - tf2onnx raises many types
            raise PortableExportError(
                f"{family(model)} cannot be converted to ONNX (signature {name!r}): "
                f"{_first_lines(error)}"
            ) from error
        models[name] = proto.SerializeToString()
    return models


class PortableModel:
    """A portable export loaded in its runtime: `run(signature, **inputs)` → {output: array}.

    `load(folder)` makes one; `signatures` lists what it offers. Inputs are
    float32 arrays named as in the module's table (`x`, `z`, `context`).
    """

    def __init__(self, format, runners):
        self.format = format
        self._runners = runners

    @property
    def signatures(self):
        return tuple(self._runners)

    def run(self, signature, **inputs):
        if signature not in self._runners:
            raise ValueError(
                f"no signature {signature!r} in this {self.format} export; it has "
                f"{', '.join(self._runners)}."
            )
        inputs = {key: np.asarray(value, np.float32) for key, value in inputs.items()}
        return self._runners[signature](inputs)


def runtime(format, content):
    """A `PortableModel` running `content` (TFLite bytes, or {signature: ONNX bytes})."""
    _check_format(format)
    if format == "tflite":
        interpreter = _tflite_interpreter(content)
        runners = {}
        for name in interpreter.get_signature_list():
            runners[name] = _tflite_runner(interpreter, name)
        return PortableModel(format, runners)
    onnxruntime = _import_optional("onnxruntime", "onnx")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    runners = {}
    for name, serialized in content.items():
        session = onnxruntime.InferenceSession(
            serialized, options, providers=["CPUExecutionProvider"]
        )
        runners[name] = _onnx_runner(session)
    return PortableModel(format, runners)


def load(folder):
    """Loads the export in `folder` (written by `export_tflite` / `export_onnx`) in its runtime."""
    manifest = read_manifest(folder)
    format = manifest["format"]
    if format == "tflite":
        with open(os.path.join(folder, TFLITE_FILE), "rb") as f:
            return runtime(format, f.read())
    content = {}
    for name in manifest["signatures"]:
        with open(os.path.join(folder, f"{name}.onnx"), "rb") as f:
            content[name] = f.read()
    return runtime(format, content)


def read_manifest(folder):
    """The export's `signatures.json`, or a ValueError naming the folder."""
    path = os.path.join(os.fspath(folder), MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder} is not a tfp_flows portable export: {error}") from error
    if manifest.get("format") not in PORTABLE_FORMATS:
        raise ValueError(f"{path} names no portable format (tflite or onnx).")
    return manifest


def verify(model, exported, seed=0):
    """{signature: {output: max error}} of `exported` against `model`; raises beyond TOLERANCE.

    Each error is the largest |exported − model| / max(1, |model|) over the
    probe points: base noise z ~ N(0, I) and its forward image x (data in
    the flow's support), plus a NaN row and an infinite row for `log_prob`,
    at batches of `_PROBE_ROWS` rows and of one row (the batch is dynamic).
    NaN and ±inf must match in place and sign.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(model.event_shape)
    z = rng.standard_normal((_PROBE_ROWS, *shape)).astype(np.float32)
    context = None
    if model.conditional:
        context = rng.standard_normal((_PROBE_ROWS, model.context_size)).astype(np.float32)
    x = np.asarray(model.forward(z, context))
    scores = x.copy()
    scores[1] = np.nan
    scores[2] = np.inf
    probes = {"log_prob": {"x": scores}, "forward": {"z": z}, "inverse": {"x": x}}
    probes["from_noise"] = {"z": z}
    expected = {
        "log_prob": lambda x, context=None: {"log_prob": model.log_prob(x, context)},
        "forward": lambda z, context=None: dict(
            zip(("x", "log_det"), model.forward_and_log_det(z, context))
        ),
        "inverse": lambda x, context=None: dict(
            zip(("z", "log_det"), model.inverse_and_log_det(x, context))
        ),
        "from_noise": lambda z, context=None: {"samples": model.forward(z, context)},
    }
    errors = {}
    for name, inputs in probes.items():
        if context is not None:
            inputs = {**inputs, "context": context}
        errors[name] = {}
        for rows in (slice(None), slice(0, 1)):
            batch = {key: value[rows] for key, value in inputs.items()}
            want = {key: np.asarray(v) for key, v in expected[name](**batch).items()}
            try:
                got = exported.run(name, **batch)
            except Exception as error:  # noqa: BLE001 - the runtimes raise many types
                raise PortableExportError(
                    f"{family(model)}: the {exported.format} runtime cannot run the {name!r} "
                    f"signature: {_first_lines(error)}"
                ) from error
            for key, value in want.items():
                error = _error(np.asarray(got[key]), value)
                if not error <= TOLERANCE:
                    raise PortableExportError(
                        f"{family(model)}: the {exported.format} export's {name!r} output "
                        f"{key!r} differs from the model by {error:.3g} of max(1, |value|) "
                        f"(more than {TOLERANCE}): nothing was written."
                    )
                errors[name][key] = max(errors[name].get(key, 0.0), error)
    return errors


def export_tflite(model, path):
    """Writes `model` as the new folder `path` (`model.tflite`, `signatures.json`); returns it.

    The export is converted, checked in the TFLite interpreter (see
    `verify`), then moved into place; `path` must not exist (nothing is
    overwritten).
    """
    return _export_to(model, "tflite", path)


def export_onnx(model, path):
    """Writes `model` as the new folder `path` (`<signature>.onnx`, `signatures.json`)."""
    return _export_to(model, "onnx", path)


def export_portable(model, format, base_path, name, version=None):
    """Writes a portable export to `<base_path>/<name>/<format>/<version>/`; returns that path.

    Versioned like the SavedModel export (`export_saved_model`): the next free
    version by default, an existing version never overwritten. The format's
    folder sits beside the SavedModel's integer versions, which TF Serving
    alone reads.
    """
    _check_portable(format)
    model_dir = check_destination(base_path, name, format, version)
    content, manifest = convert(model, format)
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the export folder {model_dir}: {error}") from error
    export_lib.remove_stale_staging(model_dir)
    staging = _staging(model_dir)
    try:
        folder = os.path.join(staging, "export")
        _write(folder, format, content, manifest)
        return export_lib._move_into_place(folder, model_dir, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_destination(base_path, name, format, version=None):
    """Raises before any work when `<base_path>/<name>/<format>[/<version>]` cannot be written."""
    _check_portable(format)
    checks.check_export_destination(base_path, name)
    return checks.check_export_destination(
        os.path.join(os.fspath(base_path), name), format, version
    )


def convert(model, format):
    """(content, manifest): the converted model, checked in its runtime, and its description."""
    _check_portable(format)
    content = tflite_model(model) if format == "tflite" else onnx_models(model)
    exported = runtime(format, content)
    missing = set(SIGNATURES) - set(exported.signatures)
    if missing:
        raise PortableExportError(
            f"{family(model)}: the {format} export lacks the signatures {sorted(missing)}."
        )
    errors = verify(model, exported)
    specs = signature_functions(model, format)
    manifest = {
        "format": format,
        "family": family(model),
        "tfp_flows": __version__,
        "tensorflow": tf.__version__,
        "event_shape": list(model.event_shape),
        "context_size": model.context_size if model.conditional else None,
        "signatures": {
            name: {
                "inputs": {spec.name: ["float32", spec.shape.as_list()] for spec in specs[name][1]},
                "outputs": sorted(errors[name]),
            }
            for name in SIGNATURES
        },
        "max_error": errors,
        "tolerance": TOLERANCE,
    }
    if format == "onnx":
        manifest["onnx_opset"] = ONNX_OPSET
    return content, manifest


def _export_to(model, format, path):
    path = os.fspath(path)
    if os.path.lexists(path):
        raise FileExistsError(f"{path} already exists: portable exports never overwrite.")
    parent = os.path.dirname(os.path.abspath(path))
    checks.check_creatable(parent, "the export folder")
    content, manifest = convert(model, format)
    os.makedirs(parent, exist_ok=True)
    staging = _staging(parent)
    try:
        folder = os.path.join(staging, "export")
        _write(folder, format, content, manifest)
        try:
            os.rename(folder, path)  # atomic, and fails if path appeared meanwhile
        except OSError as error:
            raise FileExistsError(
                f"cannot move the export to {path}: {error}; nothing was overwritten."
            ) from error
        return path
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _staging(parent):
    staging = tempfile.mkdtemp(prefix=f"{export_lib._STAGING_PREFIX}{os.getpid()}-", dir=parent)
    with open(os.path.join(staging, export_lib._STAGING_OWNER), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
    return staging


def _write(folder, format, content, manifest):
    os.makedirs(folder)
    files = (
        {TFLITE_FILE: content}
        if format == "tflite"
        else {f"{name}.onnx": serialized for name, serialized in content.items()}
    )
    manifest = {**manifest, "files": {}}
    for filename, data in files.items():
        with open(os.path.join(folder, filename), "wb") as f:
            f.write(data)
        manifest["files"][filename] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)


def _error(got, want):
    """max |got − want| / max(1, |want|) over finite values; inf if non-finite ones differ."""
    if got.shape != want.shape:
        return math.inf
    finite = np.isfinite(want)
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return math.inf
    infinite = np.isinf(want)
    if not np.array_equal(got[infinite], want[infinite]) or not np.all(np.isfinite(got[finite])):
        return math.inf
    if not finite.any():
        return 0.0
    return float(np.max(np.abs(got[finite] - want[finite]) / np.maximum(1.0, np.abs(want[finite]))))


def _tflite_interpreter(content):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        # Deprecated in favour of ai_edge_litert, and still in TF 2.21.
        Interpreter = getattr(tf.lite, "Interpreter", None)
        if Interpreter is None:
            raise PortableExportError(
                "the tflite format needs a TFLite interpreter: this TensorFlow has none, "
                "pip install 'tfp-flows[portable]' (ai-edge-litert)."
            ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_content=content)


def _tflite_runner(interpreter, name):
    runner = interpreter.get_signature_runner(name)
    return lambda inputs: runner(**inputs)


def _onnx_runner(session):
    outputs = [output.name for output in session.get_outputs()]
    inputs = {item.name.split(":")[0]: item.name for item in session.get_inputs()}

    def run(given):
        values = session.run(outputs, {inputs[key]: value for key, value in given.items()})
        return {name.split(":")[0]: value for name, value in zip(outputs, values)}

    return run


def _import_optional(module, format):
    try:
        return __import__(module)
    except ImportError as error:
        raise PortableExportError(
            f"the {format} format needs {module}, which is not installed: "
            "pip install 'tfp-flows[portable]' (tf2onnx and onnxruntime)."
        ) from error


def _check_format(format):
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}.")


def _check_portable(format):
    _check_format(format)
    if format not in PORTABLE_FORMATS:
        raise ValueError(
            f"{format} is not a portable format ({', '.join(PORTABLE_FORMATS)}): "
            "use tfp_flows.export.export_saved_model."
        )


def _first_lines(error, lines=3):
    text = str(error).strip().splitlines() or [type(error).__name__]
    return " ".join(line.strip() for line in text[:lines])[:600]
