"""The group HTML report: PET-MR vs PET-CT agreement before and after harmonization.

:func:`write_group_report` reads only the tables that
:func:`bids_harmonize.group.run.run_group` wrote under ``<out>/group/`` and writes
``<out>/group/group_report.html`` with its SVG figures in ``<out>/group/figures/``
(also inlined, so the HTML file stands alone). It works with raw images only (no
harmonized tables) and without pairs (then it shows the group tables and a note).
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bids_harmonize.reports.html import CSS  # noqa: E402
from bids_harmonize.reports.reportlets import region_bars  # noqa: E402
from bids_harmonize.safeio import atomic_savefig, atomic_write_text  # noqa: E402

LOGGER = logging.getLogger(__name__)

#: The headline measure of each tracer family, in order of preference.
KEY_MEASURES = ("centiloid", "suvr_cortical", "suvr_braak_III_IV", "sbr_putamen_min",
                "suvr_pons_cortical_composite", "suvr_global_cortical_composite")
COLOURS = {"petmr_raw": "#d95f02", "petmr_harmonized": "#1b9e77"}
LABELS = {"petct": "PET-CT", "petmr_raw": "PET-MR raw", "petmr_harmonized": "PET-MR harmonized"}
#: Above this many points, scatter markers are rasterised inside the SVG.
RASTER_ABOVE = 2000
MAX_BARS = 40
#: Longest table shown in the HTML (the TSVs hold everything).
MAX_ROWS = 100

#: Group tables: headers wrap (between words) so that wide tables stay on the page.
GROUP_CSS = ("table.group-table th{max-width:7em;white-space:normal;overflow-wrap:break-word}"
             "table.group-table td{white-space:nowrap}")

#: Methods text of the group statistics (Markdown with citation keys, as the workflows').
GROUP_METHODS = (
    "PET-MR measures were compared with PET-CT, the reference, in the same subjects: per "
    "tracer and atlas, only subjects with PET-CT and every PET-MR version (raw and "
    "harmonized) found enter the comparisons, so that both versions are compared on the "
    "same subjects. Agreement was summarised by the mean difference (bias) and the 95 % "
    "limits of agreement of PET-MR - PET-CT [@blandaltman1986], the intraclass correlation "
    "coefficients ICC(2,1) (absolute agreement) and ICC(3,1) (consistency) [@mcgraw1996icc], "
    "and Pearson and Spearman correlations; 95 % confidence intervals of the bias, limits "
    "and ICC(2,1) are percentile bootstrap intervals over subjects ({n_boot} resamples). "
    "Positivity calls at the PET-CT cut-off were compared with Cohen's kappa [@cohen1960kappa]. "
    "Inter-regional SUVR correlation matrices across subjects were compared by the Pearson "
    "correlation of their upper triangles."
)


def methods_section(group_dir: Path) -> str:
    """The group statistics' methods text with its references, and a link to the participant
    level's (``logs/CITATION.md``, when the participant level wrote it)."""
    from bids_harmonize.reports.boilerplate import boilerplate_from

    text = boilerplate_from([GROUP_METHODS.format(n_boot=N_BOOTSTRAP)]).html()
    citation = Path(group_dir).parent / "logs" / "CITATION.md"
    link = ("<p>The participant-level methods (preprocessing, harmonization model, reference "
            "regions, atlas) are in <a href='../logs/CITATION.md'>logs/CITATION.md</a> and "
            "each participant's report.</p>" if citation.is_file() else
            "<p class='note'>No participant-level methods text was found "
            "(<code>logs/CITATION.md</code>): see the participants' reports.</p>")
    return "<h2 id='methods'>Methods</h2>" + text + link


def _select(table: pd.DataFrame, tracer: str, seg: str) -> pd.DataFrame:
    """Rows of one tracer and atlas (an empty table stays as it is)."""
    if table.empty:
        return table
    return table.loc[(table["tracer"] == tracer) & (table["seg"] == seg)]


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                           dtype={"subject": str, "session": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _svg(fig, path: Path) -> str:
    # text as SVG text, not glyph paths: smaller files, much faster to write
    with plt.rc_context({"svg.fonttype": "none"}):
        atomic_savefig(fig, path, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = path.read_text()
    return text[text.index("<svg"):]


#: Readable headers of the group tables' columns (the TSVs keep the short names).
HEADERS = {
    "seg": "atlas", "mean_diff": "mean diff", "sd_diff": "SD diff",
    "mean_abs_diff": "mean abs diff", "percent_bias": "% bias", "loa_lower": "lower LoA",
    "loa_upper": "upper LoA", "icc_2_1": "ICC(2,1)", "icc_3_1": "ICC(3,1)",
    "pearson_r": "Pearson r", "spearman_rho": "Spearman rho", "cutoff": "cut-off",
    "positive_if": "positive if", "n_agree": "n agree", "percent_agreement": "% agreement",
    "ref_positive": "PET-CT positive", "test_positive": "PET-MR positive",
    "pos_to_neg": "positive to negative", "neg_to_pos": "negative to positive",
    "n_changed": "n changed",
}
#: Readable names of the sidecar fields that group PET-MR images (breakdowns, OOD table).
FIELD_NAMES = {"site": "site (InstitutionName)", "scanner": "scanner model",
               "ac_setup": "attenuation-correction setup",
               "ac_method": "attenuation correction (sidecar text)", "platform": "platform"}


def cutoff_text(value) -> str:
    """A cut-off as the table and the figure both show it (as given: ``20.1``, not ``20.100``).

    >>> cutoff_text(20.1), cutoff_text(1.0), cutoff_text(0.0875)
    ('20.1', '1', '0.0875')
    """
    return f"{float(value):g}"


def _table(df: pd.DataFrame, digits: int = 3) -> str:
    """A group table with readable headers (:data:`HEADERS`) that wrap, PET-MR versions by
    name, and the cut-off written as given."""
    if df.empty:
        return "<p><em>(empty)</em></p>"
    df = df.copy()
    if "comparison" in df.columns:
        df["comparison"] = df["comparison"].map(lambda c: LABELS.get(c, c))
    formatters = {"cutoff": cutoff_text} if "cutoff" in df.columns else None
    df = df.rename(columns=lambda c: HEADERS.get(c, str(c).replace("_", " ")))
    if formatters:
        formatters = {HEADERS["cutoff"]: cutoff_text}
    return df.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.{digits}f}",
                      formatters=formatters, border=0, escape=True,
                      classes="group-table")


def _key_measure(measures: list[str]) -> str | None:
    return next((m for m in KEY_MEASURES if m in measures), measures[0] if measures else None)


def _comparisons(df: pd.DataFrame) -> list[str]:
    """PET-MR versions with at least one subject that also has PET-CT."""
    if "petct" not in df.columns:
        return []
    return [c for c in ("petmr_raw", "petmr_harmonized") if c in df.columns
            and (df[c].notna() & df["petct"].notna()).any()]


def plot_scatter(pairs: pd.DataFrame, measure: str, title: str, path: Path) -> str:
    """PET-MR vs PET-CT per subject, raw and harmonized, with the identity line."""
    fig, ax = plt.subplots(figsize=(5, 5))
    many = len(pairs) > RASTER_ABOVE
    lo, hi = np.inf, -np.inf
    for comp in _comparisons(pairs):
        ok = pairs["petct"].notna() & pairs[comp].notna()
        x, y = pairs.loc[ok, "petct"], pairs.loc[ok, comp]
        ax.scatter(x, y, s=6 if many else 18, alpha=0.5 if many else 0.8, color=COLOURS[comp],
                   label=LABELS[comp], rasterized=many, edgecolors="none")
        lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
    if np.isfinite(lo):
        pad = 0.05 * (hi - lo or 1)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="identity")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"PET-CT {measure}")
    ax.set_ylabel(f"PET-MR {measure}")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _svg(fig, path)


def plot_bland_altman(pairs: pd.DataFrame, measure: str, title: str, path: Path) -> str:
    """Difference (PET-MR - PET-CT) against the mean, bias and 95% limits, per version."""
    comps = _comparisons(pairs)
    fig, axes = plt.subplots(1, len(comps), figsize=(5 * len(comps), 4), sharey=True,
                             squeeze=False)
    many = len(pairs) > RASTER_ABOVE
    for ax, comp in zip(axes[0], comps, strict=True):
        ok = pairs["petct"].notna() & pairs[comp].notna()
        x, y = pairs.loc[ok, "petct"].to_numpy(), pairs.loc[ok, comp].to_numpy()
        mean, diff = (x + y) / 2, y - x
        ax.scatter(mean, diff, s=6 if many else 18, alpha=0.5 if many else 0.8,
                   color=COLOURS[comp], rasterized=many, edgecolors="none")
        bias = diff.mean()
        sd = diff.std(ddof=1) if diff.size > 1 else np.nan
        ax.axhline(0, color="grey", lw=0.8)
        ax.axhline(bias, color="k", lw=1.2, label=f"bias {bias:.3g}")
        if np.isfinite(sd):
            for v in (bias - 1.96 * sd, bias + 1.96 * sd):
                ax.axhline(v, color="k", ls="--", lw=1)
            ax.plot([], [], "k--", label=f"95% limits {bias - 1.96 * sd:.3g} / "
                                         f"{bias + 1.96 * sd:.3g}")
        ax.set_title(f"{LABELS[comp]} vs PET-CT", fontsize=10)
        ax.set_xlabel(f"mean of PET-MR and PET-CT {measure}")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"PET-MR - PET-CT {measure}")
    fig.suptitle(title, fontsize=10)
    return _svg(fig, path)


def plot_region_bias(agree: pd.DataFrame, title: str, path: Path) -> str:
    """Percent bias per region, before and after harmonization (horizontal bars)."""
    wide = agree.pivot_table(index="region", columns="comparison", values="percent_bias",
                             aggfunc="first")
    comps = ("petmr_raw", "petmr_harmonized")
    fig = region_bars(wide, {c: LABELS[c] for c in comps}, COLOURS, max_rows=MAX_BARS,
                      xlabel="percent bias of regional SUVR, PET-MR vs PET-CT (%)", title=title)
    return _svg(fig, path)


def plot_matrices(matrices: dict[str, pd.DataFrame], sims: dict[str, float], title: str,
                  path: Path) -> str:
    """Inter-regional SUVR correlation matrices side by side."""
    conds = [c for c in ("petct", "petmr_raw", "petmr_harmonized") if c in matrices]
    fig, axes = plt.subplots(1, len(conds), figsize=(4.2 * len(conds), 4.2), squeeze=False)
    im = None
    for k, (ax, cond) in enumerate(zip(axes[0], conds, strict=True)):
        mat = matrices[cond]
        im = ax.imshow(mat.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
        sim = f" (similarity {sims[cond]:.3f})" if cond in sims else ""
        ax.set_title(LABELS[cond] + sim, fontsize=9)
        ax.set_xticks([])  # columns are in the same order as the rows
        if k == 0 and len(mat) <= 40:
            ax.set_yticks(range(len(mat)), mat.index, fontsize=5)
        else:
            ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.7, label="Pearson r across subjects")
    fig.suptitle(title, fontsize=10)
    return _svg(fig, path)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption class='explain'>{html.escape(caption)}</figcaption></figure>"


def _direction_notes(agree_r: pd.DataFrame) -> list[str]:
    """Per tracer and atlas: did harmonization bring regional SUVR closer to PET-CT, with the
    numbers (mean over regions of the mean absolute SUVR difference), said either way."""
    need = {"tracer", "seg", "region", "comparison", "mean_abs_diff"}
    if agree_r.empty or not need <= set(agree_r.columns):
        return []
    out = []
    for (tracer, seg), grp in agree_r.groupby(["tracer", "seg"], sort=True):
        by = grp.pivot_table(index="region", columns="comparison", values="mean_abs_diff")
        if not {"petmr_raw", "petmr_harmonized"} <= set(by.columns):
            continue
        by = by.dropna(subset=["petmr_raw", "petmr_harmonized"])
        raw, harm = float(by["petmr_raw"].mean()), float(by["petmr_harmonized"].mean())
        closer = int((by["petmr_harmonized"] < by["petmr_raw"]).sum())
        verb = ("brought regional SUVR closer to PET-CT" if harm < raw
                else "did not bring regional SUVR closer to PET-CT")
        out.append(f"<p class='{'explain' if harm < raw else 'note'}'><b>{html.escape(str(tracer))} "
                   f"({html.escape(str(seg))}): harmonization {verb}</b>: mean absolute SUVR "
                   f"difference to PET-CT {raw:.3f} raw, {harm:.3f} harmonized, averaged over "
                   f"{len(by)} regions; closer in {closer} of them.</p>")
    return out


def write_group_report(group_dir: str | Path) -> Path:
    """Write ``group_report.html`` (and ``figures/*.svg``) from the group tables."""
    group_dir = Path(group_dir)
    fig_dir = group_dir / "figures"
    summary = json.loads((group_dir / "group_summary.json").read_text())
    measures = _read(group_dir / "measures.tsv")
    pairs = _read(group_dir / "pairs.tsv")
    if "paired_set" in pairs.columns:  # figures and intervals on the compared subjects only
        pairs = pairs.loc[pairs["paired_set"] == 1]
    agree_m = _read(group_dir / "agreement_measures.tsv")
    agree_r = _read(group_dir / "agreement_regions.tsv")
    cut = _read(group_dir / "cutoff_agreement.tsv")
    changes = _read(group_dir / "cutoff_changes.tsv")
    sims = _read(group_dir / "correlation_similarity.tsv")
    meta = image_metadata(group_dir.parent)

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>bids_harmonize group report</title><style>{CSS}{GROUP_CSS}</style>"
             "</head><body>",
             "<h1>Group report: PET-MR vs PET-CT</h1>",
             "<nav class='toc'><a href='../index.html'>Run summary</a>"
             "<a href='#methods'>Methods</a></nav>",
             "<p class='explain'>This report compares brain PET measured on PET-MR scanners "
             "with PET-CT in the same people, before (<b>raw</b>) and after "
             "(<b>harmonized</b>) the harmonization model. PET-CT is the reference: "
             "differences are PET-MR minus PET-CT. Harmonization that works brings the points "
             "onto the identity line, the bias towards zero, the limits of agreement closer "
             "together, and the intraclass correlation (ICC) towards 1; whether it did here "
             "is stated per tracer below. All numbers come "
             "from the participant tables; see <code>group_summary.json</code> for settings."
             "</p>"]
    parts.append(f"<p>{summary['Participants']} participants, {summary['Images']} image "
                 f"tables, tracers: {html.escape(', '.join(summary['Tracers']))}; atlases: "
                 f"{html.escape(', '.join(summary['Atlases']))}.</p>")
    for note in summary.get("Notes", []):
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    if summary.get("SkippedParticipants"):
        probs = pd.DataFrame(summary["Problems"])
        parts.append(f"<p class='note'>{len(summary['SkippedParticipants'])} participants "
                     "were skipped because their tables were missing or malformed (all listed "
                     "in <code>group_summary.json</code>):</p>" + _table(probs.head(MAX_ROWS)))
    if summary.get("LeftOutOfComparisons"):
        left = pd.DataFrame(summary["LeftOutOfComparisons"])
        parts.append(f"<p class='note'>{left['subject'].nunique()} subject(s) are left out of "
                     "the PET-MR vs PET-CT comparisons below, so that raw and harmonized are "
                     "compared on the same subjects (<code>left_out.tsv</code>):</p>"
                     + _table(left.head(MAX_ROWS)))
    from bids_harmonize.reports.subject import model_provenance_notes

    parts += model_provenance_notes(group_dir.parent)
    parts += _direction_notes(agree_r)
    parts.append(status_section(group_dir.parent))

    if not measures.empty:
        keys = [k for k in ("tracer", "seg", "platform", "version") if k in measures.columns]
        counts = measures.groupby(keys).size().rename("images").reset_index()
        parts.append("<h2>Images per tracer, atlas, platform and version</h2>" + _table(counts))

    if _comparisons(pairs):
        for (tracer, seg), grp in pairs.groupby(["tracer", "seg"], sort=True):
            comps = _comparisons(grp)
            grp = grp.loc[grp["petct"].notna()]
            if not comps or grp.empty:
                continue
            measure = _key_measure(sorted(set(grp["measure"])
                                          - {"positive", "centiloid_standard_vois"}))
            if measure is None:
                continue
            sel = grp.loc[grp["measure"] == measure]
            tag = f"trc-{tracer}_seg-{seg}"
            parts.append(f"<h2>{html.escape(str(tracer))} (atlas {html.escape(str(seg))})</h2>")
            parts.append(_figure(
                plot_scatter(sel, measure, f"{tracer}: {measure}", fig_dir / f"{tag}_scatter.svg"),
                f"Each dot is one subject: {measure} on PET-CT (x) and on PET-MR (y), before "
                "(orange) and after (green) harmonization. Dots on the dashed identity line "
                "mean PET-MR equals PET-CT."))
            parts.append(_figure(
                plot_bland_altman(sel, measure, f"{tracer}: {measure}",
                                  fig_dir / f"{tag}_blandaltman.svg"),
                "Bland-Altman plots: the difference PET-MR - PET-CT against their mean. The "
                "solid line is the average difference (bias), the dashed lines the 95% limits "
                "of agreement (bias +/- 1.96 SD): 95% of subjects' differences fall between "
                "them. Narrower limits around zero mean better agreement."))
            am = _select(agree_m, tracer, seg)
            parts.append("<h3>Agreement of the summary measures</h3><p class='explain'>"
                         "n: subjects with both platforms; mean diff / SD diff: mean and SD of "
                         "PET-MR - PET-CT; % bias: mean of 100*(PET-MR - PET-CT)/PET-CT; "
                         "lower / upper LoA: 95% limits of agreement; ICC(2,1): absolute "
                         "agreement (penalises bias); ICC(3,1): consistency (ignores a constant "
                         "bias); Pearson r / Spearman rho: correlations; mean abs diff: mean "
                         "absolute difference (for centiloid, in CL).</p>"
                         + _table(am.drop(columns=["tracer", "seg"], errors="ignore")))
            parts.append(ci_table(sel, measure))
            parts.append(breakdown_table(pairs, meta, measure, tracer, seg))
            ar = _select(agree_r, tracer, seg)
            if not ar.empty:
                parts.append(_figure(
                    plot_region_bias(ar, f"{tracer}: regional SUVR bias",
                                     fig_dir / f"{tag}_regionbias.svg"),
                    "Percent bias of each region's SUVR on PET-MR relative to PET-CT, before "
                    "and after harmonization (regions with the largest raw bias first, at "
                    f"most {MAX_BARS}). PET-MR attenuation correction typically under-"
                    "estimates cortex near the skull; harmonized bars should be near zero."))
            ct = _select(cut, tracer, seg)
            if not ct.empty:
                ch = _select(changes, tracer, seg)
                parts.append("<h3>Cut-off transfer</h3><p class='explain'>Each subject is "
                             "called positive or negative with the PET-CT cut-off on both "
                             "platforms. % agreement: subjects called alike; kappa: "
                             "Cohen's kappa (agreement beyond chance); n changed: subjects "
                             "whose call differs from PET-CT, listed below.</p>"
                             + _table(ct.drop(columns=["tracer", "seg"]))
                             + (_table(ch.drop(columns=["tracer", "seg"]).head(MAX_ROWS))
                                if not ch.empty else "<p>No subject changes class.</p>")
                             + (f"<p>First {MAX_ROWS} of {len(ch)} rows; all are in "
                                "<code>cutoff_changes.tsv</code>.</p>"
                                if len(ch) > MAX_ROWS else ""))
                parts.append(_class_change_figure(grp, ct, tracer, fig_dir / f"{tag}_cutoff.svg"))
            mats, sim = {}, {}
            for cond in ("petct", "petmr_raw", "petmr_harmonized"):
                f = (group_dir / "correlations"
                     / f"trc-{tracer}_seg-{seg}_desc-{cond.replace('_', '')}_corr.tsv")
                if f.is_file():
                    mats[cond] = pd.read_csv(f, sep="\t", index_col=0, na_values=["n/a"])
            if not sims.empty:
                for _, r in _select(sims, tracer, seg).iterrows():
                    sim[r["comparison"]] = r["similarity"]
            if len(mats) > 1:
                parts.append(_figure(
                    plot_matrices(mats, sim, f"{tracer}: inter-regional correlation",
                                  fig_dir / f"{tag}_correlations.svg"),
                    "How regional SUVRs co-vary across subjects, on each platform (red: "
                    "regions that rise and fall together; columns are in the same order as "
                    "the rows named on the left). 'similarity' is the Pearson "
                    "correlation between the PET-MR and PET-CT matrices (upper triangles): 1 "
                    "means the same inter-regional structure."))
    else:
        parts.append("<p class='note'>No subject has both a PET-CT and a PET-MR image of the "
                     "same tracer, so no agreement can be shown. The tables above and "
                     "<code>measures.tsv</code> / <code>regions_suvr.tsv</code> hold the "
                     "group data.</p>")
        if not measures.empty:
            key = _key_measure([c for c in measures.columns if c in KEY_MEASURES])
            if key:
                desc = measures.groupby(["tracer", "seg", "platform", "version"])[key].describe()
                parts.append(f"<h2>{html.escape(key)} by group</h2>"
                             + _table(desc.reset_index()))
    parts.append(ood_summary(meta))
    parts.append(methods_section(group_dir))
    parts.append("</body></html>")
    out = group_dir / "group_report.html"
    atomic_write_text(out, "\n".join(parts))
    LOGGER.info("group report written to %s", out)
    return out


# --------------------------------------------------------------------------- uncertainty of the
# agreement, breakdowns by scanner / site / attenuation-correction setup, classification changes

#: Bootstrap resamples for the confidence intervals (percentile method, Efron & Tibshirani
#: 1993, ch. 13); 2000 keeps the 2.5/97.5 % percentiles stable to about 0.01 SD.
N_BOOTSTRAP = 2000
#: Fewer paired subjects than this: no interval (a bootstrap of 2-4 points is not meaningful).
MIN_BOOTSTRAP_N = 5
#: Sidecar fields that define a PET-MR group of the breakdowns (the ones present are used).
GROUP_FIELDS = {"site": "InstitutionName", "scanner": "ManufacturersModelName",
                "ac_setup": "AttenuationCorrectionSetup", "ac_method": "AttenuationCorrection"}


def bootstrap_agreement(ref, test, *, n_boot: int = N_BOOTSTRAP, seed: int = 0,
                        level: float = 95.0) -> dict[str, float]:
    """Bias, 95 % limits of agreement and ICC(2,1) with percentile bootstrap intervals.

    Subjects are resampled with replacement (pairs kept together). Returns the
    point estimates and ``<stat>_lo`` / ``<stat>_hi``; intervals are NaN below
    :data:`MIN_BOOTSTRAP_N` subjects.

    >>> rng = np.random.default_rng(1)
    >>> ct = rng.normal(50, 20, 40); mr = ct - 5 + rng.normal(0, 2, 40)
    >>> ci = bootstrap_agreement(ct, mr, n_boot=500)
    >>> ci["bias_lo"] < ci["bias"] < ci["bias_hi"] < 0, ci["icc_2_1_lo"] < ci["icc_2_1_hi"] <= 1
    (True, True)
    >>> bool(np.isnan(bootstrap_agreement([1, 2], [1, 3])["bias_lo"]))
    True
    """
    from bids_harmonize.group.agreement import Z95, icc

    ref, test = np.asarray(ref, float), np.asarray(test, float)
    ok = np.isfinite(ref) & np.isfinite(test)
    ref, test = ref[ok], test[ok]
    n = ref.size

    def stats(r, t):
        d = t - r
        bias = d.mean() if d.size else np.nan
        sd = d.std(ddof=1) if d.size > 1 else np.nan
        return {"bias": bias, "loa_lower": bias - Z95 * sd, "loa_upper": bias + Z95 * sd,
                "icc_2_1": icc(r, t, "2,1") if d.size > 1 else np.nan}

    out: dict[str, float] = {"n": n, **stats(ref, test)}
    keys = ("bias", "loa_lower", "loa_upper", "icc_2_1")
    if n < MIN_BOOTSTRAP_N:
        out.update({f"{k}_{e}": np.nan for k in keys for e in ("lo", "hi")})
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = [stats(ref[i], test[i]) for i in idx]
    alpha = (100 - level) / 2
    for k in keys:
        vals = np.array([b[k] for b in boots], float)
        vals = vals[np.isfinite(vals)]
        lo, hi = (np.percentile(vals, [alpha, 100 - alpha]) if vals.size else (np.nan, np.nan))
        out[f"{k}_lo"], out[f"{k}_hi"] = float(lo), float(hi)
    return out


def _ci(value, lo, hi, digits: int = 3) -> str:
    """``1.23 [0.9, 1.5]``; the point estimate alone when there is no interval.

    >>> _ci(1.234, 0.9, 1.51), _ci(2.0, float("nan"), float("nan"))
    ('1.23 [0.9, 1.51]', '2')
    """
    from bids_harmonize.reports.html import fmt

    if lo is None or not np.isfinite(lo):
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def ci_table(sel: pd.DataFrame, measure: str) -> str:
    """Bias, limits of agreement and ICC(2,1) with 95 % bootstrap intervals, per version."""
    rows = []
    for comp in _comparisons(sel):
        ok = sel["petct"].notna() & sel[comp].notna()
        b = bootstrap_agreement(sel.loc[ok, "petct"], sel.loc[ok, comp])
        rows.append([LABELS[comp], b["n"], _ci(b["bias"], b["bias_lo"], b["bias_hi"]),
                     _ci(b["loa_lower"], b["loa_lower_lo"], b["loa_lower_hi"]),
                     _ci(b["loa_upper"], b["loa_upper_lo"], b["loa_upper_hi"]),
                     _ci(b["icc_2_1"], b["icc_2_1_lo"], b["icc_2_1_hi"])])
    if not rows:
        return ""
    from bids_harmonize.reports.html import table

    small = any(r[1] < MIN_BOOTSTRAP_N for r in rows)
    return ("<h3>Agreement with 95% confidence intervals</h3><p class='explain'>Point estimate "
            f"and [2.5%, 97.5%] percentile bootstrap interval ({N_BOOTSTRAP} resamples of "
            f"subjects) of {html.escape(measure)}: bias (mean PET-MR - PET-CT), lower and upper "
            "95% limits of agreement, and ICC(2,1)."
            + (f" With fewer than {MIN_BOOTSTRAP_N} subjects no interval is given." if small
               else "") + "</p>"
            + table(["version", "n", "bias", "lower limit", "upper limit", "ICC(2,1)"], rows))


def image_metadata(output_dir: Path) -> pd.DataFrame:
    """One row per PET image (subject, session, tracer, desc) with its sidecar's group fields
    and out-of-distribution fields (read from the participant outputs; unreadable ones skipped).
    """
    from bids_harmonize.derivatives import collect_derivatives, series_label

    rows = []
    for deriv in collect_derivatives(output_dir, kinds=("pet_preproc", "pet_harmonized"),
                                     space="T1w", extension=".json"):
        try:
            meta = deriv.metadata()
        except ValueError:
            continue
        ents = deriv.entities
        row = {"subject": ents.get("subject"), "session": ents.get("session"),
               "tracer": ents.get("tracer"), "desc": ents.get("desc"),
               "series": series_label(ents), "platform": meta.get("Platform")}
        for col, field in GROUP_FIELDS.items():
            row[col] = meta.get(field)
        row["ood_decision"] = meta.get("OODDecision")
        row["ood_score"] = meta.get("OODScore")
        row["uncertainty_map"] = ents.get("desc") == "harmonized" and deriv.path.with_name(
            deriv.path.name.replace("desc-harmonized", "desc-uncertainty")
            .replace(".json", ".nii.gz")).is_file()
        rows.append(row)
    return pd.DataFrame(rows)


def breakdown_table(pairs: pd.DataFrame, meta: pd.DataFrame, measure: str, tracer: str,
                    seg: str) -> str:
    """Bias before/after (with intervals) per PET-MR site, scanner and attenuation setup."""
    if meta.empty or pairs.empty:
        return ""
    mr = meta.loc[(meta["platform"] == "PET-MR") & (meta["desc"] == "preproc")
                  & (meta["tracer"] == tracer)].drop_duplicates(["subject", "tracer"])
    cols = [c for c in GROUP_FIELDS if c in mr.columns and mr[c].notna().any()]
    if not cols:
        return ""
    sel = pairs.loc[(pairs["tracer"] == tracer) & (pairs["seg"] == seg)
                    & (pairs["measure"] == measure)].copy()
    sel["subject"] = sel["subject"].astype(str)
    mr = mr.assign(subject=mr["subject"].astype(str))
    merged = sel.merge(mr[["subject", *cols]], on="subject", how="left")
    comps = _comparisons(merged)
    rows = []
    for col in cols:
        for value, grp in merged.groupby(merged[col].fillna("n/a"), sort=True):
            row = [FIELD_NAMES.get(col, col), value]
            for comp in comps:
                ok = grp["petct"].notna() & grp[comp].notna()
                b = bootstrap_agreement(grp.loc[ok, "petct"], grp.loc[ok, comp])
                row += [b["n"] if comp == comps[0] else None, _ci(b["bias"], b["bias_lo"],
                                                                  b["bias_hi"])]
            rows.append([r for r in row if r is not None])
    from bids_harmonize.reports.html import table

    head = ["grouped by", "group", "n"] + [f"bias {LABELS[c]}" for c in comps]
    return ("<h3>By site, scanner and attenuation correction</h3><p class='explain'>Bias "
            f"of {html.escape(measure)} (PET-MR - PET-CT) with its 95% bootstrap interval, "
            "for the PET-MR images of each site (<code>InstitutionName</code>), scanner "
            "(<code>ManufacturersModelName</code>) and attenuation-correction setup or method "
            "named in their sidecars. A harmonizer that works for one setup and not another "
            "shows here.</p>" + table(head, rows, text_columns=2))


def plot_class_changes(sel: pd.DataFrame, measure: str, cutoff: float, title: str,
                       path: Path) -> str:
    """Each subject's measure on PET-CT, PET-MR raw and harmonized, with the cut-off line;
    subjects whose call differs from PET-CT on either PET-MR version are drawn in red."""
    cols = [c for c in ("petct", "petmr_raw", "petmr_harmonized") if c in sel.columns]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(cols))
    changed = np.zeros(len(sel), bool)
    ref = sel["petct"].to_numpy(float) >= cutoff
    for c in cols[1:]:
        v = sel[c].to_numpy(float)
        changed |= np.isfinite(v) & ((v >= cutoff) != ref)
    for k, (_, row) in enumerate(sel.iterrows()):
        ax.plot(x, row[cols].to_numpy(float), "-o", ms=3, lw=1.4 if changed[k] else 0.7,
                color="#c62828" if changed[k] else "#9e9e9e", alpha=1 if changed[k] else 0.6)
    ax.axhline(cutoff, color="k", ls="--", lw=1, label=f"cut-off {cutoff_text(cutoff)}")
    ax.set_xticks(x, [LABELS[c] for c in cols])
    ax.set_ylabel(measure)
    ax.plot([], [], color="#c62828", label=f"call changes ({int(changed.sum())})")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _svg(fig, path)


def ood_summary(meta: pd.DataFrame) -> str:
    """Counts of the harmonizer's out-of-distribution decisions per scanner and setup."""
    if meta.empty or "ood_decision" not in meta.columns:
        return ""
    harm = meta.loc[meta["desc"] == "harmonized"]
    if harm.empty:
        return ""
    if not harm["ood_decision"].notna().any():
        return ("<h2>Uncertainty and out-of-distribution checks</h2><p class='note'>The "
                "harmonized images' sidecars carry no <code>OODDecision</code>: the model "
                "used does not report one.</p>")
    keys = [c for c in ("scanner", "ac_setup") if harm[c].notna().any()] or ["platform"]
    harm = harm.assign(ood_decision=harm["ood_decision"].fillna("not reported"),
                       ood_score=pd.to_numeric(harm["ood_score"], errors="coerce"))
    counts = (harm.groupby([*keys, "ood_decision"], dropna=False)
              .agg(images=("subject", "size"), mean_score=("ood_score", "mean"),
                   with_uncertainty_map=("uncertainty_map", "sum")).reset_index())
    from bids_harmonize.reports.html import table

    return ("<h2>Uncertainty and out-of-distribution checks</h2><p class='explain'>The "
            "harmonizer's decision for each PET-MR image (apply, warn, or pass the image "
            "through unchanged) from its out-of-distribution score, per scanner and "
            "attenuation-correction setup.</p>"
            + table([*[FIELD_NAMES.get(k, k) for k in keys], "OOD decision", "images",
                     "mean OOD score", "with uncertainty map"],
                    counts.to_numpy().tolist(), text_columns=len(keys) + 1))


def status_section(output_dir: Path) -> str:
    """Participants whose run did not finish cleanly (:mod:`bids_harmonize.runstatus`)."""
    try:
        from bids_harmonize.runstatus import read_status
    except ImportError:  # pragma: no cover - the module ships with the package
        return ""
    bad = [r for r in read_status(output_dir) if r.get("status") != "ok"]
    if not bad:
        return ""
    from bids_harmonize.reports.html import table

    rows = [[f"sub-{r.get('participant')}", r.get("status"),
             "; ".join(str(x) for x in r.get("reasons") or []) or "n/a"] for r in bad]
    return ("<p class='note'>Participants whose last run did not finish cleanly (their "
            "outputs are left out or may be partial; see <a href='../index.html'>the run "
            "summary</a>):</p>" + table(["participant", "status", "reason"], rows,
                                        text_columns=3))


def _class_change_figure(grp: pd.DataFrame, cut: pd.DataFrame, tracer: str, path: Path) -> str:
    """The classification-change figure of one tracer, or a note saying why there is none."""
    first = cut.iloc[0]
    sel = grp.loc[grp["measure"] == first["measure"]]
    if sel.empty:
        return ""
    try:
        svg = plot_class_changes(sel, str(first["measure"]), float(first["cutoff"]),
                                 f"{tracer}: calls at the cut-off", path)
    except Exception as exc:  # a figure never breaks the report
        LOGGER.warning("cut-off figure failed: %s", exc)
        return f"<p class='note'>The cut-off figure could not be drawn: {html.escape(str(exc))}</p>"
    return _figure(svg, "Each line is one subject: its value on PET-CT, PET-MR raw and "
                   "PET-MR harmonized. Red lines are subjects called differently from PET-CT "
                   "on a PET-MR version (they cross the dashed cut-off line).")
