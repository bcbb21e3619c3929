"""The per-subject HTML report, assembled after the run from ``sub-<s>/figures/``."""

from __future__ import annotations

import html
import json
from pathlib import Path

FIGURE_TEXT = {
    "template": ("Registration to the template",
                 "The subject's brain-extracted T1w resampled into the template; the cyan line is "
                 "the template's brain outline. The two should match."),
    "ct2t1w": ("CT to T1w", "The CT (colour) on the T1w; bone should sit on the dark skull band "
               "of the T1w."),
    "pet2t1w": ("PET to T1w", "The static PET (colour) on the T1w with the brain mask outline; "
                "uptake should follow the grey matter."),
    "window": ("Uptake window", "Frames of the series, the tracer's standard uptake window "
               "(shaded) and each frame's weight in the static image."),
    "harmonization": ("Harmonization", "PET-MR before and after harmonization, and their ratio "
                      "inside the brain: red where the harmonizer raised uptake (typically "
                      "cortex next to bone that Dixon MR-based attenuation misses)."),
}


def _section_of(path: Path) -> tuple[str, str]:
    stem = path.name.split(".")[0]
    entities = dict(part.split("-", 1) for part in stem.split("_")[:-1] if "-" in part)
    scope = " ".join(f"{k}-{v}" for k, v in entities.items() if k in ("ses", "trc"))
    return scope or "anatomy", entities.get("desc", "")


def build_subject_report(output_dir: Path, subject: str, *, boilerplate: str = "",
                         errors: list[str] | None = None) -> Path:
    """Write ``<out>/sub-<s>.html`` linking the subject's figures and sidecar summaries."""
    output_dir = Path(output_dir)
    figures = sorted((output_dir / f"sub-{subject}" / "figures").glob("*.svg"))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>bids_harmonize: sub-{html.escape(subject)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "img{max-width:100%;border:1px solid #ddd}h2{border-bottom:1px solid #aaa}"
        ".err{color:#a00}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:90%}</style></head><body>",
        f"<h1>Subject sub-{html.escape(subject)}</h1>",
    ]
    if errors:
        parts.append("<h2 class='err'>Errors</h2><ul>")
        parts += [f"<li class='err'>{html.escape(e)}</li>" for e in errors]
        parts.append("</ul>")
    parts.append(_summary_table(output_dir, subject))
    current = None
    for fig in figures:
        scope, desc = _section_of(fig)
        if scope != current:
            parts.append(f"<h2>{html.escape(scope)}</h2>")
            current = scope
        title, text = FIGURE_TEXT.get(desc, (desc, ""))
        rel = fig.relative_to(output_dir).as_posix()
        parts.append(f"<h3>{html.escape(title)}</h3><p>{html.escape(text)}</p>"
                     f"<img src='{html.escape(rel)}' alt='{html.escape(title)}'>")
    if boilerplate:
        parts.append(f"<h2>Methods</h2><p>{html.escape(boilerplate)}</p>")
    parts.append("</body></html>")
    out = output_dir / f"sub-{subject}.html"
    out.write_text("\n".join(parts))
    return out


def _summary_table(output_dir: Path, subject: str) -> str:
    rows = []
    for sidecar in sorted((output_dir / f"sub-{subject}").glob("ses-*/pet/*_space-T1w_desc-*_pet.json")):
        meta = json.loads(sidecar.read_text())
        harm = meta.get("Harmonization") or {}
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                sidecar.name.replace("_pet.json", ""), meta.get("Platform"),
                meta.get("PlatformInference"), meta.get("ManufacturersModelName"),
                meta.get("TimeWindow"), meta.get("Units"),
                f"{harm.get('ModelName', '')} {harm.get('ModelVersion', '')}".strip(),
                "; ".join(harm.get("Notes", []) or []),
            )) + "</tr>"
        )
    if not rows:
        return "<p>No PET outputs were written for this subject.</p>"
    head = "".join(f"<th>{h}</th>" for h in ("image", "platform", "decided from", "scanner",
                                              "window (min)", "units", "model", "notes"))
    return f"<h2>Summary</h2><table><tr>{head}</tr>{''.join(rows)}</table>"
