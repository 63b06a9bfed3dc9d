"""PNG grids of attention maps (matplotlib, headless).

Every figure is saved with the arrays it draws: ``NAME.png`` and ``NAME.npz`` (keys ``map0``,
``map1``, ... in reading order, and ``titles``), so what a picture shows can be checked or
re-plotted. Sizes are fixed: a grid of ``rows x cols`` panels is
``max(cols, MIN_COLS) * PANEL_PX`` by ``rows * PANEL_PX + TITLE_PX`` pixels.
"""
import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use('Agg')  # headless: the tools run on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PANEL_PX = 240
TITLE_PX = 72  # two lines of title and the line that says what lies under the maps
PANEL_TITLE_CHARS = 36  # longer panel titles wrap instead of spilling past the panel
MIN_COLS = 2  # room for the title
DPI = 100


@dataclass
class Panel:
    """One map of a grid.

    Args:
        title (str): Panel title.
        array (ndarray): (h, w) map, drawn over ``extent`` of the image.
        extent (tuple, optional): (width, height) in image pixels that the map covers from the
            top-left corner (token maps: grid size times stride); default the whole image.
        diverging (bool): Signed values: a symmetric blue-red colour scale.
        vmin, vmax (float, optional): Colour scale limits; default the map's range.
    """
    title: str
    array: np.ndarray
    extent: tuple = None
    diverging: bool = False
    vmin: float = None
    vmax: float = None


def figure_size(rows, cols):
    """(width, height) in pixels of a grid of ``rows x cols`` panels."""
    return max(cols, MIN_COLS) * PANEL_PX, rows * PANEL_PX + TITLE_PX


def _new_figure(rows, cols, title, note=None):
    width, height = figure_size(rows, cols)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    text = textwrap.fill(title, width // 7)
    fig.suptitle(text + (f'\n{note}' if note else ''), fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.92, bottom=0.02, top=1 - TITLE_PX / height,
                        wspace=0.45, hspace=0.35)
    return fig


def _save(fig, path, arrays, titles):
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    np.savez_compressed(path[:-len('.png')] + '.npz', titles=np.array(titles),
                        **{f'map{i}': a for i, a in enumerate(arrays)})


def draw_grid(path, image, rows, title, marker=None):
    """Draw rows of :class:`Panel` over ``image`` and save ``path`` (.png) and its .npz.

    Args:
        path (str): Output file, ending in ``.png``.
        image (ndarray): (H, W, 3) uint8 RGB, shown under every map.
        rows (list[list[Panel]]): Panels per row; shorter rows leave empty cells.
        title (str): Figure title.
        marker (tuple, optional): (x, y) image pixel marked with a cross (the query).

    Returns:
        list[ndarray]: The drawn arrays, in reading order (as saved in the .npz).
    """
    if not path.endswith('.png'):
        raise ValueError(f'draw_grid writes PNG files; got "{path}".')
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    # the maps are translucent: without this line the input image reads as part of the map
    note = 'maps drawn over the input image' + ('; + marks the query' if marker is not None else '')
    fig = _new_figure(n_rows, n_cols, title, note)
    height, width = image.shape[:2]
    arrays, titles = [], []
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = fig.add_subplot(n_rows, n_cols, i * n_cols + j + 1)
            ax.axis('off')
            if j >= len(row):
                continue
            panel = row[j]
            array = np.asarray(panel.array, dtype=np.float32)
            ext_w, ext_h = panel.extent or (width, height)
            vmin, vmax = panel.vmin, panel.vmax
            if panel.diverging and vmin is None and vmax is None:
                vmax = float(np.abs(array).max()) or 1.0
                vmin = -vmax
            ax.imshow(image, extent=(0, width, height, 0))
            im = ax.imshow(array, extent=(0, ext_w, ext_h, 0), alpha=0.65, vmin=vmin, vmax=vmax,
                           cmap='coolwarm' if panel.diverging else 'viridis',
                           interpolation='nearest')
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            if marker is not None:
                ax.plot(*marker, marker='+', color='red', markersize=9, markeredgewidth=2)
            ax.set_title(textwrap.fill(panel.title, PANEL_TITLE_CHARS), fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, format='%.3g').ax.tick_params(
                labelsize=6)
            arrays.append(array)
            titles.append(panel.title)
    _save(fig, path, arrays, titles)
    return arrays


def draw_curves(path, curves, title, xlabel):
    """Line plot of ``curves`` (name -> (xs, values)); saves ``path`` (.png) and its .npz
    (one (2, n) array ``[xs, values]`` per curve). Returns the arrays. Size: 1 x 2 panels."""
    fig = _new_figure(1, 2, title)
    ax = fig.add_axes((0.1, 0.15, 0.85, 0.65))
    arrays, titles = [], []
    for name, (xs, values) in curves.items():
        array = np.asarray([xs, values], dtype=np.float32)
        ax.plot(array[0], array[1], marker='o', label=name)
        arrays.append(array)
        titles.append(name)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path, arrays, titles)
    return arrays
