"""The group level: group tables, agreement statistics and the group report, from
participant outputs only."""

from __future__ import annotations

import logging
import sys

from bids_harmonize.app.common import UsageError, warn_incomplete
from bids_harmonize.app.record import write_run_summary
from bids_harmonize.config import RunConfig

LOGGER = logging.getLogger("bids_harmonize")


def run_group(config: RunConfig) -> int:
    """Group tables, agreement statistics and the group report from participant outputs."""
    from bids_harmonize.group.collect import NoParticipantTablesError
    from bids_harmonize.group.run import run_group as group

    if not config.output_dir.is_dir():
        raise UsageError(f"{config.output_dir} does not exist: run the participant level first")
    incomplete = warn_incomplete(config.output_dir, "group")
    try:
        written = group(config.output_dir, cutoffs=config.cutoffs or None)
    except (NoParticipantTablesError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    LOGGER.info("Group level wrote %d file(s) under %s", len(written), config.output_dir / "group")
    write_run_summary(config.output_dir)
    if incomplete:
        print("bids_harmonize: group tables leave out incomplete participant(s): "
              + ", ".join(f"sub-{s}" for s in incomplete), file=sys.stderr)
    return 0
