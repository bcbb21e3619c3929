"""Every file kind and sidecar field of the demo output is documented in docs/outputs.rst."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

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
