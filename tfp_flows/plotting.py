"""Figures for trained flows: samples, density, the data ↔ latent mapping, training curves.

Each function draws on its own `matplotlib.figure.Figure` with the Agg canvas
and writes a PNG, so nothing here touches pyplot or the user's backend, and
figures are freed with their last reference (no `plt.close` bookkeeping).
Each returns the path it wrote (a `str`), creating parent directories.

`plot_samples`, `plot_density` and `plot_latent_mapping` are for 2D data and
raise a ValueError otherwise; `plot_image_samples` shows flat image vectors
(e.g. 8×8 digits) as a grid; `plot_all` picks the right set for a dataset.

Example:
    >>> from tfp_flows import datasets, flows, plotting
    >>> data = datasets.load("moons", num_train=500, num_test=200)
    >>> model = flows.realnvp(2, num_layers=2)
    >>> paths = plotting.plot_all(model, data, None, "/tmp/moons_plots")  # doctest: +SKIP
"""

import math
import os
import warnings

import numpy as np
from matplotlib import colormaps, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

DATA_COLOR = "tab:blue"
SAMPLE_COLOR = "tab:orange"
ANGLE_CMAP = "hsv"  # cyclic, with clearly distinct hues, so each angle keeps its colour
DIGITS_VALUE_RANGE = (0.0, 17.0)


# --- 2D figures ------------------------------------------------------------


def plot_samples(data, samples, path, title=None, max_points=5000):
    """Side-by-side scatter of data and model samples, on the same axis limits.

    Limits cover all sets (0.5–99.5 percentiles plus a margin), so samples
    that spread wider than the data show as such; non-finite samples are
    dropped and counted in the panel title.

    Arguments:
        data: array [N, 2].
        samples: array [M, 2], or {label: array [M, 2]} to compare several
            models, one panel each.
        path: PNG file to write.
        title: optional figure title.
        max_points: each panel shows at most this many points (a fixed random subset).
    """
    data = _subsample(_points_2d(data, "data"), max_points)
    if not isinstance(samples, dict):
        samples = {"model samples": samples}
    panels = [("data", data, DATA_COLOR, 0)]
    for label, points in samples.items():
        points = _points_2d(points, f"samples {label!r}")
        finite = np.isfinite(points).all(axis=1)
        panels.append(
            (label, _subsample(points[finite], max_points), SAMPLE_COLOR, int((~finite).sum()))
        )
    limits = _limits(*[points for _, points, _, _ in panels])

    fig, axes = new_figure(1, len(panels), (5 * len(panels), 4.6))
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
        _set_data_axes(ax, limits)
        extra = f", {dropped} non-finite dropped" if dropped else ""
        ax.set_title(f"{label} (n={len(points)}{extra})")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_loss_comparison(histories, path, key="loss", ylabel="NLL (nats)"):
    """One curve per run: {label: Keras History (or its .history dict)} → `key` per epoch."""
    if not histories:
        raise ValueError("histories is empty: there is nothing to plot.")
    fig, (ax,) = new_figure(1, 1, (6.4, 4.2))
    for label, history in histories.items():
        history = getattr(history, "history", history)
        if key not in history:
            raise ValueError(f"history {label!r} has no {key!r}; it has {sorted(history)}.")
        values = np.asarray(history[key], dtype=np.float64)
        values[~np.isfinite(values)] = np.nan
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_density(model, data, path, grid_size=200, bounds=None, show_data=True, chunk_size=16384):
    """The learned density exp(log p(x)) on a grid, with the data overlaid faintly.

    Arguments:
        model: a `FlowModel` over 2D events.
        data: array [N, 2]; sets the default bounds and is overlaid if `show_data`.
        path: PNG file to write.
        grid_size: points per axis.
        bounds: ((x_min, x_max), (y_min, y_max)); by default the data's
            0.5–99.5 percentiles plus a 10 % margin.
        show_data: overlay the data as small translucent points.
        chunk_size: grid points per `log_prob` call, to bound memory.

    Grid points where log p is -inf or NaN are drawn as density 0, and +inf
    (overflow) as the colormap's "bad" colour; the title counts them.
    """
    _check_model_2d(model)
    data = _points_2d(data, "data")
    limits = _limits(data) if bounds is None else _check_bounds(bounds)

    density, non_finite = _density_on_grid(model.log_prob, limits, grid_size, chunk_size)
    fig, (ax,) = new_figure(1, 1, (6.4, 5.2))
    image = _show_density(ax, density, limits)
    fig.colorbar(image, ax=ax, label="p(x)")
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
    _set_data_axes(ax, limits)
    title = "learned density"
    if non_finite:
        title += f" ({non_finite} grid points with non-finite log p)"
    ax.set_title(title)
    return save_figure(fig, path)


def plot_log_densities(rows, path, bounds, grid_size=150, chunk_size=16384):
    """A grid of 2D densities side by side, e.g. an exact density next to learned ones.

    Arguments:
        rows: a list of rows, each a list of (title, log_prob_fn) panels; a
            log_prob_fn maps float32 points [N, 2] to log p [N] (a model's
            `log_prob`, a TFP distribution's, or an unnormalised target).
            Panels in a row share one colour scale, so they compare directly.
        path: PNG file to write.
        bounds: ((x_min, x_max), (y_min, y_max)) of every panel.
        grid_size: points per axis.
    """
    limits = _check_bounds(bounds)
    rows = [list(row) for row in rows]
    if not rows or not all(rows):
        raise ValueError("rows must be a non-empty list of non-empty lists of panels.")
    columns = max(len(row) for row in rows)
    fig, axes = new_figure(len(rows), columns, (3.0 * columns, 2.8 * len(rows)))
    for r, row in enumerate(rows):
        densities = []
        for title, log_prob_fn in row:
            density, non_finite = _density_on_grid(log_prob_fn, limits, grid_size, chunk_size)
            if non_finite:
                title += f" ({non_finite} non-finite)"
            densities.append((title, density))
        vmax = max(float(np.nanmax(d)) for _, d in densities)
        for c in range(columns):
            ax = axes[r * columns + c]
            if c >= len(densities):
                ax.set_axis_off()
                continue
            title, density = densities[c]
            _show_density(ax, density, limits, vmax=vmax)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path)


def _density_on_grid(log_prob_fn, limits, grid_size, chunk_size):
    """exp(log p) on a grid_size² grid over `limits`, and how many grid points were non-finite.

    exp(-inf) = 0 is the right picture for "no mass here"; NaN gets the same
    treatment rather than poisoning the colour scale, and +inf becomes NaN
    (the colormap's "bad" colour). Callers report the count.
    """
    grid_size = int(grid_size)
    if grid_size < 2:
        raise ValueError(f"grid_size must be at least 2, got {grid_size}.")
    xs = np.linspace(*limits[0], grid_size)
    ys = np.linspace(*limits[1], grid_size)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
    log_prob = _batched(log_prob_fn, grid, chunk_size).astype(np.float64)
    non_finite = int((~np.isfinite(log_prob)).sum())
    density = np.exp(np.where(np.isnan(log_prob), -np.inf, log_prob))
    density[~np.isfinite(density)] = np.nan
    return density.reshape(grid_size, grid_size), non_finite


def _show_density(ax, density, limits, vmax=None):
    return ax.imshow(
        density,
        origin="lower",
        extent=(*limits[0], *limits[1]),
        aspect="auto",
        cmap=colormaps["viridis"].with_extremes(bad="red"),
        interpolation="nearest",
        vmin=0.0,
        vmax=vmax,
    )


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


def plot_latent_mapping(model, data, path, num_points=2000, seed=0):
    """How the flow maps data to the standard normal base, and back.

    Left: data coloured by its angle around the data's centre (in
    standardised coordinates). Middle: the same points mapped to latent space
    by `model.inverse`, same colours, with the base's 1σ and 2σ circles; a
    good flow turns the data into a round, centred cloud. Right: z ~ N(0, I)
    mapped to data space by `model.forward`, coloured by their latent angle.
    Both data-space panels show the images of the 1σ/2σ circles (dashed).

    `inverse` is closed-form for coupling and radial flows but numerical
    (root finding) for planar flows, so it is slower there.

    Arguments:
        model: a `FlowModel` over 2D events with a standard normal base.
        data: array [N, 2].
        path: PNG file to write.
        num_points: at most this many data points and latent samples.
        seed: for the data subset and the latent samples.
    """
    _check_model_2d(model)
    data = _subsample(_points_2d(data, "data"), num_points, seed)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num_points, 2)).astype(np.float32)

    centre, scale = np.median(data, axis=0), data.std(axis=0) + 1e-12
    data_angle = _angle((data - centre) / scale)
    latent = _numpy(model.inverse(data))
    pushed = _numpy(model.forward(z))
    theta = np.linspace(0.0, 2.0 * np.pi, 361)
    unit_circle = np.stack([np.cos(theta), np.sin(theta)], axis=1).astype(np.float32)
    circle_images = {r: _numpy(model.forward(r * unit_circle)) for r in (1.0, 2.0)}

    ok_latent = np.isfinite(latent).all(axis=1)
    ok_pushed = np.isfinite(pushed).all(axis=1)
    limits = _limits(data, pushed[ok_pushed])
    size = _marker_size(num_points)

    fig, (data_ax, latent_ax, pushed_ax) = new_figure(1, 3, (15, 5))
    _scatter_by_angle(data_ax, data, data_angle, size)
    data_ax.set_title("data, coloured by angle")

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
                label=f"{radius:.0f}σ of N(0, I)",
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
    title = "data mapped to latent space (inverse)"
    if not ok_latent.all():
        title += f"\n{int((~ok_latent).sum())} non-finite dropped"
    latent_ax.set_title(title)

    _scatter_by_angle(pushed_ax, pushed[ok_pushed], _angle(z[ok_pushed]), size)
    pushed_ax.set_title("z ~ N(0, I) mapped to data space (forward),\ncoloured by latent angle")

    for ax in (data_ax, pushed_ax):
        for radius, style in [(1.0, "-"), (2.0, "--")]:
            image = circle_images[radius]
            ax.plot(
                image[:, 0],
                image[:, 1],
                color="black",
                linestyle=style,
                linewidth=1.0,
                label=f"image of {radius:.0f}σ circle",
            )
        _set_data_axes(ax, limits)
    data_ax.legend(loc="upper right", fontsize="small")
    return save_figure(fig, path)


# --- Any dimension ---------------------------------------------------------


def plot_training_curves(history, path):
    """Loss (and val_loss) per epoch, and bits/dim (and val_bits_per_dim) if recorded.

    Arguments:
        history: a dict like Keras' `History.history` (a `History` also works),
            with at least `loss`; other keys (learning rate, ...) are ignored.
        path: PNG file to write.
    """
    history = getattr(history, "history", history)
    if not isinstance(history, dict) or "loss" not in history:
        keys = sorted(history) if isinstance(history, dict) else type(history).__name__
        raise ValueError(f"history must be a dict with a 'loss' list, got {keys}.")
    if len(history["loss"]) == 0:
        raise ValueError("history['loss'] is empty: there is nothing to plot.")
    panels = [(("loss", "val_loss"), "NLL (nats)", "negative log-likelihood")]
    if "bits_per_dim" in history or "val_bits_per_dim" in history:
        panels.append((("bits_per_dim", "val_bits_per_dim"), "bits/dim", "bits per dimension"))

    fig, axes = new_figure(1, len(panels), (5.5 * len(panels), 4.2))
    for ax, (keys, ylabel, title) in zip(axes, panels):
        for key, name in zip(keys, ("train", "validation")):
            if key not in history:
                continue
            values = np.asarray(history[key], dtype=np.float64)
            values[~np.isfinite(values)] = np.nan  # a gap, not a broken autoscale
            epochs = np.arange(1, len(values) + 1)
            ax.plot(
                epochs,
                values,
                marker="o" if len(values) <= 30 else None,
                markersize=3,
                label=f"{name} ({key})",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    return save_figure(fig, path)


def plot_image_samples(
    model, data, path, image_shape=None, value_range=None, num_images=32, seed=0
):
    """Model samples as a grid of grey images, next to real images from `data`.

    Arguments:
        model: a `FlowModel` whose events are flattened images.
        data: real images, array [N, D]; the first `num_images` are shown.
        path: PNG file to write.
        image_shape: (height, width); by default square, sqrt(D) × sqrt(D).
        value_range: (low, high) for clipping samples and for the grey scale;
            by default the range of `data`.
        num_images: images per panel.
        seed: for `model.sample`.
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
    return plot_image_grid(
        {"model samples": samples, "real images": data[:num_images]},
        path,
        image_shape,
        (low, high),
        columns=min(8, num_images),
    )


def plot_image_grid(panels, path, image_shape=None, value_range=None, columns=8):
    """Panels of flat images side by side, each a grid `columns` wide.

    Arguments:
        panels: {title: array [N, D]} of flattened images.
        path: PNG file to write.
        image_shape: (height, width); by default square, sqrt(D) × sqrt(D).
        value_range: (low, high) of the grey scale, shared by all panels;
            values outside are clipped (overflowing pixels show as full white),
            by default the range of all the images.
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
    # Height follows the mosaic's aspect ratio so the panels fill the figure.
    aspect = rows * (image_shape[0] + 1) / (columns * (image_shape[1] + 1))
    fig, axes = new_figure(1, len(panels), (5.5 * len(panels), 5.3 * aspect + 0.6))
    cmap = colormaps["gray"].with_extremes(bad="white")
    for ax, (title, images) in zip(axes, panels.items()):
        images = np.clip(np.nan_to_num(images, nan=np.nan, posinf=high, neginf=low), low, high)
        ax.imshow(
            _mosaic(images, image_shape, columns),
            cmap=cmap,
            vmin=low,
            vmax=high,
            interpolation="nearest",
        )
        ax.set_title(f"{title} ({len(images)})")
        ax.set_axis_off()
    return save_figure(fig, path)


def plot_all(model, dataset, history, out_dir, image_shape=None):
    """Writes the figures that suit `dataset` into `out_dir`; returns {name: path}.

    2D data: samples.png, density.png, latent.png (and training.png if
    `history` is given), drawn against the test split. Other sizes:
    training.png and samples.png as an image grid of samples next to test
    images (digits use the dequantised range [0, 17)); when the size is not
    a square and no `image_shape` is given, the image grid is skipped with a
    warning.

    Arguments:
        model: a `FlowModel` trained on `dataset`.
        dataset: a `tfp_flows.datasets.Dataset`.
        history: `History.history` dict (or `History`), or None to skip training.png.
        out_dir: directory for the PNGs (created if missing).
        image_shape: (height, width) for non-2D data; see `plot_image_samples`.
    """
    data = dataset.test if len(dataset.test) else dataset.train
    if dataset.event_size != model.event_size:
        raise ValueError(
            f"dataset {dataset.name!r} has {dataset.event_size}-D events but the "
            f"model has {model.event_size}-D."
        )
    paths = {}
    if model.event_size == 2:
        samples = _numpy(model.sample(min(len(data), 5000), seed=0))
        paths["samples"] = plot_samples(
            data,
            samples,
            os.path.join(out_dir, "samples.png"),
            title=f"{dataset.name}: data vs flow samples",
        )
        paths["density"] = plot_density(model, data, os.path.join(out_dir, "density.png"))
        paths["latent"] = plot_latent_mapping(model, data, os.path.join(out_dir, "latent.png"))
    elif image_shape is not None or _image_shape(model.event_size, strict=False):
        value_range = DIGITS_VALUE_RANGE if dataset.name == "digits" else None
        paths["samples"] = plot_image_samples(
            model,
            data,
            os.path.join(out_dir, "samples.png"),
            image_shape=image_shape,
            value_range=value_range,
        )
    else:
        warnings.warn(
            f"{dataset.name!r} has {model.event_size}-D events, which are neither "
            "2D nor square images: skipping samples.png (pass image_shape).",
            stacklevel=2,
        )
    if history is not None:
        paths["training"] = plot_training_curves(history, os.path.join(out_dir, "training.png"))
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


def _points_2d(points, argument):
    points = np.asarray(_numpy(points))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(
            f"{argument} must be 2D points of shape [N, 2], got shape "
            f"{points.shape}; use plot_image_samples or plot_all for other data."
        )
    if len(points) == 0:
        raise ValueError(f"{argument} is empty: there is nothing to plot.")
    return points


def _check_model_2d(model):
    if tuple(model.event_shape) != (2,):
        raise ValueError(
            f"this plot needs a model of 2D events, got event shape "
            f"{tuple(model.event_shape)}; use plot_image_samples or plot_all "
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


def _limits(*point_sets, margin=0.1):
    """Per-axis (low, high) over the 0.5–99.5 percentiles of all sets, plus a margin."""
    points = np.concatenate([p for p in point_sets if len(p)])
    low, high = np.percentile(points, [0.5, 99.5], axis=0)
    pad = np.maximum(margin * (high - low), 1e-3 * np.maximum(1.0, np.abs(high)))
    return [(float(lo), float(hi)) for lo, hi in zip(low - pad, high + pad)]


def _set_data_axes(ax, limits):
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")


def _subsample(points, max_points, seed=0):
    if len(points) <= max_points:
        return points
    keep = np.random.default_rng(seed).choice(len(points), max_points, replace=False)
    return points[np.sort(keep)]


def _marker_size(n):
    return float(np.clip(4000.0 / max(n, 1), 1.5, 12.0))


def _angle(points):
    return np.arctan2(points[:, 1], points[:, 0])


def _batched(fn, points, chunk_size):
    return np.concatenate(
        [_numpy(fn(points[i : i + chunk_size])) for i in range(0, len(points), chunk_size)]
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
