"""Report figures (SVG) drawn with matplotlib: registration, uptake window, harmonization."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402

VIEWS = ("sagittal", "coronal", "axial")


def _canonical(path) -> tuple[np.ndarray, tuple[float, ...]]:
    img = nb.as_closest_canonical(nb.load(path))
    return np.asarray(img.dataobj, dtype=np.float32), img.header.get_zooms()[:3]


def _slices(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    x, y, z = centre
    return [volume[x, :, :].T, volume[:, y, :].T, volume[:, :, z].T]


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    idx = np.argwhere(mask > 0)
    if idx.size == 0:
        return tuple(s // 2 for s in mask.shape)
    return tuple(int(v) for v in idx.mean(0).round())


def _robust(volume: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    values = volume[mask > 0] if mask is not None and mask.any() else volume[volume != 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def plot_overlay(background, overlay, out_file, *, contour=None, title="", overlay_alpha=0.5):
    """Background in grey, overlay in colour (when given), contour lines of a mask."""
    bg, zooms = _canonical(background)
    ov = _canonical(overlay)[0] if overlay else None
    ct = _canonical(contour)[0] if contour else None
    centre = _centre(ct if ct is not None else bg > np.percentile(bg, 60))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    vmin, vmax = _robust(bg)
    aspects = [zooms[2] / zooms[1], zooms[2] / zooms[0], zooms[1] / zooms[0]]
    for k, ax in enumerate(axes):
        ax.imshow(_slices(bg, centre)[k], cmap="gray", origin="lower", vmin=vmin, vmax=vmax,
                  aspect=aspects[k])
        if ov is not None:
            lo, hi = _robust(ov)
            sl = np.ma.masked_less_equal(_slices(ov, centre)[k], lo)
            ax.imshow(sl, cmap="hot", origin="lower", alpha=overlay_alpha, vmin=lo, vmax=hi,
                      aspect=aspects[k])
        if ct is not None:
            ax.contour(_slices(ct, centre)[k], levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(VIEWS[k], fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_file, format="svg")
    plt.close(fig)
    return out_file


def plot_uptake_window(info: dict, out_file, *, title=""):
    """Frames over time, their weights, and the tracer's uptake window."""
    starts = np.asarray(info["FrameTimesStart"], dtype=float) / 60.0
    durations = np.asarray(info["FrameDuration"], dtype=float) / 60.0
    weights = np.asarray(info["FrameWeights"], dtype=float)
    lo, hi = info["TimeWindowRequested"]
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.axvspan(lo, hi, color="tab:orange", alpha=0.2, label=f"uptake window {lo:g}-{hi:g} min")
    ax.bar(starts, weights, width=durations, align="edge", edgecolor="k",
           color=["tab:blue" if w > 0 else "lightgrey" for w in weights], label="frame weight")
    ax.set_xlabel("minutes after injection")
    ax.set_ylabel("weight in average")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_file, format="svg")
    plt.close(fig)
    return out_file


def plot_harmonization(before, after, mask, out_file, *, title=""):
    """PET-MR before and after harmonization and the ratio after/before inside the brain."""
    b, zooms = _canonical(before)
    a = _canonical(after)[0]
    m = _canonical(mask)[0] > 0
    centre = _centre(m)
    ratio = np.where(m & (b > 0), a / np.where(b > 0, b, 1), np.nan)
    vmin, vmax = _robust(b, m)
    aspects = [zooms[2] / zooms[1], zooms[2] / zooms[0], zooms[1] / zooms[0]]
    fig, axes = plt.subplots(3, 3, figsize=(10, 9))
    rows = [("PET-MR (before)", b, "magma", vmin, vmax), ("harmonized", a, "magma", vmin, vmax),
            ("ratio harmonized / before", ratio, "coolwarm", 0.8, 1.2)]
    for r, (label, vol, cmap, lo, hi) in enumerate(rows):
        for k in range(3):
            im = axes[r, k].imshow(_slices(vol, centre)[k], cmap=cmap, origin="lower", vmin=lo,
                                   vmax=hi, aspect=aspects[k])
            axes[r, k].axis("off")
        axes[r, 0].set_title(label, fontsize=10, loc="left")
        fig.colorbar(im, ax=axes[r, :].tolist(), shrink=0.7)
    fig.suptitle(title, fontsize=11)
    fig.savefig(out_file, format="svg")
    plt.close(fig)
    return out_file
