"""The run summary page ``<out>/index.html``: every participant, its status and its report.

Built from the per-participant status records of :mod:`bids_harmonize.runstatus`
(``<out>/logs/status/``), passed in as plain dicts so that the page can be made
from any source of records. A participant that has a report or outputs but no
record is listed too (``no status record``), so nothing on disk is hidden.
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path

from bids_harmonize.reports.html import fmt, page, table
from bids_harmonize.safeio import atomic_write_text

LOGGER = logging.getLogger(__name__)

ORDER = {"failed": 0, "incomplete": 1, "unknown": 2, "running": 3, "excluded": 4, "ok": 5}


def _runtime(seconds) -> str:
    """Seconds as ``1 h 02 min``, ``3 min 05 s`` or ``42 s``.

    >>> _runtime(42.4), _runtime(185), _runtime(3725), _runtime(None)
    ('42 s', '3 min 05 s', '1 h 02 min', 'n/a')
    """
    if seconds is None:
        return "n/a"
    seconds = int(round(float(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _link(out_dir: Path, rel: str, text: str | None = None) -> str:
    """A relative link when the target exists, else its path with '(missing)'."""
    target = out_dir / rel
    label = html.escape(text or rel)
    if target.exists():
        return f"<a href='{html.escape(rel)}'>{label}</a>"
    return f"<span title='not found'>{html.escape(rel)} (missing)</span>"


def _rel(out_dir: Path, path) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            return p.relative_to(out_dir).as_posix()
        except ValueError:
            return os.path.relpath(p, out_dir)
    return p.as_posix()


def render_run_summary(records: list[dict], out_dir: Path, *, title: str = "bids_harmonize run",
                       group: bool | None = None) -> str:
    """The page as a string: a count per status, then one row per participant."""
    out_dir = Path(out_dir)
    records = sorted(records, key=lambda r: (ORDER.get(r.get("status"), 9),
                                             str(r.get("participant"))))
    counts: dict[str, int] = {}
    for r in records:
        counts[r.get("status", "unknown")] = counts.get(r.get("status", "unknown"), 0) + 1
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if records:
        parts.append("<p>" + ", ".join(
            f"<span class='status-{html.escape(s)}'>{n} {html.escape(s)}</span>"
            for s, n in sorted(counts.items(), key=lambda kv: ORDER.get(kv[0], 9))) + f" of "
            f"{len(records)} participant(s).</p>")
    else:
        parts.append("<p class='missing'>No participant status records were found under "
                     "<code>logs/status/</code>: run the participant level first.</p>")
    rows = []
    for r in records:
        label = str(r.get("participant", "?")).removeprefix("sub-")
        status = str(r.get("status", "unknown"))
        reasons = [str(x) for x in (r.get("reasons") or [])]
        crashes = [_rel(out_dir, c) for c in (r.get("crash_files") or [])]
        report = (_link(out_dir, f"sub-{label}.html", "report")
                  if status not in ("excluded",) or (out_dir / f"sub-{label}.html").exists()
                  else "none")
        problems = "<br>".join(html.escape(x) for x in reasons)
        if crashes:
            problems += ("<br>" if problems else "") + "crash file(s): " + ", ".join(
                _link(out_dir, c, Path(c).name) for c in crashes)
        rows.append([
            f"sub-{html.escape(label)}", f"<span class='status-{html.escape(status)}'>"
            f"{html.escape(status)}</span>", html.escape(_runtime(r.get("runtime_s"))),
            html.escape(fmt(r.get("started"))), html.escape(fmt(r.get("run_id"))), report,
            problems or "",
        ])
    if rows:
        parts.append(table(["participant", "status", "own time", "started (UTC)", "run",
                            "report", "reason / crash file"], rows, text_columns=7, raw=True)
                     + "<p class='explain'>own time: the participant's own processing time, "
                     "the sum of its steps' run times (participants run side by side share "
                     "the machine; steps found in the cache of an earlier run count "
                     "little or nothing). started: when the run started it.</p>")
    group_report = out_dir / "group" / "group_report.html"
    if group is not False:
        parts.append("<h2>Group level</h2>" + (
            f"<p>{_link(out_dir, 'group/group_report.html', 'group report')}</p>"
            if group_report.exists() else
            "<p class='note'>No group report yet: run <code>bids_harmonize BIDS OUT group</code>"
            ".</p>"))
    logs = [p for p in ("logs/CITATION.md", "logs/CITATION.bib") if (out_dir / p).exists()]
    configs = sorted((out_dir / "logs").glob("config-*.toml")) if (out_dir / "logs").is_dir() else []
    if logs or configs:
        parts.append("<h2>Run records</h2><ul>" + "".join(
            f"<li>{_link(out_dir, p)}</li>" for p in logs + [_rel(out_dir, c) for c in configs[-5:]])
            + "</ul>")
    return page(title, parts)


def records_on_disk(out_dir: Path) -> list[dict]:
    """Status records (:func:`bids_harmonize.runstatus.read_status`) plus subjects without one."""
    from bids_harmonize.runstatus import read_status

    out_dir = Path(out_dir)
    records = read_status(out_dir)
    known = {str(r.get("participant")) for r in records}
    for sub in sorted(out_dir.glob("sub-*")):
        label = sub.name.removeprefix("sub-").removesuffix(".html")
        if label not in known and (sub.is_dir() or sub.suffix == ".html"):
            known.add(label)
            crashes = sorted(c.relative_to(out_dir).as_posix()
                             for c in (out_dir / f"sub-{label}").glob("log/*/crash-*"))
            records.append({"participant": label, "status": "unknown",
                            "reasons": ["no status record under logs/status/"], "crash_files":
                            crashes})
    return records


def write_run_summary(out_dir: Path, records: list[dict] | None = None) -> Path:
    """Write ``<out>/index.html`` from the status records (read from disk when not given)."""
    out_dir = Path(out_dir)
    records = records_on_disk(out_dir) if records is None else records
    out = out_dir / "index.html"
    atomic_write_text(out, render_run_summary(records, out_dir))
    LOGGER.info("Run summary written to %s (%d participant(s))", out, len(records))
    return out


__all__ = ["render_run_summary", "records_on_disk", "write_run_summary"]
