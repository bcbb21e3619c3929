"""Report figures (SVG) drawn with matplotlib: registration, uptake window, harmonization."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402

from bids_harmonize.safeio import atomic_savefig  # noqa: E402

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


def _slice_grid(rows, centre, zooms, *, row_height, shrink, colorbar_label=None):
    """A figure of three orthogonal slices per row; ``rows`` holds (label, volume, cmap, lo, hi)."""
    aspects = [zooms[2] / zooms[1], zooms[2] / zooms[0], zooms[1] / zooms[0]]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, row_height * len(rows)), squeeze=False)
    for r, (label, vol, cmap, lo, hi) in enumerate(rows):
        for k in range(3):
            im = axes[r, k].imshow(_slices(vol, centre)[k], cmap=cmap, origin="lower", vmin=lo,
                                   vmax=hi, aspect=aspects[k])
            axes[r, k].axis("off")
        axes[r, 0].set_title(label, fontsize=10, loc="left")
        extra = {"label": colorbar_label(label)} if colorbar_label else {}
        fig.colorbar(im, ax=axes[r, :].tolist(), shrink=shrink, **extra)
    return fig


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
    atomic_savefig(fig, out_file, format="svg")
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
    atomic_savefig(fig, out_file, format="svg")
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
    rows = [("PET-MR (before)", b, "magma", vmin, vmax), ("harmonized", a, "magma", vmin, vmax),
            ("ratio harmonized / before", ratio, "coolwarm", 0.8, 1.2)]
    fig = _slice_grid(rows, centre, zooms, row_height=3.0, shrink=0.7)
    fig.suptitle(title, fontsize=11)
    atomic_savefig(fig, out_file, format="svg")
    plt.close(fig)
    return out_file


def _save_svg(fig, out_file):
    # text as SVG text, not glyph paths: smaller files, much faster to write
    with plt.rc_context({"svg.fonttype": "none"}):
        atomic_savefig(fig, out_file, format="svg", bbox_inches="tight")
    plt.close(fig)
    return out_file


def _smooth_in_mask(volume: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that only averages voxels inside the mask (normalised convolution).

    >>> v = np.ones((5, 5, 5)); m = np.zeros_like(v, bool); m[1:4, 1:4, 1:4] = True
    >>> round(float(_smooth_in_mask(v * 3, m, 1.0)[2, 2, 2]), 4)
    3.0
    """
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return volume
    w = gaussian_filter(mask.astype(np.float32), sigma)
    s = gaussian_filter(np.where(mask, volume, 0).astype(np.float32), sigma)
    return np.where(mask, s / np.maximum(w, 1e-6), np.nan)


#: Colour range of the percent-difference maps (PET-MR vs PET-CT), in percent.
DIFF_RANGE_PCT = 20.0


def plot_petct_comparison(petct, petmr, mask, out_file, *, harmonized=None,
                          scales=(1.0, 1.0, 1.0), title="", unit="SUVR", smooth_vox=1.5):
    """PET-CT next to PET-MR before (and after) harmonization, with difference maps to PET-CT.

    All images are on one grid (the subject's T1w). Each image is divided by its
    ``scales`` entry (its reference-region mean: the maps are then SUVR, as the
    regional tables) before the difference ``100 * (PET-MR - PET-CT) / PET-CT``
    is taken inside the brain mask, on images smoothed inside the mask (Gaussian,
    ``smooth_vox`` voxels SD) so that systematic differences stand out of voxel noise.
    """
    ct, zooms = _canonical(petct)
    mr = _canonical(petmr)[0]
    m = _canonical(mask)[0] > 0
    hm = _canonical(harmonized)[0] if harmonized is not None else None
    ct, mr = ct / scales[0], mr / scales[1]
    hm = hm / scales[2] if hm is not None else None
    centre = _centre(m)

    ct_s = _smooth_in_mask(ct, m, smooth_vox)

    def pct(vol):
        vol = _smooth_in_mask(vol, m, smooth_vox)
        good = m & (ct_s > 0.05 * np.nanmax(np.where(m, ct_s, 0)))
        return np.where(good, 100.0 * (vol - ct_s) / np.where(good, ct_s, 1), np.nan)

    vmin, vmax = _robust(ct, m)
    rows = [("PET-CT (reference)", ct, "magma", vmin, vmax),
            ("PET-MR before harmonization", mr, "magma", vmin, vmax)]
    if hm is not None:
        rows.append(("PET-MR after harmonization", hm, "magma", vmin, vmax))
    rows.append(("difference before: PET-MR - PET-CT (%)", pct(mr), "RdBu_r", -DIFF_RANGE_PCT,
                 DIFF_RANGE_PCT))
    if hm is not None:
        rows.append(("difference after: harmonized - PET-CT (%)", pct(hm), "RdBu_r",
                     -DIFF_RANGE_PCT, DIFF_RANGE_PCT))
    fig = _slice_grid(rows, centre, zooms, row_height=2.7, shrink=0.8,
                      colorbar_label=lambda label: "%" if "%" in label else unit)
    fig.suptitle(title, fontsize=11)
    return _save_svg(fig, out_file)


def plot_subject_region_bias(bias, out_file, *, title="", max_regions=24):
    """Per-region percent bias of PET-MR SUVR vs PET-CT, before and after harmonization.

    ``bias``: a DataFrame indexed by region with columns ``before`` and (optionally)
    ``after``, in percent.
    """
    fig = region_bars(bias, {"before": "PET-MR before harmonization",
                             "after": "PET-MR after harmonization"},
                      {"before": "#d95f02", "after": "#1b9e77"}, max_rows=max_regions,
                      xlabel="SUVR difference to PET-CT (%)", title=title, row_height=0.24)
    return _save_svg(fig, out_file)


def region_bars(table, labels: dict, colours: dict, *, max_rows: int, xlabel: str, title: str,
                row_height: float = 0.22):
    """Grouped horizontal bars of percent bias per region (rows of ``table``), one bar per
    column of ``labels`` present in it; the rows with the largest first column, largest on top.
    """
    cols = [c for c in labels if c in table.columns]
    order = table[cols[0]].abs().sort_values(ascending=False).index[:max_rows]
    table = table.loc[order[::-1]]
    fig, ax = plt.subplots(figsize=(7, row_height * len(table) + 1.2))
    ypos = np.arange(len(table))
    height = 0.8 / len(cols)
    for k, col in enumerate(cols):
        ax.barh(ypos + k * height - 0.4 + height / 2, table[col], height=height,
                color=colours[col], label=labels[col])
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ypos, table.index, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10, pad=22)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    return fig


def plot_correction(before, after, mask, out_file, *, uncertainty=None, title=""):
    """The correction the harmonizer applied (after / before) and, when given, its uncertainty."""
    b, zooms = _canonical(before)
    a = _canonical(after)[0]
    m = _canonical(mask)[0] > 0
    centre = _centre(m)
    ratio = np.where(m & (b > 0), a / np.where(b > 0, b, 1), np.nan)
    rows = [("correction: harmonized / before", ratio, "coolwarm", 0.8, 1.2, "ratio")]
    if uncertainty is not None:
        u = _canonical(uncertainty)[0]
        u = np.where(m, u, np.nan)
        lo, hi = _robust(np.nan_to_num(u), m)
        rows.append(("uncertainty (ensemble spread)", u, "viridis", 0.0, hi, "uncertainty"))
    aspects = [zooms[2] / zooms[1], zooms[2] / zooms[0], zooms[1] / zooms[0]]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 2.9 * len(rows)), squeeze=False)
    for r, (label, vol, cmap, lo, hi, unit) in enumerate(rows):
        for k in range(3):
            im = axes[r, k].imshow(_slices(vol, centre)[k], cmap=cmap, origin="lower", vmin=lo,
                                   vmax=hi, aspect=aspects[k])
            axes[r, k].axis("off")
        axes[r, 0].set_title(label, fontsize=10, loc="left")
        fig.colorbar(im, ax=axes[r, :].tolist(), shrink=0.8, label=unit)
    fig.suptitle(title, fontsize=11)
    return _save_svg(fig, out_file)
