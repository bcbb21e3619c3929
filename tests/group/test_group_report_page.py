"""The group report page as a reader sees it (issue 21): a methods section with references,
a link back to the run summary, readable wrapping headers, one way of writing the cut-off."""

import re

from test_group_run import make_dataset

from bids_harmonize.group.run import run_group


def test_group_report_has_methods_link_back_readable_headers_and_one_cutoff(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "CITATION.md").write_text("Results were produced with ...\n")
    run_group(tmp_path)
    page = (tmp_path / "group" / "group_report.html").read_text()
    text = re.sub(r"<svg.*?</svg>", "", page, flags=re.S)
    # back to the run summary, and a methods section with its references and the
    # participant level's methods text
    assert "<a href='../index.html'>Run summary</a>" in text
    methods = text.split("<h2 id='methods'>Methods</h2>")[1]
    assert "Bland, J. Martin" in methods and "McGraw" in methods and "Cohen, Jacob" in methods
    assert "[@" not in methods and "<a href='../logs/CITATION.md'>" in methods
    # readable, wrapping headers instead of raw column names
    for header in ("<th>Pearson r</th>", "<th>Spearman rho</th>", "<th>ICC(2,1)</th>",
                   "<th>% agreement</th>"):
        assert header in text, header
    for raw in ("<th>pearson_r</th>", "<th>spearman_rho</th>", "<th>icc_2_1</th>"):
        assert raw not in text, raw
    assert "table.group-table th{max-width:7em;white-space:normal" in text
    assert "group-table" in text.split("Agreement of the summary measures")[1][:3000]
    # the cut-off is written as given, in the table and in the figure's legend
    cutoffs = set(re.findall(r"<td>(\d+\.\d+)</td>\s*<td>at or above</td>", text))
    assert cutoffs and all(not c.endswith("0") for c in cutoffs), cutoffs
    figure = (tmp_path / "group" / "figures" / "trc-PiB_seg-synth_cutoff.svg").read_text()
    assert all(f"cut-off {c}" in figure for c in cutoffs)


def test_group_report_without_participant_methods_says_so(tmp_path):
    make_dataset(tmp_path)
    run_group(tmp_path)
    page = (tmp_path / "group" / "group_report.html").read_text()
    assert "No participant-level methods text was found" in page
