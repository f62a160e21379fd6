"""Every plotting function writes a real, non-blank PNG; 2D-only plots refuse other data."""

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from tfp_flows import datasets, flows, plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_2d():
    return flows.realnvp(2, num_layers=2, hidden_units=(16,))


@pytest.fixture(scope="module")
def moons():
    return datasets.load("moons", num_train=300, num_test=200, seed=1)


def history(epochs=5, validation=True):
    loss = list(np.linspace(2.5, 1.0, epochs))
    record = {
        "loss": loss,
        "bits_per_dim": [v / (2 * np.log(2)) for v in loss],
        "learning_rate": [1e-3] * epochs,
    }
    if validation:
        record["val_loss"] = [v + 0.1 for v in loss]
        record["val_bits_per_dim"] = [(v + 0.1) / (2 * np.log(2)) for v in loss]
    return record


def assert_real_png(path):
    with open(path, "rb") as file:
        content = file.read()
    assert content.startswith(PNG_MAGIC)
    assert len(content) > 5_000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert np.ptp(image[..., :3], axis=(0, 1)).max() > 0.5  # not one flat colour
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 20


def test_plot_samples(model_2d, moons, tmp_path):
    samples = model_2d.sample(300, seed=0)
    path = plotting.plot_samples(
        moons.test, samples, tmp_path / "nested" / "samples.png", title="moons"
    )
    assert path == str(tmp_path / "nested" / "samples.png")
    assert_real_png(path)


def test_plot_samples_drops_non_finite_samples(moons, tmp_path):
    samples = np.array(moons.test, copy=True)
    samples[:5] = np.nan
    assert_real_png(plotting.plot_samples(moons.test, samples, tmp_path / "s.png"))


def test_plot_density(model_2d, moons, tmp_path):
    path = plotting.plot_density(
        model_2d, moons.test, tmp_path / "density.png", grid_size=60, chunk_size=1000
    )
    assert_real_png(path)
    path = plotting.plot_density(
        model_2d,
        moons.test,
        tmp_path / "bounded.png",
        grid_size=40,
        bounds=((-3, 3), (-2, 2)),
        show_data=False,
    )
    assert_real_png(path)


def test_plot_latent_mapping(model_2d, moons, tmp_path):
    assert_real_png(
        plotting.plot_latent_mapping(model_2d, moons.test, tmp_path / "latent.png", num_points=300)
    )


@pytest.mark.parametrize("validation", [True, False])
def test_plot_training_curves(tmp_path, validation):
    assert_real_png(
        plotting.plot_training_curves(history(validation=validation), tmp_path / "training.png")
    )


def test_plot_training_curves_needs_loss(tmp_path):
    with pytest.raises(ValueError, match="loss"):
        plotting.plot_training_curves({"bits_per_dim": [1.0]}, tmp_path / "t.png")
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_training_curves({"loss": []}, tmp_path / "t.png")


def test_2d_plots_refuse_other_dimensions(tmp_path):
    model_3d = flows.realnvp(3, num_layers=1, hidden_units=(4,))
    data_3d = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="2D"):
        plotting.plot_density(model_3d, data_3d, tmp_path / "d.png")
    with pytest.raises(ValueError, match="2D"):
        plotting.plot_latent_mapping(model_3d, data_3d, tmp_path / "l.png")
    with pytest.raises(ValueError, match="2D"):
        plotting.plot_samples(data_3d, data_3d, tmp_path / "s.png")
    assert not list(tmp_path.iterdir())


def test_plot_all_2d(model_2d, moons, tmp_path):
    paths = plotting.plot_all(model_2d, moons, history(), tmp_path / "out")
    assert set(paths) == {"samples", "density", "latent", "training"}
    for name, path in paths.items():
        assert path == str(tmp_path / "out" / f"{name}.png")
        assert_real_png(path)


def test_plot_all_digits_like(tmp_path):
    rng = np.random.default_rng(0)
    fake = datasets.Dataset(
        "digits",
        rng.uniform(0, 17, (40, 64)).astype(np.float32),
        rng.uniform(0, 17, (40, 64)).astype(np.float32),
    )
    model = flows.realnvp(64, num_layers=2, hidden_units=(16,))
    paths = plotting.plot_all(model, fake, history(3), tmp_path)
    assert set(paths) == {"samples", "training"}
    for path in paths.values():
        assert_real_png(path)


def test_plot_all_checks_event_size(model_2d, tmp_path):
    fake = datasets.Dataset("cube", np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="3-D events"):
        plotting.plot_all(model_2d, fake, None, tmp_path)


def test_does_not_change_the_backend(model_2d, moons, tmp_path):
    backend = matplotlib.get_backend()
    plotting.plot_samples(moons.test, moons.test, tmp_path / "s.png")
    assert matplotlib.get_backend() == backend
