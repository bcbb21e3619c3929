"""Small HTML helpers shared by the reports: one style sheet, pages, numbers people can read.

Reports are static, self-contained HTML (no scripts from elsewhere, no fonts to
download): they open the same offline, from a cluster's file system or a zip.
"""

from __future__ import annotations

import html
import math
import numbers

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #aaa}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0;display:block;overflow-x:auto;
max-width:100%}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.text,th.text{text-align:left}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:0.5em 1em}
.missing{background:#fdecea;border-left:4px solid #c62828;padding:0.5em 1em}
.explain{color:#444;font-size:0.95em}figure{margin:1em 0}
svg,img.figure{max-width:100%;height:auto}img.figure{border:1px solid #ddd}
.status-ok{color:#1b7e3c;font-weight:600}.status-failed{color:#b00020;font-weight:600}
.status-excluded{color:#7a5b00;font-weight:600}.status-incomplete{color:#b35900;font-weight:600}
.status-running{color:#1f5fa8;font-weight:600}.status-unknown{color:#555;font-weight:600}
textarea{width:100%;font-family:ui-monospace,monospace;font-size:0.85em}
nav.toc{font-size:0.9em}nav.toc a{margin-right:1em}
"""


def fmt(value, digits: int = 3) -> str:
    """A number as people write it: no numpy reprs, ``n/a`` for missing.

    >>> import numpy as np
    >>> fmt(np.float64(2.0)), fmt(0.123456), fmt(np.int64(7)), fmt(None), fmt(float("nan"))
    ('2', '0.123', '7', 'n/a', 'n/a')
    >>> fmt((np.float64(2.0), np.float64(2.2))), fmt(12345.678), fmt(True), fmt("PiB")
    ('2, 2.2', '1.23e+04', 'yes', 'PiB')
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars of other kinds
        return fmt(value.tolist(), digits)
    return str(value)


def esc(value, digits: int = 3) -> str:
    """:func:`fmt`, escaped for HTML."""
    return html.escape(fmt(value, digits))


def page(title: str, body: list[str] | str) -> str:
    """A whole HTML page with the shared style."""
    body = "\n".join(body) if isinstance(body, list) else body
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            f"{body}\n</body></html>\n")


def table(header: list[str], rows: list[list], *, text_columns: int = 1, raw: bool = False) -> str:
    """A table; the first ``text_columns`` columns are left-aligned. ``raw``: cells are HTML."""
    def cell(tag, k, v):
        cls = " class='text'" if k < text_columns else ""
        return f"<{tag}{cls}>{v if raw else esc(v)}</{tag}>"

    head = "".join(cell("th", k, html.escape(h) if raw else h) for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", k, v) for k, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def missing(what: str) -> str:
    """A visible note that something expected is not there (a report never just breaks)."""
    return f"<p class='missing'>{html.escape(what)}</p>"
