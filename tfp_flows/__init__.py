"""tfp_flows: normalizing flows as TensorFlow Probability bijectors, trained with Keras 3."""

import keras

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tfp_flows runs on Keras' TensorFlow backend, but KERAS_BACKEND is "
        f"{keras.backend.backend()!r}: set KERAS_BACKEND=tensorflow."
    )

from tfp_flows import bijectors, datasets, flows, layers  # noqa: E402
from tfp_flows.model import FlowModel  # noqa: E402

__version__ = "0.1.0"
__all__ = ["FlowModel", "bijectors", "datasets", "flows", "layers"]
