"""Figures: tri-planar views of a case with its DRRs and lung mask.

All arrays follow the bundle's axis convention (``(D, H, W)`` = superior->inferior,
anterior->posterior, right->left), so slices are shown the radiological way: axial with anterior
up and the patient's right on the image's left, coronal as seen from the front, sagittal as seen
from the patient's left.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from duolift_bundle.constants import VIEWS
from duolift_bundle.errors import DuoLiftError, ShapeError
from duolift_bundle.io_utils import atomic_path

__all__ = ["tri_planar", "case_figure", "case_figures", "comparison_figure", "inference_figure", "FigureExistsError"]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def tri_planar(volume, index: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axial, coronal and sagittal slices of a ``(D, H, W)`` (or ``(1, D, H, W)``) volume.

    ``index`` = ``(z, y, x)`` slice positions; the centre by default.
    """
    v = _np(volume)
    if v.ndim == 4:
        v = v[0]
    if v.ndim != 3:
        raise ShapeError(f"tri_planar expects a 3D volume, got shape {v.shape}")
    z, y, x = index if index is not None else (s // 2 for s in v.shape)
    return v[z], v[:, y], v[:, :, x]


def _save(fig, path: str | os.PathLike, title: str = "") -> str:
    """Title, tight layout, atomic PNG write, close."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return str(path)


def case_figure(
    ct,
    path: str | os.PathLike,
    xray=None,
    lung_mask=None,
    title: str = "",
    index: Sequence[int] | None = None,
) -> str:
    """Write a PNG: axial / coronal / sagittal CT slices (lung mask outlined in red) and the
    frontal / lateral DRRs. Returns the path written (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = tri_planar(ct, index)
    masks = tri_planar(lung_mask, index) if lung_mask is not None else (None, None, None)
    xr = _np(xray) if xray is not None else np.zeros((0, 1, 1))
    n_cols = 3 + xr.shape[0]
    fig, axes = plt.subplots(1, n_cols, figsize=(3.2 * n_cols, 3.6))
    names = ("axial", "coronal", "sagittal")
    for ax, img, m, name in zip(axes[:3], views, masks, names):
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if m is not None and np.any(m):
            ax.contour(m.astype(float), levels=[0.5], colors="r", linewidths=0.8)
        ax.set_title(name)
        ax.axis("off")
    for i, ax in enumerate(axes[3:]):
        ax.imshow(xr[i], cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title("frontal DRR" if i == 0 else "lateral DRR")
        ax.axis("off")
    return _save(fig, path, title)


class FigureExistsError(DuoLiftError, FileExistsError):
    """A figure would replace a file of the same name."""


def case_figures(dataset, folder: str | os.PathLike, overwrite: bool = False) -> list[str]:
    """:func:`case_figure` of every item of a dataset in the data contract (``ct``, ``xray``,
    ``lung_mask``, ``case``) as ``<folder>/<case>.png``: ``run preparing`` of ``train.yaml``.

    Raises:
        FigureExistsError: a ``<case>.png`` exists and ``overwrite`` is False; checked for every
            case the dataset lists (``dataset.data[i]["case"]``) before anything is drawn, else
            before each figure.
    """
    folder = os.fspath(folder)

    def refuse(cases: Sequence[str]) -> None:
        taken = [os.path.join(folder, f"{c}.png") for c in cases if os.path.exists(os.path.join(folder, f"{c}.png"))]
        if taken and not overwrite:
            shown = ", ".join(taken[:3]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
            raise FigureExistsError(
                f"{shown}: exists; give another --figure_dir, or --overwrite_figures True to replace"
            )

    listed = getattr(dataset, "data", None)
    if isinstance(listed, Sequence) and all(isinstance(d, Mapping) and "case" in d for d in listed):
        refuse([str(d["case"]) for d in listed])
    written = []
    for d in dataset:
        refuse([str(d["case"])])
        written.append(
            case_figure(
                d["ct"], os.path.join(folder, f"{d['case']}.png"), d["xray"], d["lung_mask"], title=str(d["case"])
            )
        )
    return written


def comparison_figure(
    target,
    reconstructions: Mapping[str, object],
    path: str | os.PathLike,
    title: str = "",
    index: Sequence[int] | None = None,
) -> str:
    """Write a PNG laid out like the paper's Figure 2: rows axial / coronal / sagittal; columns the
    target, each reconstruction and the absolute difference |reconstruction - target| of each
    (volumes ``(1, D, H, W)`` or ``(D, H, W)`` in [0, 1]). Returns the path written (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = _np(target)
    columns = [("target", tri_planar(t, index), "gray", 1.0)]
    for name, vol in reconstructions.items():
        columns.append((name, tri_planar(vol, index), "gray", 1.0))
    for name, vol in reconstructions.items():
        columns.append((f"|{name} - target|", tri_planar(np.abs(_np(vol) - t), index), "magma", 0.5))
    fig, axes = plt.subplots(3, len(columns), figsize=(2.8 * len(columns), 8.4), squeeze=False)
    for c, (name, planes, cmap, vmax) in enumerate(columns):
        for r, (img, plane) in enumerate(zip(planes, ("axial", "coronal", "sagittal"))):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(plane)
    return _save(fig, path, title)


def inference_figure(
    xray, reprojection, volume, path: str | os.PathLike, title: str = "", lung_fields: Sequence | None = None
) -> str:
    """Write a PNG of one inference case: top row, each input X-ray as the network saw it ``(V,
    S, S)`` beside the re-projection of the reconstruction (lung fields of the input outlined in
    red when given, ``(V, S, S)`` booleans); bottom row, axial / coronal / sagittal slices of the
    reconstruction ``(1, D, H, W)`` in [0, 1]. Returns the path written (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xr, rp = _np(xray), _np(reprojection)
    names = VIEWS[: xr.shape[0]]
    n_cols = max(3, 2 * xr.shape[0])
    fig, axes = plt.subplots(2, n_cols, figsize=(2.8 * n_cols, 6.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, name in enumerate(names):
        for j, (img, what) in enumerate(((xr[i], "input"), (rp[i], "re-projection"))):
            ax = axes[0, 2 * i + j]
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if lung_fields is not None and np.any(lung_fields[i]):
                ax.contour(np.asarray(lung_fields[i], float), levels=[0.5], colors="r", linewidths=0.8)
            ax.set_title(f"{name} {what}", fontsize=9)
    for ax, img, name in zip(axes[1], tri_planar(volume), ("axial", "coronal", "sagittal")):
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"reconstruction, {name}", fontsize=9)
    return _save(fig, path, title)
