"""Training recipes shared by the CLI and the examples."""

import math

import keras


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
