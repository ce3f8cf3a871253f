"""One figure per few samples: the image, its K class saliency maps and its class graph."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize

from gestalt_al.ranking import edge_weights

MAPS_PER_ROW = 7


def explain_figure(
    path: str | Path,
    images: np.ndarray,
    maps: np.ndarray,
    latents: np.ndarray,
    class_names: Sequence[str],
    titles: Sequence[str],
    signed_maps: bool,
) -> None:
    """``images [n, H, W]``, ``maps [n, K, H, W]``, ``latents [n, K, D]`` -> one PNG.

    Signed maps (Deep Taylor relevance) use a diverging colormap centred on 0 (red for
    evidence for the class, blue against); unsigned ones (Grad-CAM, gradient) a sequential one.
    Each map is scaled on its own (to its 99th percentile of |value|), since relevance sums
    to that class's logit.
    """
    n, k = maps.shape[:2]
    if not (len(images) == len(latents) == len(titles) == n and len(class_names) == k):
        raise ValueError("images, maps, latents, titles and class names must agree in count")
    map_rows = -(-k // MAPS_PER_ROW)
    figure = plt.figure(figsize=(3.2 + 1.45 * MAPS_PER_ROW + 4.6, 1.75 * map_rows * n + 0.4))
    grid = figure.add_gridspec(
        map_rows * n, MAPS_PER_ROW + 2, width_ratios=[2.2] + [1] * MAPS_PER_ROW + [3.2]
    )
    for row in range(n):
        top = row * map_rows
        image_axes = figure.add_subplot(grid[top : top + map_rows, 0])
        image_axes.imshow(images[row], cmap="gray")
        image_axes.set_title(titles[row], fontsize=9)
        image_axes.axis("off")
        for c in range(k):
            axes = figure.add_subplot(grid[top + c // MAPS_PER_ROW, 1 + c % MAPS_PER_ROW])
            _draw_map(axes, maps[row, c], signed_maps)
            axes.set_title(class_names[c], fontsize=7)
        graph_axes = figure.add_subplot(grid[top : top + map_rows, MAPS_PER_ROW + 1])
        _draw_graph(graph_axes, latents[row], class_names)
    figure.tight_layout()
    figure.savefig(Path(path), dpi=110)
    plt.close(figure)


def _draw_map(axes: Axes, saliency: np.ndarray, signed: bool) -> None:
    # A few border pixels can hold outsized relevance; scaling to the 99th percentile keeps
    # the rest of the map visible (the outliers saturate).
    peak = float(np.percentile(np.abs(saliency), 99)) or float(np.abs(saliency).max()) or 1.0
    if signed:
        axes.imshow(saliency, cmap="bwr", vmin=-peak, vmax=peak)
    else:
        axes.imshow(saliency, cmap="inferno", vmin=0, vmax=peak)
    axes.axis("off")


def _draw_graph(axes: Axes, latents: np.ndarray, class_names: Sequence[str]) -> None:
    """Classes on a circle, edges = cosine similarity of their latents (Eq. 1).

    Cosines within one sample often span a narrow band, so colour, width and opacity use
    that sample's own range (colour bar in cosine units): the strongest ties stand out and
    are drawn last. Node colour is the node weight (Eq. 2, the sum of its edges).
    """
    weights = edge_weights(latents[None])[0]
    k = len(class_names)
    angles = np.pi / 2 - 2 * np.pi * np.arange(k) / k
    xy = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pairs = sorted(((i, j) for i in range(k) for j in range(i + 1, k)), key=lambda p: weights[p])
    values = np.array([weights[p] for p in pairs])
    scale = Normalize(float(values.min()), float(values.max()) + 1e-12)
    edge_colour = colormaps["viridis"]
    for (i, j), w in zip(pairs, values, strict=True):
        strength = float(scale(w))
        axes.plot(
            *xy[[i, j]].T,
            color=edge_colour(strength),
            lw=0.3 + 1.8 * strength**2,
            alpha=0.1 + 0.6 * strength**2,
        )
    node_weight = weights.sum(axis=1)
    nodes = axes.scatter(
        xy[:, 0], xy[:, 1], s=70, c=node_weight, cmap="magma", zorder=3, edgecolors="black"
    )
    for (x, y), name in zip(xy, class_names, strict=True):
        axes.annotate(
            name, (x, y), xytext=(1.22 * x, 1.14 * y), ha="center", va="center", fontsize=7
        )
    axes.set_xlim(-1.6, 1.6)
    axes.set_ylim(-1.35, 1.35)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_title("class graph (edges: cosine of latents)", fontsize=8)
    edge_bar = plt.colorbar(
        plt.cm.ScalarMappable(norm=scale, cmap=edge_colour), ax=axes, fraction=0.04, pad=0.0
    )
    edge_bar.set_label("edge cosine", fontsize=6)
    edge_bar.ax.tick_params(labelsize=6)
    node_bar = plt.colorbar(nodes, ax=axes, fraction=0.04, pad=0.02, location="left")
    node_bar.set_label("node weight", fontsize=6)
    node_bar.ax.tick_params(labelsize=6)
