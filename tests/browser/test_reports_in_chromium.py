"""Every report page of the demo output, opened in headless Chromium.

A page fails on: a console error or an uncaught script error, an image that did
not load, a link to a file or anchor that is not there, a figure (image or
inline SVG) that did not render to a visible size, Python reprs in the text
(``np.float64(``, ``array(``), raw Markdown citations (``[@key]``), or a
missing piece the page should have. Each page's full screenshot is saved. The
same demo run also checks that docs/outputs.rst names every output file kind and
sidecar field.

``BH_DEMO_OUT=/path/to/out`` reuses an existing demo output instead of running
``participant`` and ``group`` (about two minutes on two cores). Screenshots go
to ``$BH_ARTEFACTS`` when set, else to a folder under pytest's temporary root.
Chromium is Debian's (``apt-get install chromium``), driven by Playwright's
Python package through ``executable_path``: no browser is ever downloaded
(never ``playwright install``). The fixtures live here, not in a conftest.py:
a ``tests/browser/conftest.py`` would be imported before ``tests/conftest.py``
and clash with it under ``--doctest-modules`` (both are module ``conftest``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.browser

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _chromium() -> str | None:
    env = os.environ.get("BH_CHROMIUM")
    if env:
        return env
    return next((c for c in CHROMIUM_CANDIDATES if Path(c).exists()), shutil.which("chromium"))


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Path:
    """Where screenshots are saved (kept after the run)."""
    folder = (Path(os.environ["BH_ARTEFACTS"]) if os.environ.get("BH_ARTEFACTS")
              else tmp_path_factory.mktemp("browser-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory, templateflow_home) -> Path:
    """The README demo's output: 2 simulated PiB subjects, participant (--sloppy) and group."""
    if os.environ.get("BH_DEMO_OUT"):
        out = Path(os.environ["BH_DEMO_OUT"])
        if not (out / "index.html").is_file():
            pytest.fail(f"BH_DEMO_OUT={out} has no index.html: not a finished demo output")
        return out
    root = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(templateflow_home)}
    bindir = Path(sys.executable).parent
    steps = [
        [bindir / "bids_harmonize-synth", root / "bids", "--subjects", "2", "--tracers", "PiB",
         "--seed", "0", "--overwrite"],
        [bindir / "bids_harmonize", root / "bids", root / "out", "participant", "--output-spaces",
         "MNI152NLin2009aSym", "T1w", "--sloppy", "-w", root / "work", "--nprocs", "2"],
        [bindir / "bids_harmonize", root / "bids", root / "out", "group"],
    ]
    for cmd in steps:
        done = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True,
                              timeout=1200)
        assert done.returncode == 0, f"{cmd[0].name} failed:\n{done.stderr[-3000:]}"
    return root / "out"


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's), or a skip that says what to install."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright "
                                   "(the 'browser' extra)")
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium: apt-get install chromium (or set BH_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


REPRS = ("np.float64(", "np.float32(", "np.int64(", "array(", "np.True_", "np.False_",
         "Timestamp(", "dtype=")
MIN_FIGURE_PX = 60

#: Text each kind of page must show (the demo is two paired PiB subjects).
EXPECTED = {
    "index.html": ["sub-01", "sub-02", "group report"],
    "sub-01.html": ["PET-MR against PET-CT", "Regional SUVR bias", "References",
                    "Registration to the template", "Methods"],
    "group/group_report.html": ["Agreement with 95% confidence intervals",
                                "By site, scanner and attenuation correction", "Cut-off transfer",
                                "Uncertainty and out-of-distribution checks"],
}


def _pages(out: Path) -> list[Path]:
    return [out / "index.html", *sorted(out.glob("sub-*.html")), out / "group" / "group_report.html"]


def check_page(browser, page_file: Path, out: Path, shots: Path) -> list[str]:
    """Open one page and return what is wrong with it (empty when nothing)."""
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")

    for img in page.eval_on_selector_all(
            "img", "els => els.map(e => ({src: e.getAttribute('src'), ok: e.complete && "
            "e.naturalWidth > 0, w: e.getBoundingClientRect().width, "
            "h: e.getBoundingClientRect().height}))"):
        if not img["ok"]:
            problems.append(f"image did not load: {img['src']}")
        elif min(img["w"], img["h"]) < MIN_FIGURE_PX:
            problems.append(f"image rendered too small ({img['w']:.0f}x{img['h']:.0f}): "
                            f"{img['src']}")
    for box in page.eval_on_selector_all(
            "figure > svg", "els => els.map(e => [e.getBoundingClientRect().width, "
            "e.getBoundingClientRect().height, e.querySelectorAll('path,text,use').length])"):
        if min(box[0], box[1]) < MIN_FIGURE_PX or box[2] == 0:
            problems.append(f"inline SVG figure did not render: {box}")

    ids = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
    for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
        url = urlparse(href)
        if url.scheme in ("http", "https", "mailto"):
            problems.append(f"link leaves the output (reports must work offline): {href}")
            continue
        if href.startswith("#"):
            if href[1:] not in ids:
                problems.append(f"link to a missing anchor: {href}")
            continue
        target = (page_file.parent / unquote(url.path)).resolve()
        if not target.exists():
            problems.append(f"broken link: {href}")
        elif out.resolve() not in target.parents:
            problems.append(f"link outside the output folder: {href}")

    text = page.inner_text("body")
    problems += [f"Python repr in the text: {r!r}" for r in REPRS if r in text]
    if re.search(r"\[@[\w:.-]+", text):
        problems.append("raw Markdown citation ([@key]) in the text")
    if re.search(r"(?<![\w*])\*[A-Za-z_]+\*(?![\w*])", text):
        problems.append("raw Markdown emphasis (*word*) in the text")
    rel = page_file.relative_to(out).as_posix()
    key = rel if rel in EXPECTED else ("sub-01.html" if rel.startswith("sub-") else rel)
    problems += [f"missing on the page: {t!r}" for t in EXPECTED.get(key, []) if t not in text]
    shot = shots / (rel.replace("/", "_").replace(".html", "") + ".png")
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    return problems


def test_demo_has_every_report_page(demo_out):
    missing = [p.relative_to(demo_out).as_posix() for p in _pages(demo_out) if not p.is_file()]
    assert not missing, f"report pages not written: {missing}"
    assert len(list(demo_out.glob("sub-*.html"))) == 2


@pytest.mark.parametrize("which", ["index", "sub-01", "sub-02", "group"])
def test_page_renders_cleanly(browser, demo_out, artefacts, which):
    page_file = {"index": demo_out / "index.html", "group": demo_out / "group" / "group_report.html"
                 }.get(which, demo_out / f"{which}.html")
    problems = check_page(browser, page_file, demo_out, artefacts)
    assert not problems, f"{page_file.name}:\n" + "\n".join(problems)
    assert (artefacts / (page_file.relative_to(demo_out).as_posix().replace("/", "_")
                         .replace(".html", "") + ".png")).stat().st_size > 10_000


def test_the_checks_catch_a_broken_page(browser, demo_out, artefacts, tmp_path):
    """The checker itself: a page with every fault is reported on each of them."""
    bad = demo_out / "zz-broken-check.html"
    bad.write_text(
        "<html><body><h1>broken</h1><img src='nope.svg'><a href='gone.html'>x</a>"
        "<a href='#nowhere'>y</a><p>value np.float64(2.0) and [@ants] and *bids_harmonize*</p>"
        "<script>console.error('boom')</script></body></html>")
    try:
        problems = "\n".join(check_page(browser, bad, demo_out, tmp_path))
    finally:
        bad.unlink()
    for expected in ("image did not load: nope.svg", "broken link: gone.html",
                     "missing anchor: #nowhere", "np.float64(", "[@key]", "*word*",
                     "console error: boom"):
        assert expected in problems, (expected, problems)


def test_failed_and_broken_participants_render_with_their_reasons(browser, demo_out, tmp_path,
                                                                  artefacts):
    """A run with a failed, an excluded and a half-written participant: pages still clean."""
    from bids_harmonize.reports.runsummary import write_run_summary
    from bids_harmonize.reports.subject import build_subject_report

    out = tmp_path / "out"
    shutil.copytree(demo_out / "sub-02", out / "sub-02")
    (out / "sub-02" / "anat" / "sub-02_desc-brain_mask.nii.gz").unlink()
    shutil.rmtree(out / "sub-02" / "figures")
    crash = out / "sub-02" / "log" / "r1" / "crash-20261128-static.txt"
    crash.parent.mkdir(parents=True)
    crash.write_text("Traceback (most recent call last): ...")
    build_subject_report(out, "02", errors=[f"crashed: {crash.name}"])
    write_run_summary(out, records=[
        {"participant": "02", "status": "failed", "runtime_s": 61.0, "run_id": "r1",
         "reasons": ["node static crashed: no frame inside the uptake window"],
         "crash_files": [str(crash)]},
        {"participant": "03", "status": "excluded", "reasons": ["PET-MR but no T1w"]},
        {"participant": "04", "status": "incomplete",
         "reasons": ["outputs may be partial: the last run did not finish"]},
    ])
    shots = artefacts / "broken-run"
    shots.mkdir(exist_ok=True)
    for page in ("index.html", "sub-02.html"):
        problems = [p for p in check_page(browser, out / page, out, shots)
                    if not p.startswith("missing on the page")]
        assert not problems, f"{page}:\n" + "\n".join(problems)
    index = (out / "index.html").read_text()
    assert "no frame inside the uptake window" in index and "crash-20261128-static.txt" in index
    assert "PET-MR but no T1w" in index and "the last run did not finish" in index
    report = (out / "sub-02.html").read_text()
    assert "brain mask sub-02_desc-brain_mask.nii.gz is missing" in report


# --------------------------------------------------------------------------- docs

OUTPUTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "outputs.rst"


def test_every_sidecar_field_is_documented(demo_out):
    doc = OUTPUTS_DOC.read_text()
    fields = set()
    for sidecar in [demo_out / "dataset_description.json", *demo_out.glob("sub-*/**/*.json")]:
        meta = json.loads(sidecar.read_text())
        fields |= set(meta)
        for value in meta.values():  # nested records (Harmonization, OODComponents)
            if isinstance(value, dict) and sidecar.name.endswith("_pet.json"):
                fields |= {k for k in value if k[:1].isupper()}
    missing = sorted(f for f in fields if f"``{f}``" not in doc)
    assert not missing, f"sidecar fields not in docs/outputs.rst: {missing}"


def test_every_kind_of_output_file_is_documented(demo_out):
    doc = OUTPUTS_DOC.read_text()
    kinds = set()
    for path in demo_out.rglob("*"):
        rel = path.relative_to(demo_out)
        if path.is_dir() or rel.parts[0] in ("work",) or path.suffix == ".json":
            continue
        name = path.name
        # the part of the name the docs talk about: suffix and desc, or the file itself
        desc = re.search(r"desc-([A-Za-z0-9]+)", name)
        suffix = re.sub(r"\..*$", "", name.split("_")[-1])
        key = (f"desc-{desc[1]}" if desc and rel.parts[0].startswith("sub-")
               and "figures" not in rel.parts else suffix)
        if rel.parts[0] == "group" or rel.parts[0] == "logs":
            key = name if "config-" not in name else "config-"
            key = re.sub(r"^trc-.*", "group/figures/", key) if "figures" in rel.parts else key
        if "figures" in rel.parts and rel.parts[0].startswith("sub-"):
            key = "figures/"
        if len(rel.parts) == 1:  # top level: README.md, index.html, sub-<s>.html, ...
            key = re.sub(r"^sub-[^.]+\.html$", "sub-<s>.html", name)
        kinds.add(key)
    missing = sorted(k for k in kinds if k not in doc)
    assert not missing, f"output files not in docs/outputs.rst: {missing}"
