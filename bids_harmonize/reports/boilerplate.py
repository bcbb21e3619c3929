"""Methods boilerplate: the workflows' ``__desc__`` paragraphs, rendered with references.

Each ``init_*_wf`` factory writes one or two sentences of methods text in its
``workflow.__desc__`` with Pandoc-style citation keys (``[@ants]``) and Markdown
emphasis (``*bids_harmonize*``), as in fMRIPrep.  This module turns them into

- paragraphs (one per workflow, de-duplicated, in graph order),
- HTML with numbered citations and a reference list,
- plain text with the same numbering, for copying into a paper,
- BibTeX of the cited works (``bids_harmonize/data/references.bib``).

Only the few Markdown forms the descriptions use are supported: ``*em*``,
``**strong**``, ```code``` and ``[@key]`` / ``[@a; @b]``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from bids_harmonize.safeio import atomic_write_text

_CITE = re.compile(r"\[(@[\w:.-]+(?:\s*;\s*@[\w:.-]+)*)\]")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Reference:
    """One BibTeX entry: its key, its type, its fields and its source text."""

    key: str
    kind: str
    fields: dict
    bibtex: str


def parse_bibtex(text: str) -> dict[str, Reference]:
    """Entries of a BibTeX file by key (fields with braces or quotes; no @string macros).

    >>> refs = parse_bibtex("@article{x1, title = {A {PET} study}, year = {2020}}")
    >>> refs["x1"].fields["title"], refs["x1"].fields["year"]
    ('A PET study', '2020')
    """
    refs: dict[str, Reference] = {}
    pos = 0
    while (start := text.find("@", pos)) >= 0:
        brace = text.find("{", start)
        if brace < 0:
            break
        depth, end = 0, brace
        for end in range(brace, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        body = text[brace + 1:end]
        kind = text[start + 1:brace].strip().lower()
        key, _, rest = body.partition(",")
        refs[key.strip()] = Reference(key.strip(), kind, _fields(rest), text[start:end + 1])
        pos = end + 1
    return refs


def _fields(body: str) -> dict:
    fields, i = {}, 0
    while (eq := body.find("=", i)) >= 0:
        name = body[i:eq].strip(" ,\n\t").lower()
        j = eq + 1
        while body[j] in " \t\n":
            j += 1
        if body[j] in "{\"":
            close = {"{": "}", '"': '"'}[body[j]]
            depth, k = 0, j
            for k in range(j, len(body)):
                if body[k] == "{" or (close == '"' and body[k] == '"' and k == j):
                    depth += 1
                elif body[k] == close or (close == '"' and body[k] == '"'):
                    depth -= 1
                if depth == 0:
                    break
            value, i = body[j + 1:k], k + 1
        else:
            k = body.find(",", j)
            k = len(body) if k < 0 else k
            value, i = body[j:k].strip(), k + 1
        fields[name] = re.sub(r"\s+", " ", value.replace("{", "").replace("}", "")
                              .replace("\\&", "&")).strip()
    return fields


@lru_cache(maxsize=1)
def default_references() -> dict[str, Reference]:
    """The references the workflows cite (``bids_harmonize/data/references.bib``)."""
    text = resources.files("bids_harmonize").joinpath("data/references.bib").read_text()
    return parse_bibtex(text)


def collect_descriptions(workflow) -> list[str]:
    """One paragraph per ``LiterateWorkflow`` description, in graph order, without repeats.

    niworkflows' ``visit_desc`` joins the same texts with nothing in between
    (``...workflow.The T1-weighted...``); this keeps them apart.
    """
    from nipype.pipeline.engine.utils import topological_sort

    out: list[str] = []

    def visit(wf):
        for text in (getattr(wf, "__desc__", None),):
            if text and text.strip() not in out:
                out.append(text.strip())
        graph = getattr(wf, "_graph", None)
        if graph is not None:
            for node in topological_sort(graph)[0]:
                if hasattr(node, "_graph"):
                    visit(node)
        post = getattr(wf, "__postdesc__", None)
        if post and post.strip() not in out:
            out.append(post.strip())

    visit(workflow)
    return drop_contained(out)


def drop_contained(paragraphs: list[str]) -> list[str]:
    """Drop a paragraph that another one repeats and extends (one PET session with a CT, one
    without, give the same sentence with and without a closing clause).

    >>> drop_contained(["Frames were averaged [@a].", "T1w done.",
    ...                 "Frames were averaged [@a]; the CT was registered likewise."])
    ['T1w done.', 'Frames were averaged [@a]; the CT was registered likewise.']
    >>> drop_contained(["Results.", "Results were produced."])
    ['Results.', 'Results were produced.']
    """
    def stem(p: str) -> str:
        return p.rstrip().rstrip(".")

    def extends(q: str, p: str) -> bool:
        head = stem(p)
        return q != p and len(q) > len(head) + 1 and q.startswith(head) and q[len(head)] in ";,:("

    return [p for p in paragraphs if not any(extends(q, p) for q in paragraphs)]


def cited_keys(paragraphs: list[str]) -> list[str]:
    """Citation keys in order of first appearance.

    >>> cited_keys(["A [@b; @a] and [@b].", "C [@c]."])
    ['b', 'a', 'c']
    """
    keys: list[str] = []
    for par in paragraphs:
        for group in _CITE.findall(par):
            for key in group.split(";"):
                key = key.strip().lstrip("@")
                if key not in keys:
                    keys.append(key)
    return keys


def _numbers(group: str, order: list[str]) -> list[tuple[str, int]]:
    keys = [k.strip().lstrip("@") for k in group.split(";")]
    return [(k, order.index(k) + 1) for k in keys]


def render_plain(paragraphs: list[str], order: list[str] | None = None) -> str:
    """Plain text: no Markdown marks, citations as ``[1, 2]``, a blank line between paragraphs.

    >>> print(render_plain(["Made with *tool* [@x].", "Then `y` [@z; @x]."]))
    Made with tool [1].
    <BLANKLINE>
    Then y [2, 1].
    """
    order = order or cited_keys(paragraphs)
    out = []
    for par in paragraphs:
        par = _CITE.sub(lambda m: "[" + ", ".join(str(n) for _, n in _numbers(m[1], order)) + "]",
                        par)
        par = _CODE.sub(r"\1", _EM.sub(r"\1", _STRONG.sub(r"\1", par)))
        out.append(par)
    return "\n\n".join(out)


def render_html(paragraphs: list[str], order: list[str] | None = None) -> str:
    """HTML paragraphs with ``<em>``, ``<code>`` and linked numbered citations.

    >>> render_html(["Made with *bids_harmonize* [@x]."])
    '<p>Made with <em>bids_harmonize</em> [<a href="#ref-x">1</a>].</p>'
    """
    order = order or cited_keys(paragraphs)
    out = []
    for par in paragraphs:
        text = html.escape(par, quote=False)
        text = _CODE.sub(r"<code>\1</code>", text)
        text = _STRONG.sub(r"<strong>\1</strong>", text)
        text = _EM.sub(r"<em>\1</em>", text)
        text = _CITE.sub(lambda m: "[" + ", ".join(
            f'<a href="#ref-{html.escape(k)}">{n}</a>' for k, n in _numbers(m[1], order)) + "]",
            text)
        out.append(f"<p>{text}</p>")
    return "\n".join(out)


def format_reference(ref: Reference | None, key: str) -> str:
    """One reference as plain text: authors (year). Title. Journal volume, pages. doi.

    >>> r = parse_bibtex("@article{k, author={Doe, J. and Roe, R.}, title={T}, journal={J},"
    ...                  " volume={1}, pages={2--3}, year={2020}, doi={10.1/x}}")["k"]
    >>> format_reference(r, "k")
    'Doe, J., Roe, R. (2020). T. J 1, 2-3. doi:10.1/x'
    >>> format_reference(parse_bibtex("@inproceedings{p, author={Doe, J.}, title={T}, "
    ...     "booktitle={Advances in NeurIPS}, volume={30}, year={2017}}")["p"], "p")
    'Doe, J. (2017). T. In Advances in NeurIPS 30.'
    """
    if ref is None:
        return f"{key} (no entry in the reference list)"
    f = ref.fields
    authors = ", ".join(a.strip() for a in f.get("author", "").split(" and ") if a.strip())
    venue = f.get("journal") or (f"In {f['booktitle']}" if f.get("booktitle") else "")
    where = " ".join(v for v in (venue, f.get("volume", "")) if v)
    if f.get("pages"):
        where += (", " if where else "") + f["pages"].replace("--", "-")
    if f.get("eprint"):
        where += (", " if where else "") + f"{f.get('archiveprefix', 'arXiv')}:{f['eprint']}"
    text = f"{authors} ({f.get('year', 'n.d.')}). {f.get('title', key)}."
    if where:
        text += f" {where}."
    if f.get("doi"):
        text += f" doi:{f['doi']}"
    return text


@dataclass
class Boilerplate:
    """The methods text in every form a report or a paper needs."""

    paragraphs: list[str]
    references: dict[str, Reference]

    @property
    def order(self) -> list[str]:
        return cited_keys(self.paragraphs)

    @property
    def missing(self) -> list[str]:
        """Cited keys without a BibTeX entry."""
        return [k for k in self.order if k not in self.references]

    def markdown(self) -> str:
        """Markdown with citations numbered like its reference list (``[1, 2]``, not ``[@key]``).

        >>> md = boilerplate_from(["Made with *tool* [@nipype]."]).markdown()
        >>> md.splitlines()[0], "[@" in md, md.splitlines()[4][:16]
        ('Made with *tool* [1].', False, '1. Gorgolewski, ')
        """
        order = self.order
        text = [_CITE.sub(lambda m: "[" + ", ".join(str(n) for _, n in _numbers(m[1], order))
                          + "]", par) for par in self.paragraphs]
        refs = "\n".join(f"{n}. {format_reference(self.references.get(k), k)}"
                         for n, k in enumerate(order, 1))
        return "\n\n".join(text) + ("\n\n## References\n\n" + refs if refs else "") + "\n"

    def plain(self) -> str:
        refs = "\n".join(f"[{n}] {format_reference(self.references.get(k), k)}"
                         for n, k in enumerate(self.order, 1))
        return render_plain(self.paragraphs, self.order) + ("\n\nReferences\n" + refs if refs
                                                            else "")

    def bibtex(self) -> str:
        return "\n\n".join(self.references[k].bibtex for k in self.order
                           if k in self.references) + "\n"

    def html(self) -> str:
        """Rendered text, reference list, and the plain text and BibTeX to copy."""
        if not self.paragraphs:
            return "<p>No methods description was recorded for this run.</p>"
        refs = "".join(
            f"<li id='ref-{html.escape(k)}'>{html.escape(format_reference(self.references.get(k), k))}"
            "</li>" for k in self.order)
        return (
            "<div class='boilerplate'>" + render_html(self.paragraphs, self.order) + "</div>"
            + (f"<h3>References</h3><ol class='refs'>{refs}</ol>" if refs else "")
            + "<details><summary>Plain text (to copy)</summary><textarea readonly rows='12' "
            f"aria-label='methods, plain text'>{html.escape(self.plain())}</textarea></details>"
            + "<details><summary>BibTeX</summary><textarea readonly rows='12' "
            f"aria-label='methods, BibTeX'>{html.escape(self.bibtex())}</textarea></details>"
        )


def boilerplate_from(paragraphs: list[str] | str) -> Boilerplate:
    """A :class:`Boilerplate` over the packaged references; a string is split at blank lines."""
    if isinstance(paragraphs, str):
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", paragraphs) if p.strip()]
    return Boilerplate(list(paragraphs), default_references())


def write_citation_files(logs_dir: Path, boilerplate: Boilerplate) -> list[Path]:
    """``CITATION.md``, ``CITATION.txt`` and ``CITATION.bib`` under ``logs_dir``."""
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("CITATION.md", boilerplate.markdown()),
                       ("CITATION.txt", boilerplate.plain() + "\n"),
                       ("CITATION.bib", boilerplate.bibtex())):
        atomic_write_text(logs_dir / name, text)
        written.append(logs_dir / name)
    return written
