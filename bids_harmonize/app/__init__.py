"""The application layer: each analysis level from a run configuration to recorded results.

- :mod:`~bids_harmonize.app.plan`: the participant plan (every decision about a PET series,
  taken once) and the run's :class:`~bids_harmonize.app.plan.Settings`;
- :mod:`~bids_harmonize.app.participant`: pre-flight checks, plan, graph, run;
- :mod:`~bids_harmonize.app.record`: what a run records (status records, own times, crash
  reasons, reports and the run summary);
- :mod:`~bids_harmonize.app.group` and :mod:`~bids_harmonize.app.train`: the other levels;
- :mod:`~bids_harmonize.app.common`: what every level shares (usage errors, path checks).

The command line (:mod:`bids_harmonize.cli`) only parses and dispatches to these.
"""
