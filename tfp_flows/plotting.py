"""Figures for trained flows: samples, density, the data ↔ latent mapping, training curves.

Each `plot_*` function draws on its own `matplotlib.figure.Figure` with the
Agg canvas and writes a PNG, so nothing here touches pyplot or the user's
backend, and figures are freed with their last reference (no `plt.close`
bookkeeping). Each returns the path it wrote (a `str`), creating parent
directories. The matching `*_figure` function (`samples_figure`,
`density_figure`, ...) takes the same arguments but the path and returns
the `Figure` instead, to inspect, restyle or save in another format.

`plot_samples`, `plot_density` and `plot_latent_mapping` are for 2D data and
raise a ValueError otherwise; `plot_corner` compares data and samples of any
dimension (pairwise 2-D marginals and 1-D histograms); `plot_image_samples`
shows flat image vectors (e.g. 8×8 digits) as a grid; `plot_all` picks the
right set for a dataset.

Example:
    >>> from tfp_flows import datasets, flows, plotting
    >>> data = datasets.load("moons", num_train=500, num_test=200)
    >>> model = flows.realnvp(2, num_layers=2)
    >>> paths = plotting.plot_all(model, data, None, "/tmp/moons_plots")  # doctest: +SKIP
"""

import math
import os

import numpy as np
from matplotlib import colormaps, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DATA_COLOR = "tab:blue"
SAMPLE_COLOR = "tab:orange"
VALIDATION_COLOR = "tab:green"
TEST_COLOR = "tab:orange"
ENTROPY_COLOR = "black"
REFERENCE_COLOR = "tab:gray"
ANGLE_CMAP = "hsv"  # cyclic, with clearly distinct hues, so each angle keeps its colour
DENSITY_CMAP = "viridis"
DIGITS_VALUE_RANGE = (0.0, 17.0)
LOG_DENSITY_RANGE = 10.0  # nats below the peak that a log-scale density plot shows
MAX_EQUAL_ASPECT_RATIO = 5.0  # wider spreads (data in different units) get free aspects
LOG_EPOCHS_FROM = 20  # runs of more epochs get a log epoch axis by default
CORNER_MAX_DIMS = 6


# --- 2D figures ------------------------------------------------------------


def plot_samples(data, samples, path, **options):
    """Side-by-side scatter of data and model samples; writes `path`, see `samples_figure`."""
    return save_figure(samples_figure(data, samples, **options), path)


def samples_figure(data, samples, title=None, max_points=5000, data_label="data"):
    """Side-by-side scatter of data and model samples, on the same axis limits.

    Limits cover all sets (0.5–99.5 percentiles plus a margin), so samples
    that spread wider than the data show as such; both axes have the same
    scale unless the data's ranges differ by more than a factor
    `MAX_EQUAL_ASPECT_RATIO` (columns in different units). Non-finite
    samples are dropped and counted in the panel title.

    Arguments:
        data: array [N, 2].
        samples: array [M, 2], or {label: array [M, 2]} to compare several
            models, one panel each.
        title: optional figure title.
        max_points: each panel shows at most this many points (a fixed random subset).
        data_label: what the data are ("test data", "training data", ...),
            the data panel's title.
    """
    data = _subsample(_points_2d(data, "data"), max_points)
    if not isinstance(samples, dict):
        samples = {"flow samples": samples}
    if not samples:
        raise ValueError("samples is empty: pass an array or a non-empty dict of arrays.")
    panels = [(data_label, data, DATA_COLOR, 0)]
    for label, points in samples.items():
        points = _points_2d(points, f"samples {label!r}")
        finite = np.isfinite(points).all(axis=1)
        panels.append(
            (label, _subsample(points[finite], max_points), SAMPLE_COLOR, int((~finite).sum()))
        )
    limits = _limits(*[points for _, points, _, _ in panels])
    equal = _equal_aspect(limits)
    width, height = _panel_size(limits, 18.0, equal)
    fig, axes = new_figure(
        1, len(panels), ((width + 0.9) * len(panels), height + (1.4 if title else 1.1))
    )
    for ax, (label, points, color, dropped) in zip(axes, panels):
        ax.scatter(
            points[:, 0],
            points[:, 1],
            s=_marker_size(len(points)),
            color=color,
            alpha=0.6,
            linewidths=0,
            rasterized=True,
        )
        _set_data_axes(ax, limits, equal)
        extra = f", {dropped} non-finite dropped" if dropped else ""
        ax.set_title(f"{label} (n={len(points)}{extra})")
    if title:
        fig.suptitle(title)
    return fig


def plot_loss_comparison(histories, path, **options):
    """One curve per run; writes `path`, see `loss_comparison_figure`."""
    return save_figure(loss_comparison_figure(histories, **options), path)


def loss_comparison_figure(
    histories, key="loss", ylabel="NLL (nats)", true_entropy=None, log_epochs=None
):
    """One curve per run: {label: Keras History (or its .history dict)} → `key` per epoch.

    Arguments:
        histories: {label: History or dict}; the label names the run and the split.
        key: the history entry to plot.
        ylabel: its axis label.
        true_entropy: the data's entropy in the units of `key` (nats for a
            loss), drawn as a horizontal line: no model scores below it on
            fresh data.
        log_epochs: a logarithmic epoch axis; by default when a run has more
            than `LOG_EPOCHS_FROM` epochs.
    """
    if not histories:
        raise ValueError("histories is empty: there is nothing to plot.")
    curves = {}
    for label, history in histories.items():
        history = getattr(history, "history", history)
        if key not in history:
            raise ValueError(f"history {label!r} has no {key!r}; it has {sorted(history)}.")
        curves[label] = _finite_or_gap(history[key])
    epochs = max(len(values) for values in curves.values())
    fig, (ax,) = new_figure(1, 1, (6.6, 4.4))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    if true_entropy is not None:
        _entropy_line(ax, _check_entropy(true_entropy))
    _epoch_axis(ax, epochs, log_epochs)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig


def plot_density(model, data, path, **options):
    """The learned density on a grid; writes `path`, see `density_figure`."""
    return save_figure(density_figure(model, data, **options), path)


def density_figure(
    model,
    data,
    grid_size=200,
    bounds=None,
    show_data=True,
    chunk_size=16384,
    scale="log",
    log_range=LOG_DENSITY_RANGE,
    name=None,
    data_label="data",
):
    """The learned density on a grid, with the data overlaid faintly; the title gives its NLL.

    Arguments:
        model: a `FlowModel` over 2D events.
        data: array [N, 2]; sets the default bounds, is overlaid if
            `show_data`, and its mean negative log-likelihood under `model`
            is given in the title.
        grid_size: points per axis.
        bounds: ((x_min, x_max), (y_min, y_max)); by default the data's
            0.5–99.5 percentiles plus a 10 % margin.
        show_data: overlay the data as small translucent points.
        chunk_size: grid points per `log_prob` call, to bound memory.
        scale: "log" (the default) colours log p(x) from its peak down to
            `log_range` nats below it, so the thin tails and low-density
            bridges a flow leaves between modes stay visible; "linear"
            colours p(x) from 0, which shows where the mass is.
        log_range: nats below the peak at which the log scale saturates.
        name: the dataset's name, for the title.
        data_label: what `data` are ("test", "training"), for the title.

    Grid points where log p is -inf or NaN are drawn as no mass (the lowest
    colour), and +inf (overflow) as red; the title counts them.
    """
    _check_model_2d(model)
    data = _points_2d(data, "data")
    scale = _check_scale(scale)
    log_range = _check_log_range(log_range)
    limits = _limits(data) if bounds is None else _check_bounds(bounds)

    log_density, non_finite = _log_density_on_grid(model.log_prob, limits, grid_size, chunk_size)
    nll = _nll_text(_batched(model.log_prob, data, chunk_size))
    equal = _equal_aspect(limits)
    width, height = _panel_size(limits, 30.0, equal)
    fig, (ax,) = new_figure(1, 1, (width + 2.3, height + 1.3))
    image, label = _show_density(ax, log_density, limits, scale, log_range, equal)
    fig.colorbar(image, ax=ax, label=label, extend="min" if scale == "log" else "neither")
    if show_data:
        shown = _subsample(data, 3000)
        ax.scatter(
            shown[:, 0],
            shown[:, 1],
            s=1.5,
            color="white",
            alpha=0.25,
            linewidths=0,
            rasterized=True,
        )
        ax.legend(
            [Line2D([], [], marker="o", color="white", markeredgecolor="gray", linestyle="")],
            [
                f"{data_label} points (n={len(data)})"
                if len(shown) == len(data)
                else f"{data_label} points ({len(shown)} of {len(data)})"
            ],
            loc="upper right",
            fontsize="small",
            facecolor="lightgray",
        )
    _set_data_axes(ax, limits, equal)
    title = f"{name}: learned density" if name else "learned density"
    title += f"\n{data_label} NLL {nll}"
    if non_finite:
        title += f"; {non_finite} grid points with non-finite log p"
    ax.set_title(title)
    return fig


def plot_log_densities(rows, path, bounds, **options):
    """A grid of 2D densities side by side; writes `path`, see `log_densities_figure`."""
    return save_figure(log_densities_figure(rows, bounds, **options), path)


def log_densities_figure(
    rows,
    bounds,
    grid_size=150,
    chunk_size=16384,
    scale="linear",
    log_range=LOG_DENSITY_RANGE,
    axis_labels=("x1", "x2"),
):
    """A grid of 2D densities side by side, e.g. an exact density next to learned ones.

    Arguments:
        rows: a list of rows, each a list of (title, log_prob_fn) panels; a
            log_prob_fn maps float32 points [N, 2] to log p [N] (a model's
            `log_prob`, a TFP distribution's, or an unnormalised target).
            Panels in a row share one colour scale, with one colour bar at
            the row's end, so they compare directly.
        bounds: ((x_min, x_max), (y_min, y_max)) of every panel.
        grid_size: points per axis.
        chunk_size: grid points per call, to bound memory.
        scale: "linear" colours p(x) from 0; "log" colours log p(x) down to
            `log_range` nats below the row's peak.
        log_range: nats below the peak at which the log scale saturates.
        axis_labels: names of the two coordinates; the colour bar names the
            density after them (("z1", "z2") gives p(z)).
    """
    limits = _check_bounds(bounds)
    scale = _check_scale(scale)
    log_range = _check_log_range(log_range)
    rows = [list(row) for row in rows]
    if not rows or not all(rows):
        raise ValueError("rows must be a non-empty list of non-empty lists of panels.")
    columns = max(len(row) for row in rows)
    variable = axis_labels[0].rstrip("0123456789_") or "x"  # "z1" → p(z)
    equal = _equal_aspect(limits)
    width, height = _panel_size(limits, 7.0, equal)
    fig, axes = new_figure(
        len(rows), columns, ((width + 0.3) * columns + 1.6, (height + 0.6) * len(rows) + 0.3)
    )
    for r, row in enumerate(rows):
        panels = []
        for title, log_prob_fn in row:
            log_density, non_finite = _log_density_on_grid(
                log_prob_fn, limits, grid_size, chunk_size
            )
            if non_finite:
                title += f" ({non_finite} non-finite)"
            panels.append((title, log_density))
        peak = _peak([log_density for _, log_density in panels])
        row_axes = axes[r * columns : (r + 1) * columns]
        for c, ax in enumerate(row_axes):
            if c >= len(panels):
                ax.set_axis_off()
                continue
            title, log_density = panels[c]
            image, label = _show_density(
                ax, log_density, limits, scale, log_range, equal, peak, variable
            )
            ax.set_title(title, fontsize=9)
            _set_data_axes(ax, limits, equal, axis_labels)
            ax.tick_params(labelsize=7)
            if r < len(rows) - 1:
                ax.set_xlabel("")
                ax.tick_params(labelbottom=False)
            if c > 0:
                ax.set_ylabel("")
                ax.tick_params(labelleft=False)
        fig.colorbar(
            image,
            ax=row_axes[: len(panels)],
            label=f"{label}\n(one scale per row)",
            extend="min" if scale == "log" else "neither",
            fraction=0.04,
            pad=0.02,
        )
    return fig


def plot_latent_mapping(model, data, path, **options):
    """How the flow maps data to its base and back; writes `path`, see `latent_figure`."""
    return save_figure(latent_figure(model, data, **options), path)


def latent_figure(model, data, num_points=2000, seed=0, data_label="data"):
    """How the flow maps data to the standard normal base, and back.

    Left: data coloured by its angle around the data's median (marked +,
    angles in standardised coordinates). Middle: the same points mapped to
    latent space by `model.inverse`, same colours, with the base's 1σ and 2σ
    circles; a good flow turns the data into a round, centred cloud. Right:
    z ~ N(0, I) mapped to data space by `model.forward`, coloured by their
    latent angle. The colour wheel at the right is the key to both angles.
    Both data-space panels show the images of the 1σ/2σ circles, sampled
    finely (and refined where the map stretches them) so they are smooth.

    `inverse` is closed-form for coupling and radial flows but numerical
    (root finding) for planar flows, so it is slower there.

    Arguments:
        model: a `FlowModel` over 2D events with a standard normal base.
        data: array [N, 2].
        num_points: at most this many data points and latent samples.
        seed: for the data subset and the latent samples.
        data_label: what the data are ("test data", ...), for the titles.
    """
    _check_model_2d(model)
    data = _subsample(_points_2d(data, "data"), num_points, seed)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num_points, 2)).astype(np.float32)

    centre, scale = np.median(data, axis=0), data.std(axis=0) + 1e-12
    data_angle = _angle((data - centre) / scale)
    latent = _numpy(model.inverse(data))
    pushed = _numpy(model.forward(z))

    ok_latent = np.isfinite(latent).all(axis=1)
    ok_pushed = np.isfinite(pushed).all(axis=1)
    limits = _limits(data, pushed[ok_pushed])
    equal = _equal_aspect(limits)
    circle_images = {r: circle_image(model.forward, r, limits) for r in (1.0, 2.0)}
    size = _marker_size(num_points)

    width, height = _panel_size(limits, 11.0, equal)
    height = max(height, 3.6)  # the latent panel is square
    fig = Figure(figsize=(2 * width + height + 1.3 + 2.8, height + 1.3), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 4, width_ratios=[width + 0.8, height + 0.8, width + 0.8, 1.1])
    data_ax, latent_ax, pushed_ax = (fig.add_subplot(grid[0, i]) for i in range(3))
    _scatter_by_angle(data_ax, data, data_angle, size)
    data_ax.plot(*centre, "+", color="black", markersize=12, markeredgewidth=2, label="median")
    data_ax.set_title(f"{data_label}, coloured by angle\naround the median (+)")

    _scatter_by_angle(latent_ax, latent[ok_latent], data_angle[ok_latent], size)
    for radius, style in [(1.0, "-"), (2.0, "--")]:
        latent_ax.add_patch(
            Circle(
                (0, 0),
                radius,
                fill=False,
                color="black",
                linestyle=style,
                linewidth=1.2,
                label=f"{radius:.0f}σ circle of N(0, I)",
            )
        )
    reach = max(
        3.5, float(np.percentile(np.abs(latent[ok_latent]), 99.5)) if ok_latent.any() else 3.5
    )
    latent_ax.set_xlim(-reach, reach)
    latent_ax.set_ylim(-reach, reach)
    latent_ax.set_aspect("equal", adjustable="box")
    latent_ax.set_xlabel("z1")
    latent_ax.set_ylabel("z2")
    latent_ax.legend(loc="upper right", fontsize="small")
    title = f"{data_label} mapped to latent space (inverse),\nsame colours"
    if not ok_latent.all():
        title += f"; {int((~ok_latent).sum())} non-finite dropped"
    latent_ax.set_title(title)

    _scatter_by_angle(pushed_ax, pushed[ok_pushed], _angle(z[ok_pushed]), size)
    title = "z ~ N(0, I) mapped to data space (forward),\ncoloured by latent angle"
    if not ok_pushed.all():
        title += f"; {int((~ok_pushed).sum())} non-finite dropped"
    pushed_ax.set_title(title)

    for ax in (data_ax, pushed_ax):
        for radius, style in [(1.0, "-"), (2.0, "--")]:
            image = circle_images[radius]
            ax.plot(
                image[:, 0],
                image[:, 1],
                color="black",
                linestyle=style,
                linewidth=1.0,
                label=f"image of the {radius:.0f}σ circle",
            )
        _set_data_axes(ax, limits, equal)
    data_ax.legend(loc="upper right", fontsize="small")
    _angle_wheel(fig.add_subplot(grid[0, 3], projection="polar"))
    return fig


def circle_image(forward, radius, limits, num_points=1024, tolerance=0.002, max_points=32768):
    """forward(circle of `radius`) as a polyline [K, 2], refined until it is smooth.

    Starts from `num_points` angles and bisects every segment whose image is
    longer than `tolerance` times the plot's size (`limits`), where the map
    stretches the circle, until none is or `max_points` is reached.
    Non-finite images stay in as NaN rows (gaps in the line).
    """
    size = np.array([hi - lo for lo, hi in limits])
    theta = np.linspace(0.0, 2.0 * np.pi, num_points + 1)
    images = {}
    while True:
        new = np.array([t for t in theta if t not in images], dtype=np.float64)
        if len(new):
            circle = radius * np.stack([np.cos(new), np.sin(new)], axis=1)
            for t, point in zip(new, _numpy(forward(circle.astype(np.float32)))):
                images[t] = point
        points = np.array([images[t] for t in theta], dtype=np.float64)
        points[~np.isfinite(points).all(axis=1)] = np.nan  # ±inf too: a gap, never refined
        steps = np.linalg.norm(np.diff(points, axis=0) / size, axis=1)
        long = steps > tolerance  # NaN steps compare False: gaps are not refined
        if not long.any() or len(theta) + long.sum() > max_points:
            return points
        theta = np.sort(np.concatenate([theta, 0.5 * (theta[:-1][long] + theta[1:][long])]))


# --- Any dimension ---------------------------------------------------------


def plot_training_curves(history, path, **options):
    """NLL per epoch; writes `path`, see `training_figure`."""
    return save_figure(training_figure(history, **options), path)


def training_figure(
    history,
    true_entropy=None,
    references=None,
    event_size=None,
    validation_label="validation",
    log_epochs=None,
):
    """Training (and validation) NLL per epoch, in nats and bits/dim, against the entropy.

    The left panel shows the NLL in nats (left axis) and bits/dim (right
    axis, when the event size is known or follows from the history's
    `bits_per_dim`), with the data's true entropy as a dashed line. When the
    entropy is given, the right panel shows how far each curve is above it,
    NLL − H, on log axes: on held-out data that gap estimates KL(p‖q), and
    the log scale shows the late epochs that the first panel squeezes
    together. Epochs at or below the entropy (noise, or overfitting on the
    training set) cannot show on a log scale and are counted in the legend.

    Arguments:
        history: a dict like Keras' `History.history` (a `History` also works),
            with at least `loss`; `val_loss` (Keras' validation data) and
            `test_loss` (the test set, as `callbacks.TestSetNLL` logs it) are
            drawn if present, other keys (learning rate, ...) are ignored.
        true_entropy: the data's differential entropy in nats, if known
            (e.g. `datasets.TRUE_ENTROPY[name]`).
        references: {label: NLL in nats} of other levels to mark, e.g.
            {"uniform density": D·log K} for dequantised images.
        event_size: D, for the bits/dim axis; by default inferred from
            `history["bits_per_dim"]`, and without either the axis is left out.
        validation_label: what `val_loss` was measured on ("test",
            "validation (10% of train)"): Keras calls it validation whatever
            data `fit` was given.
        log_epochs: a logarithmic epoch axis; by default when there are more
            than `LOG_EPOCHS_FROM` epochs.
    """
    history = getattr(history, "history", history)
    if not isinstance(history, dict) or "loss" not in history:
        keys = sorted(history) if isinstance(history, dict) else type(history).__name__
        raise ValueError(f"history must be a dict with a 'loss' list, got {keys}.")
    if len(history["loss"]) == 0:
        raise ValueError("history['loss'] is empty: there is nothing to plot.")
    curves = {"train (loss)": (_finite_or_gap(history["loss"]), DATA_COLOR)}
    if "val_loss" in history:
        values = _finite_or_gap(history["val_loss"])
        color = TEST_COLOR if validation_label == "test" else VALIDATION_COLOR
        curves[f"{validation_label} (val_loss)"] = (values, color)
    if "test_loss" in history:
        curves["test (test_loss)"] = (_finite_or_gap(history["test_loss"]), TEST_COLOR)
    if true_entropy is not None:
        true_entropy = _check_entropy(true_entropy)
    references = dict(references or {})
    if event_size is None:
        event_size = _event_size_from_history(history)
    elif int(event_size) != event_size or event_size < 1:
        raise ValueError(f"event_size must be a positive integer, got {event_size!r}.")
    epochs = max(len(values) for values, _ in curves.values())

    panels = 2 if true_entropy is not None else 1
    fig, axes = new_figure(1, panels, (5.8 * panels + 0.4, 4.4))
    ax = axes[0]
    for label, (values, color) in curves.items():
        ax.plot(
            np.arange(1, len(values) + 1),
            values,
            color=color,
            marker="o" if len(values) <= 30 else None,
            markersize=3,
            label=label,
        )
    if true_entropy is not None:
        _entropy_line(ax, true_entropy)
    for (label, value), style in zip(references.items(), (":", "-.", (0, (5, 5)))):
        ax.axhline(
            value, color=REFERENCE_COLOR, linestyle=style, label=f"{label}: {value:.3f} nats"
        )
    _epoch_axis(ax, epochs, log_epochs)
    ax.set_ylabel("NLL (nats)")
    ax.set_title("negative log-likelihood")
    if event_size is not None:
        per_bit = event_size * math.log(2.0)
        ax.secondary_yaxis(
            "right", functions=(lambda v: v / per_bit, lambda b: b * per_bit)
        ).set_ylabel(f"bits/dim (NLL / ({event_size}·ln 2))")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")

    if true_entropy is not None:
        gap_ax = axes[1]
        for label, (values, color) in curves.items():
            excess = values - true_entropy
            hidden = int(np.sum(excess <= 0))
            shown = np.where(excess > 0, excess, np.nan)
            note = f"; {hidden} epochs ≤ H not shown" if hidden else ""
            gap_ax.plot(
                np.arange(1, len(values) + 1),
                shown,
                color=color,
                marker="o" if len(values) <= 30 else None,
                markersize=3,
                label=f"{label}{note}",
            )
        gap_ax.set_yscale("log")
        _plain_log_ticks(gap_ax.yaxis)
        _epoch_axis(gap_ax, epochs, log_epochs)
        gap_ax.set_ylabel("NLL − H (nats)")
        gap_ax.set_title(f"excess over the true entropy H = {true_entropy:.3f} nats")
        gap_ax.grid(alpha=0.3, which="both")
        gap_ax.legend(fontsize="small")
    return fig


def plot_corner(data, samples, path, **options):
    """Pairwise marginals of data and samples; writes `path`, see `corner_figure`."""
    return save_figure(corner_figure(data, samples, **options), path)


def corner_figure(
    data,
    samples,
    max_dims=CORNER_MAX_DIMS,
    dims=None,
    labels=None,
    data_label="data",
    sample_label="flow samples",
    title=None,
    max_points=2000,
    bins=30,
    seed=0,
):
    """A corner plot: 1-D histograms on the diagonal, pairwise 2-D marginals below, data vs samples.

    For data of any dimension, e.g. tabular data. Below the diagonal, panel
    (i, j) shows column j (x) against column i (y): points of both sets
    (subsampled) and contours that hold 50 % and 90 % of each set's mass
    (data solid, samples dashed). The diagonal compares the 1-D histograms
    on common bins. Axis limits cover both sets (0.5–99.5 percentiles plus a
    margin). The title says which columns are shown.

    Arguments:
        data: array [N, D].
        samples: array [M, D]; non-finite rows are dropped and counted.
        max_dims: at most this many columns are shown.
        dims: which columns: None for the first `max_dims`, "variance" for
            the `max_dims` columns of highest variance in the data (shown in
            their order), or a list of column indices (0-based).
        labels: names of all D columns; by default x1 … xD.
        data_label, sample_label: the two sets' names in the legend.
        title: a first title line (e.g. the dataset's name).
        max_points: at most this many points of each set in a 2-D panel.
        bins: histogram bins per axis.
        seed: for the subsets.
    """
    data = _points(data, "data")
    samples = _points(samples, "samples")
    size = data.shape[1]
    if samples.shape[1] != size:
        raise ValueError(
            f"samples have {samples.shape[1]} columns but data have {size}: they must match."
        )
    finite = np.isfinite(samples).all(axis=1)
    dropped = int((~finite).sum())
    samples = samples[finite]
    if not len(samples):
        raise ValueError("every sample is non-finite: there is nothing to compare.")
    labels = [f"x{k + 1}" for k in range(size)] if labels is None else [str(s) for s in labels]
    if len(labels) != size:
        raise ValueError(f"labels must name all {size} columns, got {len(labels)}.")
    columns, which = _corner_columns(data, max_dims, dims, labels)
    bins = int(bins)
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}.")
    k = len(columns)
    limits = _limits(data[:, columns], samples[:, columns])
    shown_data = _subsample(data, max_points, seed)
    shown_samples = _subsample(samples, max_points, seed + 1)
    marker = float(np.clip(800.0 / max_points, 0.5, 4.0))

    side = max(4.5, 1.9 * k + 1.0)
    fig, axes = new_figure(k, k, (side, side + 0.4))
    for i in range(k):
        for j in range(k):
            ax = axes[i * k + j]
            ci, cj = columns[i], columns[j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                edges = np.linspace(*limits[i], bins + 1)
                ax.hist(
                    data[:, ci],
                    edges,
                    density=True,
                    color=DATA_COLOR,
                    alpha=0.35,
                    label=data_label,
                )
                ax.hist(
                    samples[:, ci],
                    edges,
                    density=True,
                    histtype="step",
                    color=SAMPLE_COLOR,
                    linewidth=1.5,
                    label=sample_label,
                )
                ax.set_xlim(*limits[i])
                ax.set_yticks([])
            else:
                for points, color in ((shown_data, DATA_COLOR), (shown_samples, SAMPLE_COLOR)):
                    ax.scatter(
                        points[:, cj],
                        points[:, ci],
                        s=marker,
                        color=color,
                        alpha=0.25,
                        linewidths=0,
                        rasterized=True,
                    )
                for points, color, style in (
                    (data, DATA_COLOR, "solid"),
                    (samples, SAMPLE_COLOR, "dashed"),
                ):
                    _mass_contours(
                        ax, points[:, cj], points[:, ci], limits[j], limits[i], bins, color, style
                    )
                ax.set_xlim(*limits[j])
                ax.set_ylim(*limits[i])
                if j == 0:
                    ax.set_ylabel(labels[ci])
                else:
                    ax.tick_params(labelleft=False)
            if i == k - 1:
                ax.set_xlabel(labels[cj])
            else:
                ax.tick_params(labelbottom=False)
            ax.tick_params(labelsize=7)
            if k > 3:
                ax.tick_params(axis="x", labelrotation=45)
    handles = [
        Line2D([], [], color=DATA_COLOR, linewidth=6, alpha=0.5),
        Line2D([], [], color=SAMPLE_COLOR, linestyle="dashed", linewidth=1.5),
    ]
    legend_labels = [
        f"{data_label} (n={len(data)})",
        f"{sample_label} (n={len(samples)}"
        + (f", {dropped} non-finite dropped)" if dropped else ")"),
    ]
    if k > 1:
        fig.legend(handles, legend_labels, loc="upper right", fontsize="small")
    else:
        axes[0].legend(handles, legend_labels, fontsize="small")
    fig.suptitle(f"{title}\n{which}" if title else which)
    return fig


def plot_image_samples(model, data, path, **options):
    """Samples next to real images; writes `path`, see `image_samples_figure`."""
    return save_figure(image_samples_figure(model, data, **options), path)


def image_samples_figure(
    model,
    data,
    image_shape=None,
    value_range=None,
    num_images=32,
    seed=0,
    data_label="real images",
):
    """Model samples as a grid of grey images, next to real images from `data`.

    Arguments:
        model: a `FlowModel` whose events are flattened images.
        data: real images, array [N, D]; the first `num_images` are shown.
        image_shape: (height, width); by default square, sqrt(D) × sqrt(D).
        value_range: (low, high) for clipping samples and for the grey scale;
            by default the range of `data`.
        num_images: images per panel.
        seed: for `model.sample`.
        data_label: the real images' panel title ("test images", ...).
    """
    size = model.event_size
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != size:
        raise ValueError(f"data must have shape [N, {size}] to match the model, got {data.shape}.")
    image_shape = _image_shape(size) if image_shape is None else tuple(image_shape)
    if len(image_shape) != 2 or math.prod(image_shape) != size:
        raise ValueError(f"image_shape {image_shape} does not hold {size} values.")
    low, high = (
        (float(data.min()), float(data.max())) if value_range is None else map(float, value_range)
    )
    samples = _numpy(model.sample(num_images, seed=seed))
    return image_grid_figure(
        {"flow samples": samples, data_label: data[:num_images]},
        image_shape,
        (low, high),
        columns=min(8, num_images),
    )


def plot_image_grid(panels, path, image_shape=None, value_range=None, columns=8, **options):
    """Panels of flat images side by side; writes `path`, see `image_grid_figure`."""
    return save_figure(
        image_grid_figure(panels, image_shape, value_range, columns, **options), path
    )


def image_grid_figure(panels, image_shape=None, value_range=None, columns=8, row_labels=None):
    """Panels of flat images side by side, each a grid `columns` wide, framed and apart.

    Arguments:
        panels: {title: array [N, D]} of flattened images.
        image_shape: (height, width); by default square, sqrt(D) × sqrt(D).
        value_range: (low, high) of the grey scale, shared by all panels;
            values outside are clipped (overflowing pixels show as full white),
            by default the range of all the images.
        columns: images per row.
        row_labels: a label per row of images (e.g. the class of each row),
            written left of the first panel.
    """
    panels = {title: np.asarray(_numpy(images), np.float64) for title, images in panels.items()}
    if not panels or any(images.ndim != 2 or not len(images) for images in panels.values()):
        raise ValueError("panels must map titles to non-empty arrays of flat images [N, D].")
    size = next(iter(panels.values())).shape[1]
    image_shape = _image_shape(size) if image_shape is None else tuple(image_shape)
    if len(image_shape) != 2 or math.prod(image_shape) != size:
        raise ValueError(f"image_shape {image_shape} does not hold {size} values.")
    if value_range is None:
        finite = np.concatenate([i[np.isfinite(i)] for i in panels.values()])
        value_range = (float(finite.min()), float(finite.max()))
    low, high = map(float, value_range)
    rows = max(math.ceil(len(images) / columns) for images in panels.values())
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels must label all {rows} rows, got {len(row_labels)}.")
    # Height follows the mosaic's aspect ratio so the panels fill the figure.
    aspect = rows * (image_shape[0] + 1) / (columns * (image_shape[1] + 1))
    panel_width = 5.0 if columns > 4 else 3.2
    fig, axes = new_figure(
        1, len(panels), ((panel_width + 0.4) * len(panels) + 0.4, panel_width * aspect + 0.7)
    )
    fig.get_layout_engine().set(w_pad=0.12, wspace=0.06)
    cmap = colormaps["gray"].with_extremes(bad="white")
    for index, (ax, (title, images)) in enumerate(zip(axes, panels.items())):
        images = np.clip(np.nan_to_num(images, nan=np.nan, posinf=high, neginf=low), low, high)
        ax.imshow(
            _mosaic(images, image_shape, columns),
            cmap=cmap,
            vmin=low,
            vmax=high,
            interpolation="nearest",
        )
        ax.set_title(f"{title} ({len(images)})")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("0.6")
        if row_labels is not None and index == 0:
            ax.set_yticks(
                [r * (image_shape[0] + 1) + (image_shape[0] - 1) / 2 for r in range(rows)],
                [str(label) for label in row_labels],
            )
            ax.tick_params(axis="y", length=0)
    return fig


def plot_all(
    model,
    dataset,
    history,
    out_dir,
    image_shape=None,
    true_entropy=None,
    validation_label="validation",
):
    """Writes the figures that suit `dataset` into `out_dir`; returns {name: path}.

    All are drawn against the test split (the training split if the test
    split is empty), and named so. 2D data: samples.png, density.png
    (log-scale, with the test NLL) and latent.png. Image data (`image_shape`
    given, or a dataset with one, such as digits): samples.png as a grid of
    samples next to test images (digits on the dequantised range [0, 17)).
    Any other data (tabular data of 1 or 3+ columns, flat images without a
    declared shape): samples.png as a corner plot of the first
    `CORNER_MAX_DIMS` columns (see `plot_corner`). training.png if `history`
    is given, with the uniform density's NLL marked for quantised data.

    Arguments:
        model: a `FlowModel` trained on `dataset`.
        dataset: a `tfp_flows.datasets.Dataset`.
        history: `History.history` dict (or `History`), or None to skip training.png.
        out_dir: directory for the PNGs (created if missing).
        image_shape: (height, width) of flat image data; see `plot_image_samples`.
        true_entropy: the data's entropy in nats where it is known
            (`datasets.TRUE_ENTROPY` for the built-in toys), for training.png.
        validation_label: what the history's `val_loss` was measured on
            ("test", "validation (10% of train)").
    """
    if dataset.event_size != model.event_size:
        raise ValueError(
            f"dataset {dataset.name!r} has {dataset.event_size}-D events but the "
            f"model has {model.event_size}-D."
        )
    if len(dataset.test):
        data, split = dataset.test, "test"
    else:
        data, split = dataset.train, "training"
    if image_shape is None and dataset.image_shape is not None:
        image_shape = tuple(dataset.image_shape[:2])
        if dataset.image_shape[2:] not in ((), (1,)):  # colour images: no grey grid
            image_shape = None
    path = os.path.join
    paths = {}
    if model.event_size == 2:
        samples = _numpy(model.sample(min(len(data), 5000), seed=0))
        paths["samples"] = plot_samples(
            data,
            samples,
            path(out_dir, "samples.png"),
            title=f"{dataset.name}: {split} data vs flow samples",
            data_label=f"{split} data",
        )
        paths["density"] = plot_density(
            model, data, path(out_dir, "density.png"), name=dataset.name, data_label=split
        )
        paths["latent"] = plot_latent_mapping(
            model, data, path(out_dir, "latent.png"), data_label=f"{split} data"
        )
    elif image_shape is not None:
        value_range = DIGITS_VALUE_RANGE if dataset.name == "digits" else None
        if value_range is None and dataset.value_range is not None:
            value_range = (0.0, float(dataset.value_range))
        paths["samples"] = plot_image_samples(
            model,
            data,
            path(out_dir, "samples.png"),
            image_shape=image_shape,
            value_range=value_range,
            data_label=f"{split} images",
        )
    else:
        samples = _numpy(model.sample(min(len(data), 5000), seed=0))
        paths["samples"] = plot_corner(
            data,
            samples,
            path(out_dir, "samples.png"),
            labels=getattr(dataset, "columns", None),  # a data file's header, if it had one
            data_label=f"{split} data",
            title=f"{dataset.name}: {split} data vs flow samples",
        )
    if history is not None:
        references = {}
        if dataset.value_range is not None:
            references["uniform density"] = model.event_size * math.log(dataset.value_range)
        paths["training"] = plot_training_curves(
            history,
            path(out_dir, "training.png"),
            true_entropy=true_entropy,
            references=references,
            event_size=model.event_size,
            validation_label=validation_label,
        )
    return paths


# --- Helpers ---------------------------------------------------------------


def new_figure(rows, columns, size):
    """A Figure on the Agg canvas (no pyplot) and its axes as a flat list: for custom plots."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    return fig, list(axes.flat)


def save_figure(fig, path):
    """Writes `fig` as a PNG at 100 dpi, creating parent folders; returns the path."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _points(points, argument):
    points = np.asarray(_numpy(points))
    if points.ndim != 2 or points.shape[1] < 1:
        raise ValueError(f"{argument} must be an array [N, D], got shape {points.shape}.")
    if len(points) == 0:
        raise ValueError(f"{argument} is empty: there is nothing to plot.")
    return points


def _points_2d(points, argument):
    points = np.asarray(_numpy(points))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(
            f"{argument} must be 2D points of shape [N, 2], got shape "
            f"{points.shape}; use plot_corner, plot_image_samples or plot_all for other data."
        )
    if len(points) == 0:
        raise ValueError(f"{argument} is empty: there is nothing to plot.")
    return points


def _check_model_2d(model):
    if tuple(model.event_shape) != (2,):
        raise ValueError(
            f"this plot needs a model of 2D events, got event shape "
            f"{tuple(model.event_shape)}; use plot_corner, plot_image_samples or plot_all "
            "for other data."
        )


def _check_bounds(bounds):
    bounds = np.asarray(bounds, dtype=np.float64)
    if bounds.shape != (2, 2) or not np.all(bounds[:, 0] < bounds[:, 1]):
        raise ValueError(
            f"bounds must be ((x_min, x_max), (y_min, y_max)) with min < max, "
            f"got {bounds.tolist()}."
        )
    return [tuple(b) for b in bounds]


def _check_scale(scale):
    if scale not in ("log", "linear"):
        raise ValueError(f"scale must be 'log' or 'linear', got {scale!r}.")
    return scale


def _check_log_range(log_range):
    log_range = float(log_range)
    if not (np.isfinite(log_range) and log_range > 0):
        raise ValueError(f"log_range must be a positive number of nats, got {log_range}.")
    return log_range


def _check_entropy(value):
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"true_entropy must be a finite number of nats, got {value}.")
    return value


def _limits(*point_sets, margin=0.1):
    """Per-axis (low, high) over the 0.5–99.5 percentiles of all sets, plus a margin."""
    points = np.concatenate([p for p in point_sets if len(p)])
    low, high = np.percentile(points, [0.5, 99.5], axis=0)
    pad = np.maximum(margin * (high - low), 1e-3 * np.maximum(1.0, np.abs(high)))
    return [(float(lo), float(hi)) for lo, hi in zip(low - pad, high + pad)]


def _equal_aspect(limits):
    """Equal scales on both axes, unless their ranges are too unlike (different units)."""
    (x0, x1), (y0, y1) = limits
    ratio = (y1 - y0) / (x1 - x0)
    return 1.0 / MAX_EQUAL_ASPECT_RATIO <= ratio <= MAX_EQUAL_ASPECT_RATIO


def _panel_size(limits, area, equal=True):
    """(width, height) in inches of a plot area of about `area` square inches.

    With `equal` axes its shape follows the data's (clipped to 1:3 or 3:1),
    so the figure has no empty bands; otherwise it is a 5:4 rectangle.
    """
    (x0, x1), (y0, y1) = limits
    ratio = float(np.clip((x1 - x0) / (y1 - y0), 1 / 3, 3.0)) if equal else 1.25
    return math.sqrt(area * ratio), math.sqrt(area / ratio)


def _set_data_axes(ax, limits, equal=False, labels=("x1", "x2")):
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if equal:
        ax.set_aspect("equal", adjustable="box")


def _subsample(points, max_points, seed=0):
    if len(points) <= max_points:
        return points
    keep = np.random.default_rng(seed).choice(len(points), max_points, replace=False)
    return points[np.sort(keep)]


def _marker_size(n):
    return float(np.clip(4000.0 / max(n, 1), 1.5, 12.0))


def _angle(points):
    return np.arctan2(points[:, 1], points[:, 0])


def _scatter_by_angle(ax, points, angles, size):
    ax.scatter(
        points[:, 0],
        points[:, 1],
        c=angles,
        cmap=ANGLE_CMAP,
        norm=colors.Normalize(-np.pi, np.pi),
        s=size,
        linewidths=0,
        rasterized=True,
    )


def _angle_wheel(ax):
    """The key to the angle colours: a ring coloured as `_scatter_by_angle` colours angles."""
    theta = np.linspace(-np.pi, np.pi, 361)
    radius = np.array([0.55, 1.0])
    ax.pcolormesh(
        theta,
        radius,
        np.tile(0.5 * (theta[:-1] + theta[1:]), (1, 1)),
        cmap=ANGLE_CMAP,
        norm=colors.Normalize(-np.pi, np.pi),
        shading="flat",
    )
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks(np.deg2rad([0, 90, 180, 270]), ["0°", "90°", "180°", "−90°"], fontsize=8)
    ax.grid(False)
    ax.spines["polar"].set_visible(False)
    ax.set_title("angle\n(colour key)", fontsize=9)


def _batched(fn, points, chunk_size):
    return np.concatenate(
        [_numpy(fn(points[i : i + chunk_size])) for i in range(0, len(points), chunk_size)]
    )


def _nll_text(log_prob):
    """The mean NLL of `log_prob` as text, or why it has no finite value."""
    log_prob = np.asarray(log_prob, dtype=np.float64)
    nan = int(np.isnan(log_prob).sum())
    if nan:
        return f"undefined ({nan} of {len(log_prob)} points have NaN log p)"
    zero = int(np.isneginf(log_prob).sum())
    if zero:
        return f"∞ ({zero} of {len(log_prob)} points have p = 0)"
    return f"{-log_prob.mean():.3f} nats (n={len(log_prob)})"


def _log_density_on_grid(log_prob_fn, limits, grid_size, chunk_size):
    """log p on a grid_size² grid over `limits`, and how many grid points were non-finite.

    NaN becomes -inf ("no mass here", the right picture rather than a
    poisoned colour scale); +inf stays (drawn as the "bad" colour). Callers
    report the count.
    """
    grid_size = int(grid_size)
    if grid_size < 2:
        raise ValueError(f"grid_size must be at least 2, got {grid_size}.")
    xs = np.linspace(*limits[0], grid_size)
    ys = np.linspace(*limits[1], grid_size)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
    log_prob = _batched(log_prob_fn, grid, chunk_size).astype(np.float64)
    non_finite = int((~np.isfinite(log_prob)).sum())
    log_prob = np.where(np.isnan(log_prob), -np.inf, log_prob)
    return log_prob.reshape(grid_size, grid_size), non_finite


def _peak(log_densities):
    finite = [d[np.isfinite(d)] for d in log_densities]
    finite = np.concatenate(finite)
    return float(finite.max()) if len(finite) else 0.0


def _show_density(ax, log_density, limits, scale, log_range, equal, peak=None, variable="x"):
    """Draws p (linear) or log p (log) on `ax`; returns the image and its colour-bar label."""
    peak = _peak([log_density]) if peak is None else peak
    cmap = colormaps[DENSITY_CMAP].with_extremes(bad="red")
    if scale == "log":
        floor = peak - log_range
        # -inf (no mass) goes below the floor, to the saturated lowest colour; +inf stays "bad".
        values = np.where(np.isneginf(log_density), floor - 1.0, log_density)
        values = np.where(np.isposinf(values), np.nan, values)
        norm, label = colors.Normalize(floor, peak), f"log p({variable}) (nats)"
    else:
        with np.errstate(over="ignore"):
            values = np.exp(log_density)
        values = np.where(np.isinf(values), np.nan, values)  # overflow: the "bad" colour
        norm = colors.Normalize(0.0, math.exp(min(peak, 709.0)))
        label = f"p({variable})"
    image = ax.imshow(
        values,
        origin="lower",
        extent=(*limits[0], *limits[1]),
        aspect="equal" if equal else "auto",
        cmap=cmap,
        norm=norm,
        interpolation="nearest",
    )
    return image, label


def _finite_or_gap(values):
    values = np.asarray(values, dtype=np.float64).copy()
    values[~np.isfinite(values)] = np.nan  # a gap, not a broken autoscale
    return values


def _entropy_line(ax, true_entropy):
    ax.axhline(
        true_entropy,
        color=ENTROPY_COLOR,
        linestyle="--",
        linewidth=1.2,
        label=f"true entropy H = {true_entropy:.3f} nats",
    )


def _epoch_axis(ax, epochs, log_epochs):
    if log_epochs is None:
        log_epochs = epochs > LOG_EPOCHS_FROM
    ax.set_xlabel("epoch" + (" (log scale)" if log_epochs else ""))
    if log_epochs:
        ax.set_xscale("log")
        ax.set_xlim(0.9, epochs * 1.1)
        _plain_log_ticks(ax.xaxis)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)


def _plain_log_ticks(axis):
    """Ticks at 1, 2, 5 × 10^k written as plain numbers (0.05, 20), not as powers of ten."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _event_size_from_history(history):
    """D from loss / (bits_per_dim · ln 2), if the history records both consistently."""
    if "bits_per_dim" not in history:
        return None
    loss = np.asarray(history["loss"], dtype=np.float64)
    bits = np.asarray(history["bits_per_dim"], dtype=np.float64)
    if loss.shape != bits.shape:
        return None
    usable = np.isfinite(loss) & np.isfinite(bits) & (np.abs(bits) > 1e-12)
    if not usable.any():
        return None
    sizes = loss[usable] / (bits[usable] * math.log(2.0))
    size = round(float(np.median(sizes)))
    if size < 1 or not np.allclose(sizes, size, rtol=1e-3):
        return None
    return size


def _corner_columns(data, max_dims, dims, labels):
    """The columns a corner plot shows, and a sentence saying which."""
    size = data.shape[1]
    max_dims = int(max_dims)
    if max_dims < 1:
        raise ValueError(f"max_dims must be at least 1, got {max_dims}.")
    if dims is None:
        columns = list(range(min(size, max_dims)))
        if size <= max_dims:
            return columns, f"all {size} columns" if size > 1 else "the 1 column"
        return columns, f"the first {len(columns)} of {size} columns"
    if isinstance(dims, str):
        if dims != "variance":
            raise ValueError(f"dims must be None, 'variance' or column indices, got {dims!r}.")
        order = np.argsort(-np.var(data, axis=0), kind="stable")[:max_dims]
        columns = sorted(int(c) for c in order)
        if size <= max_dims:
            return columns, f"all {size} columns"
        names = ", ".join(labels[c] for c in columns)
        return columns, f"the {len(columns)} highest-variance of {size} columns: {names}"
    columns = [int(c) for c in dims]
    if not columns or len(set(columns)) != len(columns) or not all(0 <= c < size for c in columns):
        raise ValueError(f"dims must be distinct column indices in [0, {size}), got {list(dims)}.")
    if len(columns) > max_dims:
        raise ValueError(f"dims has {len(columns)} columns, more than max_dims={max_dims}.")
    names = ", ".join(labels[c] for c in columns)
    return columns, f"{len(columns)} of {size} columns: {names}"


def _mass_contours(ax, x, y, x_limits, y_limits, bins, color, style, masses=(0.9, 0.5)):
    """Contours of a lightly smoothed 2-D histogram that enclose the given fractions of mass."""
    counts, x_edges, y_edges = np.histogram2d(x, y, bins=bins, range=[x_limits, y_limits])
    kernel = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    kernel /= kernel.sum()
    smooth = np.apply_along_axis(np.convolve, 0, counts, kernel, mode="same")
    smooth = np.apply_along_axis(np.convolve, 1, smooth, kernel, mode="same")
    if smooth.sum() <= 0:
        return
    flat = np.sort(smooth.ravel())[::-1]
    cumulative = np.cumsum(flat) / flat.sum()
    levels = sorted(
        {float(flat[min(np.searchsorted(cumulative, m), len(flat) - 1)]) for m in masses}
    )
    levels = [level for level in levels if level > 0]
    if not levels:
        return
    centres_x = 0.5 * (x_edges[:-1] + x_edges[1:])
    centres_y = 0.5 * (y_edges[:-1] + y_edges[1:])
    ax.contour(
        centres_x, centres_y, smooth.T, levels, colors=color, linestyles=style, linewidths=1.0
    )


def _image_shape(size, strict=True):
    side = math.isqrt(size)
    if side * side == size and side > 1:
        return side, side
    if strict:
        raise ValueError(f"{size} values are not a square image: pass image_shape.")
    return None


def _mosaic(images, image_shape, columns, gap=1):
    """Tiles images into one array, NaN between them (drawn as the colormap's 'bad' colour)."""
    height, width = image_shape
    rows = math.ceil(len(images) / columns)
    mosaic = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        mosaic[
            r * (height + gap) : r * (height + gap) + height,
            c * (width + gap) : c * (width + gap) + width,
        ] = image.reshape(height, width)
    return mosaic
