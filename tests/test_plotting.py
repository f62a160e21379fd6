"""Every figure is written, labelled and shows the right data; 2D-only plots refuse other data.

No training: the flows are untrained (a RealNVP starts as the identity) or
hand-set (a fixed affine map, whose density and circle images are known in
closed form), so the numbers a figure shows can be checked exactly.
"""

import math
import warnings

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.image import AxesImage
from matplotlib.patches import Polygon

from tfp_flows import FlowModel, datasets, flows, layers, plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCALE, SHIFT = np.array([2.0, 0.5]), np.array([1.0, -1.0])


@pytest.fixture(scope="module")
def model_2d():
    return flows.realnvp(2, num_layers=2, hidden_units=(16,))


@pytest.fixture(scope="module")
def affine():
    """x = SCALE·z + SHIFT: the density N(SHIFT, diag(SCALE²)), known in closed form."""
    return FlowModel([layers.ScaleAndShiftLayer(SCALE, SHIFT)], event_shape=(2,))


def affine_log_prob(x):
    z = (x - SHIFT) / SCALE
    return -0.5 * np.sum(z**2, axis=-1) - np.log(2 * np.pi) - np.sum(np.log(SCALE))


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


def scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def colorbar_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


# --- samples ---------------------------------------------------------------


def test_plot_samples(model_2d, moons, tmp_path):
    samples = model_2d.sample(300, seed=0)
    path = plotting.plot_samples(
        moons.test, samples, tmp_path / "nested" / "samples.png", title="moons"
    )
    assert path == str(tmp_path / "nested" / "samples.png")
    assert_real_png(path)


def test_samples_figure_labels_the_split_and_keeps_an_equal_aspect(moons):
    samples = np.array(moons.train[:250], copy=True)
    samples[:5] = np.nan
    fig = plotting.samples_figure(moons.test, samples, title="moons", data_label="test data")
    data_ax, sample_ax = fig.axes
    assert data_ax.get_title() == "test data (n=200)"
    assert sample_ax.get_title() == "flow samples (n=245, 5 non-finite dropped)"
    assert fig.get_suptitle() == "moons"
    np.testing.assert_array_equal(scatters(data_ax)[0].get_offsets(), moons.test)
    np.testing.assert_array_equal(scatters(sample_ax)[0].get_offsets(), samples[5:])
    for ax in (data_ax, sample_ax):
        assert ax.get_aspect() == 1.0  # one unit is as long on both axes
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("x1", "x2")
    assert data_ax.get_xlim() == sample_ax.get_xlim()
    assert data_ax.get_ylim() == sample_ax.get_ylim()


def test_samples_in_unlike_units_get_a_free_aspect():
    rng = np.random.default_rng(0)
    points = np.stack([rng.normal(size=100), 1000 * rng.normal(size=100)], axis=1)
    fig = plotting.samples_figure(points, points)
    assert fig.axes[0].get_aspect() == "auto"


# --- density ---------------------------------------------------------------


def test_plot_density_writes_pngs(model_2d, moons, tmp_path):
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
        scale="linear",
    )
    assert_real_png(path)


def test_density_figure_log_scale_title_and_colour_limits(affine, moons):
    bounds = ((-3.0, 5.0), (-3.0, 1.0))
    fig = plotting.density_figure(
        affine, moons.test, grid_size=41, bounds=bounds, name="moons", data_label="test"
    )
    ax = fig.axes[0]
    (image,) = [i for i in ax.get_images() if isinstance(i, AxesImage)]
    # The grid holds the mode (1, -1) exactly: the peak is log N(0; 0, I) − log(2·0.5).
    peak = -np.log(2 * np.pi) - np.log(SCALE.prod())
    assert image.norm.vmax == pytest.approx(peak, abs=1e-5)
    assert image.norm.vmin == pytest.approx(peak - plotting.LOG_DENSITY_RANGE, abs=1e-5)
    xs, ys = np.linspace(*bounds[0], 41), np.linspace(*bounds[1], 41)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)
    expected = np.maximum(affine_log_prob(grid), peak - plotting.LOG_DENSITY_RANGE - 1.0)
    np.testing.assert_allclose(image.get_array(), expected, atol=2e-4)
    (colorbar,) = colorbar_axes(fig)
    assert colorbar.get_ylabel() == "log p(x) (nats)"
    nll = -affine_log_prob(moons.test.astype(np.float64)).mean()
    assert ax.get_title() == f"moons: learned density\ntest NLL {nll:.3f} nats (n=200)"
    assert legend_texts(ax) == ["test points (n=200)"]
    assert ax.get_aspect() == 1.0


def test_density_figure_linear_scale(affine, moons):
    fig = plotting.density_figure(
        affine, moons.test, grid_size=41, bounds=((-3, 5), (-3, 1)), scale="linear"
    )
    image = fig.axes[0].get_images()[0]
    assert image.norm.vmin == 0.0
    assert image.norm.vmax == pytest.approx(1 / (2 * np.pi * SCALE.prod()), rel=1e-4)
    assert colorbar_axes(fig)[0].get_ylabel() == "p(x)"
    assert fig.axes[0].get_title().startswith("learned density\ndata NLL ")


def test_density_title_refuses_a_mean_it_cannot_give(affine):
    class ZeroSomewhere:
        event_shape = (2,)

        def log_prob(self, x):
            log_p = affine.log_prob(x).numpy()
            return np.where(np.asarray(x)[:, 0] > 4.0, -np.inf, log_p)

    data = np.array([[0.0, 0.0], [1.0, -1.0], [4.5, 0.0]], np.float32)
    fig = plotting.density_figure(ZeroSomewhere(), data, grid_size=10)
    assert "NLL ∞ (1 of 3 points have p = 0)" in fig.axes[0].get_title()


def test_density_options_are_checked(affine, moons):
    with pytest.raises(ValueError, match="scale must be 'log' or 'linear'"):
        plotting.density_figure(affine, moons.test, scale="sqrt")
    with pytest.raises(ValueError, match="log_range must be a positive"):
        plotting.density_figure(affine, moons.test, log_range=0)


def test_log_densities_share_one_labelled_scale_per_row(affine, model_2d, tmp_path):
    rows = [
        [("exact", lambda x: affine_log_prob(np.asarray(x))), ("flow", affine.log_prob)],
        [("standard normal", model_2d.log_prob)],
    ]
    fig = plotting.log_densities_figure(rows, ((-4, 4), (-4, 4)), grid_size=30)
    top_left, top_right, bottom_left, bottom_right = fig.axes[:4]
    assert not bottom_right.axison  # a row shorter than the others leaves an empty slot
    first, second = top_left.get_images()[0], top_right.get_images()[0]
    assert (first.norm.vmin, first.norm.vmax) == (second.norm.vmin, second.norm.vmax)
    assert first.norm.vmax == pytest.approx(1 / (2 * np.pi * SCALE.prod()), rel=0.05)
    assert bottom_left.get_images()[0].norm.vmax != first.norm.vmax
    bars = colorbar_axes(fig)
    assert len(bars) == 2  # one per row
    assert all(bar.get_ylabel() == "p(x)\n(one scale per row)" for bar in bars)
    assert bottom_left.get_xlabel() == "x1" and bottom_left.get_ylabel() == "x2"
    assert top_left.get_xlabel() == "" and top_right.get_ylabel() == ""
    assert [t.get_text() for t in bottom_left.get_xticklabels() if t.get_text()]
    log_fig = plotting.log_densities_figure(
        rows[:1], ((-4, 4), (-4, 4)), grid_size=30, scale="log", axis_labels=("z1", "z2")
    )
    assert colorbar_axes(log_fig)[0].get_ylabel() == "log p(z) (nats)\n(one scale per row)"
    assert log_fig.axes[0].get_xlabel() == "z1"
    assert_real_png(plotting.plot_log_densities(rows, tmp_path / "d.png", ((-4, 4), (-4, 4))))


# --- latent mapping --------------------------------------------------------


def test_plot_latent_mapping(model_2d, moons, tmp_path):
    assert_real_png(
        plotting.plot_latent_mapping(model_2d, moons.test, tmp_path / "latent.png", num_points=300)
    )


def test_latent_figure_has_an_angle_key_and_smooth_circle_images(affine, moons):
    fig = plotting.latent_figure(affine, moons.test, num_points=300, data_label="test data")
    data_ax, latent_ax, pushed_ax, wheel = fig.axes
    assert wheel.name == "polar"
    (ring,) = [c for c in wheel.collections if isinstance(c, QuadMesh)]
    assert ring.cmap.name == plotting.ANGLE_CMAP
    assert (ring.norm.vmin, ring.norm.vmax) == (-np.pi, np.pi)
    assert scatters(data_ax)[0].norm.vmin == -np.pi  # the scatter uses the same mapping
    assert data_ax.get_title().startswith("test data, coloured by angle")
    assert "median" in legend_texts(data_ax)
    for ax in (data_ax, pushed_ax):
        for radius, line in zip(
            (1.0, 2.0), [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1]
        ):
            points = np.stack([line.get_xdata(), line.get_ydata()], axis=1)
            assert len(points) > 1000
            # The image of the radius-r circle under x = SCALE·z + SHIFT is an ellipse.
            np.testing.assert_allclose(
                np.linalg.norm((points - SHIFT) / SCALE, axis=1), radius, rtol=1e-5
            )
            np.testing.assert_allclose(points[0], points[-1], atol=1e-5)  # closed


def test_circle_image_refines_where_the_map_stretches():
    def forward(z):
        z = np.asarray(z, np.float64)
        return np.stack([z[:, 0], np.exp(4.0 * z[:, 1])], axis=1)

    limits = [(-1.0, 1.0), (0.0, 60.0)]
    points = plotting.circle_image(forward, 1.0, limits, num_points=64, tolerance=0.002)
    steps = np.linalg.norm(np.diff(points, axis=0) / [2.0, 60.0], axis=1)
    assert steps.max() <= 0.002
    assert len(points) > 64
    coarse = plotting.circle_image(forward, 1.0, limits, num_points=64, max_points=100)
    assert len(coarse) <= 100  # the cap holds

    def overflowing(z):  # +inf where z2 > 0.5: those points become gaps, the rest is refined
        x = forward(z)
        x[np.asarray(z)[:, 1] > 0.5, 1] = np.inf
        return x

    points = plotting.circle_image(overflowing, 1.0, limits, num_points=64)
    gaps = np.isnan(points).all(axis=1)
    assert gaps.any() and np.isfinite(points[~gaps]).all()
    assert len(points) < 32768


# --- training curves -------------------------------------------------------


@pytest.mark.parametrize("validation", [True, False])
def test_plot_training_curves(tmp_path, validation):
    assert_real_png(
        plotting.plot_training_curves(history(validation=validation), tmp_path / "training.png")
    )


def test_training_figure_entropy_excess_and_bits_axis():
    record = history(epochs=40)
    record["val_loss"][-3:] = [0.2, 0.2, 0.2]  # below the entropy: hidden on a log scale
    fig = plotting.training_figure(record, true_entropy=0.29, validation_label="test")
    nll_ax, gap_ax = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][:2]
    assert legend_texts(nll_ax) == [
        "train (loss)",
        "test (val_loss)",
        "true entropy H = 0.290 nats",
    ]
    entropy_line = nll_ax.get_lines()[2]
    np.testing.assert_allclose(entropy_line.get_ydata(), [0.29, 0.29])
    assert nll_ax.get_ylabel() == "NLL (nats)"
    assert nll_ax.get_xscale() == "log" and nll_ax.get_xlabel() == "epoch (log scale)"
    (bits_axis,) = nll_ax.child_axes
    assert bits_axis.get_ylabel() == "bits/dim (NLL / (2·ln 2))"  # D inferred from the history
    fig.canvas.draw()
    low, high = nll_ax.get_ylim()
    np.testing.assert_allclose(
        bits_axis.get_ylim(), (low / (2 * math.log(2)), high / (2 * math.log(2)))
    )
    train_gap, test_gap = gap_ax.get_lines()
    np.testing.assert_allclose(train_gap.get_ydata(), np.asarray(record["loss"]) - 0.29)
    test_excess = np.asarray(record["val_loss"]) - 0.29
    np.testing.assert_allclose(test_gap.get_ydata()[:-3], test_excess[:-3])
    assert np.isnan(test_gap.get_ydata()[-3:]).all()
    assert gap_ax.get_yscale() == "log"
    assert gap_ax.get_title() == "excess over the true entropy H = 0.290 nats"
    assert legend_texts(gap_ax)[1] == "test (val_loss); 3 epochs ≤ H not shown"


def test_training_figure_names_validation_and_test_curves_apart():
    record = history(epochs=4)
    record["test_loss"] = [2.0, 1.5, 1.3, 1.2]  # as callbacks.TestSetNLL logs the test set
    fig = plotting.training_figure(record, validation_label="validation (10% of train)")
    ax = fig.axes[0]
    assert legend_texts(ax) == [
        "train (loss)",
        "validation (10% of train) (val_loss)",
        "test (test_loss)",
    ]
    np.testing.assert_allclose(ax.get_lines()[2].get_ydata(), record["test_loss"])
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), record["val_loss"])


def test_training_figure_without_entropy_is_one_panel():
    record = history(epochs=5, validation=False)
    del record["bits_per_dim"]
    fig = plotting.training_figure(record, references={"uniform density": 3.0}, event_size=64)
    (ax,) = fig.axes[:1]
    assert len([a for a in fig.axes if a.get_title()]) == 1
    assert ax.get_xscale() == "linear"  # five epochs read well on a linear axis
    assert legend_texts(ax) == ["train (loss)", "uniform density: 3.000 nats"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [3.0, 3.0])
    assert ax.child_axes[0].get_ylabel() == "bits/dim (NLL / (64·ln 2))"
    # Without bits_per_dim in the history nor event_size there is no bits axis to draw.
    assert not plotting.training_figure(record).axes[0].child_axes


def test_plot_training_curves_needs_loss(tmp_path):
    with pytest.raises(ValueError, match="loss"):
        plotting.plot_training_curves({"bits_per_dim": [1.0]}, tmp_path / "t.png")
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_training_curves({"loss": []}, tmp_path / "t.png")
    with pytest.raises(ValueError, match="true_entropy must be a finite"):
        plotting.plot_training_curves({"loss": [1.0]}, tmp_path / "t.png", true_entropy=np.nan)
    assert not list(tmp_path.iterdir())


def test_loss_comparison_marks_the_entropy(tmp_path):
    runs = {"planar, test": {"loss": [2.0, 1.5, 1.2]}, "RealNVP, test": {"loss": [1.8, 1.1, 1.0]}}
    fig = plotting.loss_comparison_figure(runs, true_entropy=0.908)
    ax = fig.axes[0]
    assert legend_texts(ax) == ["planar, test", "RealNVP, test", "true entropy H = 0.908 nats"]
    np.testing.assert_allclose(ax.get_lines()[2].get_ydata(), [0.908, 0.908])
    assert ax.get_xlabel() == "epoch"
    assert_real_png(plotting.plot_loss_comparison(runs, tmp_path / "nll.png", true_entropy=0.9))


# --- corner plot -----------------------------------------------------------


def tabular(n=300, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, size)) * np.arange(1, size + 1)).astype(np.float32)


def panel(fig, k, i, j):
    return fig.axes[i * k + j]


def test_corner_figure_shows_the_columns_it_names():
    data, samples = tabular(), tabular(seed=1)
    fig = plotting.corner_figure(data, samples, title="mine", data_label="test data")
    k = 6
    assert fig.get_suptitle() == "mine\nthe first 6 of 8 columns"
    assert [panel(fig, k, k - 1, j).get_xlabel() for j in range(k)] == [
        f"x{j + 1}" for j in range(k)
    ]
    assert [panel(fig, k, i, 0).get_ylabel() for i in range(1, k)] == [
        f"x{i + 1}" for i in range(1, k)
    ]
    for i in range(k):
        for j in range(k):
            ax = panel(fig, k, i, j)
            assert ax.axison == (j <= i)
            if j < i:  # column j against column i, both sets, every point (n < max_points)
                shown_data, shown_samples = scatters(ax)
                np.testing.assert_array_equal(shown_data.get_offsets(), data[:, [j, i]])
                np.testing.assert_array_equal(shown_samples.get_offsets(), samples[:, [j, i]])
                assert ax.collections[2:]  # the mass contours
    # The diagonal: histograms of column i on common bins, as densities.
    diagonal = panel(fig, k, 2, 2)
    (data_bars,) = diagonal.containers
    edges = np.linspace(*diagonal.get_xlim(), 31)
    heights, _ = np.histogram(data[:, 2], edges, density=True)
    np.testing.assert_allclose([bar.get_height() for bar in data_bars], heights, rtol=1e-6)
    (sample_step,) = [p for p in diagonal.patches if isinstance(p, Polygon)]
    heights, _ = np.histogram(samples[:, 2], edges, density=True)
    step_heights = sample_step.get_path().vertices[:, 1]
    np.testing.assert_allclose(np.unique(step_heights), np.unique(np.r_[0.0, heights]), rtol=1e-6)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "test data (n=300)",
        "flow samples (n=300)",
    ]


def test_corner_figure_picks_columns_by_variance_or_by_index():
    data = tabular()  # column c has standard deviation c + 1
    fig = plotting.corner_figure(data, data, dims="variance", max_dims=3)
    assert fig.get_suptitle() == "the 3 highest-variance of 8 columns: x6, x7, x8"
    assert [panel(fig, 3, 2, j).get_xlabel() for j in range(3)] == ["x6", "x7", "x8"]
    np.testing.assert_array_equal(scatters(panel(fig, 3, 2, 0))[0].get_offsets(), data[:, [5, 7]])
    names = [f"col{c}" for c in range(8)]
    fig = plotting.corner_figure(data, data, dims=[4, 0], labels=names)
    assert fig.get_suptitle() == "2 of 8 columns: col4, col0"
    assert panel(fig, 2, 1, 0).get_ylabel() == "col0"
    np.testing.assert_array_equal(scatters(panel(fig, 2, 1, 0))[0].get_offsets(), data[:, [4, 0]])


def test_corner_figure_one_column_and_non_finite_samples():
    data = tabular(size=1)
    samples = np.array(data, copy=True)
    samples[:4] = np.inf
    fig = plotting.corner_figure(data, samples)
    assert fig.get_suptitle() == "the 1 column"
    assert legend_texts(fig.axes[0]) == [
        "data (n=300)",
        "flow samples (n=296, 4 non-finite dropped)",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dims": [0, 0]}, "distinct column indices"),
        ({"dims": [9]}, "distinct column indices"),
        ({"dims": "random"}, "dims must be None, 'variance'"),
        ({"dims": list(range(7))}, "more than max_dims=6"),
        ({"labels": ["a"]}, "labels must name all 8 columns"),
        ({"max_dims": 0}, "max_dims must be at least 1"),
    ],
)
def test_corner_figure_checks_its_options(options, message):
    with pytest.raises(ValueError, match=message):
        plotting.corner_figure(tabular(), tabular(), **options)


def test_corner_figure_checks_the_samples():
    with pytest.raises(ValueError, match="samples have 3 columns but data have 8"):
        plotting.corner_figure(tabular(), tabular(size=3))
    with pytest.raises(ValueError, match="every sample is non-finite"):
        plotting.corner_figure(tabular(), np.full((5, 8), np.nan))


# --- images ----------------------------------------------------------------


def test_image_grid_panels_stand_apart_and_rows_are_labelled():
    rng = np.random.default_rng(0)
    panels = {f"T = {t}": rng.uniform(0, 17, (16, 64)) for t in (1.0, 0.5)}
    fig = plotting.image_grid_figure(panels, columns=4, value_range=(0, 17), row_labels="abcd")
    fig.canvas.draw()
    left, right = fig.axes
    gap = right.get_window_extent().x0 - left.get_window_extent().x1
    assert gap > 0.1 * fig.dpi  # at least a tenth of an inch between panels
    assert [t.get_text() for t in left.get_yticklabels()] == list("abcd")
    assert left.get_title() == "T = 1.0 (16)"
    with pytest.raises(ValueError, match="row_labels must label all 4 rows"):
        plotting.image_grid_figure(panels, columns=4, row_labels="abc")


def test_plot_all_digits_like(tmp_path):
    rng = np.random.default_rng(0)
    fake = datasets.Dataset(
        "digits",
        rng.uniform(0, 17, (40, 64)).astype(np.float32),
        rng.uniform(0, 17, (40, 64)).astype(np.float32),
        image_shape=(8, 8, 1),
        value_range=17.0,
    )
    model = flows.realnvp(64, num_layers=2, hidden_units=(16,))
    paths = plotting.plot_all(model, fake, history(3), tmp_path)
    assert set(paths) == {"samples", "training"}
    for path in paths.values():
        assert_real_png(path)


# --- plot_all --------------------------------------------------------------


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
    paths = plotting.plot_all(model_2d, moons, history(), tmp_path / "out", true_entropy=0.29)
    assert set(paths) == {"samples", "density", "latent", "training"}
    for name, path in paths.items():
        assert path == str(tmp_path / "out" / f"{name}.png")
        assert_real_png(path)


def test_plot_all_tabular_data_gets_a_corner_plot_and_no_warning(tmp_path):
    data = tabular(size=3)
    fake = datasets.Dataset("mine", data[:200], data[200:])
    model = flows.realnvp(3, num_layers=1, hidden_units=(4,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = plotting.plot_all(model, fake, history(3), tmp_path, validation_label="test")
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
