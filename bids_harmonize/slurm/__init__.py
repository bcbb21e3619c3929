"""Running bids_harmonize on SLURM clusters.

:mod:`~bids_harmonize.slurm.recipe` renders the sbatch scripts (a participant job
array, the dependent group job, multi-node training), :mod:`~bids_harmonize.slurm.scheduler`
wraps SLURM's client commands, and :mod:`~bids_harmonize.slurm.cli` is the
``bids_harmonize-slurm`` command. The Nipype SLURM plugins used from inside one
run (``--nipype-plugin SLURM``) are wired in :mod:`bids_harmonize.execution`.
"""
