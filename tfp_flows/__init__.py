"""tfp_flows: normalizing flows as TensorFlow Probability bijectors, trained with Keras 3.

`import tfp_flows` imports TensorFlow and registers the library's Keras
classes, so that `keras.models.load_model` can read saved flows. The
`tfp-flows` command (and `python -m tfp_flows`) parses its arguments first
and imports TensorFlow only when it has work to do.
"""

import os
import sys

__version__ = "0.1.0"
__all__ = ["FlowModel", "bijectors", "datasets", "flows", "layers"]


def _command_line_process():
    """True in the `tfp-flows` command or `python -m tfp_flows` (its package import runs first)."""
    return os.path.basename(sys.argv[0]) == "tfp-flows" or sys.argv[:1] == ["-m"]


def load():
    """Imports TensorFlow and the library (quietly when TF_CPP_MIN_LOG_LEVEL is 3)."""
    from tfp_flows._tensorflow import import_tensorflow

    import_tensorflow()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            "tfp_flows runs on Keras' TensorFlow backend, but KERAS_BACKEND is "
            f"{keras.backend.backend()!r}: set KERAS_BACKEND=tensorflow."
        )
    from tfp_flows import bijectors, datasets, flows, layers
    from tfp_flows.model import FlowModel

    globals().update(
        bijectors=bijectors, datasets=datasets, flows=flows, layers=layers, FlowModel=FlowModel
    )


if _command_line_process():
    _loading = False

    def __getattr__(name):
        # While loading, `from tfp_flows import flows` asks for attributes that the
        # import system then provides: answer as a module without them would.
        global _loading
        if name in __all__ and not _loading:
            _loading = True
            try:
                load()
            finally:
                _loading = False
            return globals()[name]
        raise AttributeError(f"module 'tfp_flows' has no attribute {name!r}")

else:
    load()
