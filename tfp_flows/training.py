"""Training recipes shared by the CLI and the examples."""

import math

import keras

from tfp_flows import datasets


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
    steps_per_epoch = math.ceil(len(counts) / batch_size)
    model.compile(
        cosine_adam(learning_rate, epochs, len(counts), batch_size, clipnorm),
        steps_per_execution=steps_per_call(steps_per_epoch),
    )
    pipeline = datasets.dequantizing_pipeline(
        counts, *extras, batch_size=batch_size, seed=seed, dtype=model.dtype
    )
    # The pipeline shuffles; Keras cannot shuffle a dataset.
    return model.fit(pipeline, epochs=epochs, shuffle=False, verbose=verbose, callbacks=callbacks)


def steps_per_call(steps_per_epoch, most=10):
    """Training steps per compiled call: the largest divisor of the epoch up to `most`.

    Several steps per call save Keras' per-step overhead on small flows; a
    divisor of the epoch keeps Keras' progress bar and callbacks on epoch
    boundaries (12 steps at 10 per call would show "20/12").
    """
    return max(d for d in range(1, most + 1) if steps_per_epoch % d == 0)
