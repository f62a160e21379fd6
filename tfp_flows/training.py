"""Training recipes shared by the CLI and the examples."""

import math

import keras

from tfp_flows import datasets
from tfp_flows.model import steps_per_call  # noqa: F401 - part of the recipes


def cosine_adam(learning_rate, epochs, num_examples, batch_size, clipnorm=None):
    """Adam whose learning rate decays from `learning_rate` to 0 along a cosine over training.

    The decay spans epochs × ⌈num_examples / batch_size⌉ steps. On the 2D toys
    this reaches a lower test NLL than a constant rate at the same budget
    (benchmarks/README.md).
    """
    steps = max(1, int(epochs) * math.ceil(int(num_examples) / int(batch_size)))
    return keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(learning_rate, steps), clipnorm=clipnorm
    )


def fit_dequantized(
    model,
    counts,
    *extras,
    epochs,
    batch_size=128,
    learning_rate=1e-3,
    clipnorm=None,
    seed=0,
    verbose="auto",
    callbacks=None,
):
    """Compiles `model` with `cosine_adam` and fits it to integer data, dequantised afresh.

    Each epoch sees counts + u with new uniform noise u
    (`datasets.dequantizing_pipeline`); `extras` (e.g. one-hot contexts)
    travel with the counts. Returns the `History`.
    """
    # Steps per compiled call: automatic (the pipeline's length is known).
    model.compile(cosine_adam(learning_rate, epochs, len(counts), batch_size, clipnorm))
    pipeline = datasets.dequantizing_pipeline(
        counts, *extras, batch_size=batch_size, seed=seed, dtype=model.dtype
    )
    # The pipeline shuffles; Keras cannot shuffle a dataset.
    return model.fit(pipeline, epochs=epochs, shuffle=False, verbose=verbose, callbacks=callbacks)
