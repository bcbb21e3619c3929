"""What a participant run records: each participant's status and own time, crash reasons,
the subject reports, the methods text and the run summary."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

LOGGER = logging.getLogger("bids_harmonize")


class Progress:
    """Nipype ``status_callback``: a log line when a participant's stage has finished every
    node (a rerun that finds everything cached says so too), and each participant's own time.

    A stage is a sub-workflow of the subject's workflow (``anat_wf``, ``pet_<key>_wf``, ...).
    A participant's own time is the sum of its nodes' run times (from "start" to "end";
    a node found cached on the local plugins gets no "start": 0 s), so participants run in
    parallel do not each get the whole run's time. Plain data only: Nipype deep-copies and
    pickles the plugin arguments along with MapNodes.
    """

    def __init__(self, workflow, subjects):
        from nipype.interfaces.utility import IdentityInterface
        from nipype.pipeline.engine import JoinNode

        self.expected: dict[tuple[str, str], int] = {}
        for subject in subjects:
            sub_wf = workflow.get_node(f"sub_{subject}_wf")
            for child in sub_wf._graph.nodes():
                nodes = child._get_all_nodes() if hasattr(child, "_get_all_nodes") else [child]
                count = sum(1 for n in nodes if not (isinstance(n.interface, IdentityInterface)
                                                     and not isinstance(n, JoinNode)))
                if count:
                    self.expected[(subject, child.name)] = count
        self.done: dict[tuple[str, str], int] = {}
        self.started: dict[int, float] = {}
        self.busy: dict[str, float] = dict.fromkeys(subjects, 0.0)
        self.t0 = time.time()

    @staticmethod
    def where(node) -> tuple[str | None, str | None]:
        """(participant, stage) of a node of the flattened graph, from its hierarchy; a
        MapNode's sub-node (no hierarchy) by its work folder, without a stage."""
        parts = str(getattr(node, "_hierarchy", None) or "").split(".")
        if len(parts) >= 2 and parts[1].startswith("sub_") and parts[1].endswith("_wf"):
            return parts[1][4:-3], (parts[2] if len(parts) > 2 else node.name)
        folder = Path(str(getattr(node, "base_dir", None) or ""))
        sub = next((p for p in folder.parts if p.startswith("sub_") and p.endswith("_wf")), None)
        return (sub[4:-3] if sub else None), None

    def __call__(self, node, status: str) -> None:
        subject, stage = self.where(node)
        if subject is None:
            return
        name = id(node)  # the plugins pass the same node object to "start" and "end"
        now = time.time()
        if status == "start":
            self.started[name] = now
            return
        if name in self.started:
            self.busy[subject] = self.busy.get(subject, 0.0) + now - self.started.pop(name)
        key = (subject, stage)
        if stage is None or key not in self.expected:
            return
        self.done[key] = self.done.get(key, 0) + 1
        if self.done[key] != self.expected[key]:
            return
        stages = [k for k in self.expected if k[0] == subject]
        finished = sum(1 for k in stages if self.done.get(k, 0) >= self.expected[k])
        LOGGER.info("sub-%s: %s finished (%d node(s)%s); %d of %d stage(s) done, %.0f s into "
                    "the run", subject, stage, self.expected[key],
                    ", with a failure" if status == "exception" else "", finished,
                    len(stages), now - self.t0)

    def own_time(self, subject: str) -> float | None:
        """The participant's own time (seconds), None when none of its nodes reported."""
        return self.busy.get(subject)


def own_time(record: dict, progress: Progress | None) -> dict:
    """The record with ``runtime_s`` the participant's own time when it was measured (else
    the time from the start of the run, as :func:`runstatus.finish_record` sets it)."""
    own = progress.own_time(record["participant"]) if progress is not None else None
    return {**record, "runtime_s": round(own, 1)} if own is not None else record


def excluded_summary(excluded: dict[str, list[str]]) -> str:
    """``2 participant(s) excluded: sub-02 (reason; ...), sub-03 (...)`` in one line."""
    if not excluded:
        return ""
    parts = [f"sub-{s} ({reasons[0]}{f'; +{len(reasons) - 1} more' if len(reasons) > 1 else ''})"
             for s, reasons in sorted(excluded.items())]
    return f"{len(excluded)} participant(s) excluded for unusable inputs: " + ", ".join(parts)


def crash_reason(path: Path) -> str:
    """One line from a Nipype crash file: the node and the last line of its traceback."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return f"crashed: {path.name}"
    node = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Node:")),
                path.name)
    last = next((line for line in reversed(lines) if line and not line.startswith("File ")), "")
    return f"node {node} failed: {last[:200]}" if last else f"node {node} failed"


def write_reports(out: Path, plans, workflow, failed: list[str], crashes: dict) -> None:
    from bids_harmonize.reports.boilerplate import (
        boilerplate_from,
        collect_descriptions,
        write_citation_files,
    )
    from bids_harmonize.reports.subject import build_subject_report

    try:
        boilerplate = boilerplate_from(collect_descriptions(workflow))
    except Exception:  # descriptions are a courtesy; never fail a run on them
        LOGGER.warning("Methods boilerplate could not be collected", exc_info=True)
        boilerplate = boilerplate_from([])
    write_citation_files(out / "logs", boilerplate)
    for plan in plans:
        errors = []
        if plan.subject in failed:
            errors = [f"crashed: {c.name}" for c in crashes[plan.subject]]
            errors = errors or ["the workflow did not finish for this subject"]
        build_subject_report(out, plan.subject, boilerplate=boilerplate, errors=errors)
    write_run_summary(out)


def write_run_summary(out: Path) -> None:
    """``<out>/index.html``: every participant's status and report (never fails a run)."""
    from bids_harmonize.reports.runsummary import write_run_summary as write_summary

    try:
        write_summary(out)
    except Exception:
        LOGGER.warning("Run summary %s could not be written", out / "index.html", exc_info=True)


def open_records(out: Path, plans, excluded: dict, *, run_id: str) -> dict:
    """Mark every planned participant incomplete with a ``running`` record, and record the
    excluded ones; return the running records by participant."""
    from bids_harmonize import runstatus

    records = {}
    for plan in plans:
        runstatus.mark_incomplete(out, plan.subject, run_id=run_id)
        records[plan.subject] = runstatus.new_record(plan.subject, run_id=run_id)
        runstatus.write_status(out, records[plan.subject])
    for subject, reasons in excluded.items():
        record = runstatus.new_record(subject, run_id=run_id, status="excluded", reasons=reasons)
        runstatus.write_status(out, runstatus.finish_record(record, "excluded"))
    return records


def failed_participants(out: Path, plans, *, run_id: str, error, workflow) -> tuple[set, dict]:
    """Participants that failed (crash files, or nodes of theirs that did not finish when
    Nipype stopped with ``error``) and every participant's crash files."""
    from bids_harmonize.execution import unfinished_nodes

    crashes = {p.subject: sorted((out / f"sub-{p.subject}" / "log" / run_id).glob("crash-*"))
               for p in plans}
    failed = {s for s, files in crashes.items() if files}
    if error is not None:
        unfinished = unfinished_nodes(workflow)
        LOGGER.error("Nipype stopped with %s: %s", type(error).__name__,
                     str(error).strip().splitlines()[0] if str(error).strip() else "(no message)")
        if unfinished:
            LOGGER.error("%d node(s) did not finish: %s%s", len(unfinished),
                         ", ".join(unfinished[:10]), " ..." if len(unfinished) > 10 else "")
        failed |= {p.subject for p in plans
                   if any(n.split(".")[1:2] == [f"sub_{p.subject}_wf"] for n in unfinished)}
        failed = failed or {p.subject for p in plans}
    return failed, crashes


def close_records(out: Path, plans, records: dict, failed: set, crashes: dict, *, error,
                  progress: Progress | None) -> dict[str, list[str]]:
    """Finish each participant's record (``ok`` or ``failed`` with its reasons and crash
    files) with its own time; clear the incomplete marker when every file written is whole.
    Returns the failed participants' reasons."""
    from bids_harmonize import runstatus

    failure_reasons = {}
    for plan in plans:
        record = records[plan.subject]
        if plan.subject in failed:
            files = crashes[plan.subject]
            reasons = [crash_reason(f) for f in files] or [
                "the workflow did not finish for this participant"
                + (f" ({type(error).__name__})" if error is not None else "")]
            failure_reasons[plan.subject] = reasons
            record = runstatus.finish_record(
                record, "failed", reasons=reasons,
                crash_files=[f.relative_to(out).as_posix() for f in files])
            runstatus.write_status(out, own_time(record, progress))
            if files:  # nodes failed and the run went on: every file written is whole
                runstatus.clear_incomplete(out, plan.subject)
        else:
            record = runstatus.finish_record(record, "ok")
            runstatus.write_status(out, own_time(record, progress))
            runstatus.clear_incomplete(out, plan.subject)
    return failure_reasons


def report_problems(out: Path, plans, *, excluded: dict, held: dict, skipped: list,
                    failed: list, reasons: dict[str, list[str]], run_id: str) -> int:
    """Print who was skipped, excluded, locked or failed; the exit status (1 if any).

    Each failed participant's line carries its first reason (:func:`close_records`), cut
    to one short line: it says why, not only where to look (a full disk, a node's error).
    """
    if skipped:
        print("Skipped: " + "; ".join(skipped), file=sys.stderr)
    problems = []
    if excluded:
        problems.append(excluded_summary(excluded))
    if held:
        problems.append(f"{len(held)} participant(s) locked by another run: "
                        + ", ".join(f"sub-{s}" for s in sorted(held)))
    if failed:
        first = {s: str(r[0]).splitlines()[0][:160] for s, r in reasons.items() if r}
        problems.append(f"{len(failed)} of {len(plans)} subject(s) failed: "
                        + ", ".join(f"sub-{s} ({first[s] + '; ' if s in first else ''}"
                                    f"see {out / f'sub-{s}' / 'log' / run_id})"
                                    for s in failed))
    if problems:
        print("bids_harmonize: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0
