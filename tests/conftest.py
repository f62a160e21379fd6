import gzip
import os
import struct

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _write_idx(path, array):
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def write_mnist_idx():
    """write(folder, num_train, num_test): MNIST's IDX files of random images in `folder`.

    Returns {"train": (images, labels), "test": (images, labels)} as written.
    """

    def write(folder, num_train, num_test, seed=0):
        from tfp_flows import datasets

        rng = np.random.default_rng(seed)
        written = {}
        for split, n in (("train", num_train), ("test", num_test)):
            images_name, labels_name = datasets.MNIST_FILES[split]
            written[split] = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
            _write_idx(folder / f"{images_name}.gz", written[split][0])
            _write_idx(folder / f"{labels_name}.gz", written[split][1])
        return written

    return write
