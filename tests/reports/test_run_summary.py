"""The run summary page from status records (plain dicts and runstatus records on disk)."""

from __future__ import annotations

from bids_harmonize.reports.runsummary import records_on_disk, render_run_summary, write_run_summary
from bids_harmonize.runstatus import finish_record, new_record, write_status


def test_every_participant_with_status_runtime_report_reason_and_crash_file(tmp_path):
    (tmp_path / "sub-01.html").write_text("x")
    crash = tmp_path / "sub-02" / "log" / "r1" / "crash-20261128-pet.txt"
    crash.parent.mkdir(parents=True)
    crash.write_text("Traceback")
    records = [
        {"participant": "01", "status": "ok", "reasons": [], "crash_files": [],
         "run_id": "r1", "started": "2026-11-28T03:00:00+00:00", "runtime_s": 185.2},
        {"participant": "02", "status": "failed", "run_id": "r1", "runtime_s": 42,
         "reasons": ["node pet_ses_petmr_wf.static crashed: ValueError: no frame in window"],
         "crash_files": ["sub-02/log/r1/crash-20261128-pet.txt"]},
        {"participant": "03", "status": "excluded", "reasons": ["no T1w anywhere"],
         "crash_files": []},
    ]
    html = render_run_summary(records, tmp_path)
    assert html.index("sub-02") < html.index("sub-03") < html.index("sub-01")  # failures first
    assert "<a href='sub-01.html'>report</a>" in html and "3 min 05 s" in html
    assert "no frame in window" in html
    assert "<a href='sub-02/log/r1/crash-20261128-pet.txt'>crash-20261128-pet.txt</a>" in html
    assert "no T1w anywhere" in html and "1 failed" in html and "1 ok" in html
    assert "sub-02.html (missing)" in html  # sub-02 has no report file
    assert "No group report yet" in html


def test_records_from_runstatus_and_subjects_without_a_record(tmp_path):
    rec = finish_record(new_record("01", run_id="r2"), "failed", reasons=["out of memory"],
                        crash_files=[str(tmp_path / "sub-01" / "log" / "crash-a.txt")])
    write_status(tmp_path, rec)
    (tmp_path / "sub-05").mkdir()
    records = records_on_disk(tmp_path)
    assert [(r["participant"], r["status"]) for r in records] == [("01", "failed"),
                                                                  ("05", "unknown")]
    page = write_run_summary(tmp_path).read_text()
    assert "out of memory" in page and "no status record under logs/status/" in page
    assert "sub-01/log/crash-a.txt (missing)" in page  # shown relative to the output folder


def test_no_records_says_so(tmp_path):
    html = render_run_summary([], tmp_path)
    assert "No participant status records were found" in html


def test_runtime_column_is_each_participants_own_time_and_says_so(tmp_path):
    records = [{"participant": "01", "status": "ok", "runtime_s": 61},
               {"participant": "02", "status": "ok", "runtime_s": 7}]
    html = render_run_summary(records, tmp_path)
    assert ">own time</th>" in html and ">runtime</th>" not in html and "1 min 01 s" in html and "7 s" in html
    assert "the sum of its steps' run times" in html
