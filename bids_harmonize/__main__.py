"""``python -m bids_harmonize`` runs the BIDS App."""

from bids_harmonize.cli.run import main

if __name__ == "__main__":
    raise SystemExit(main())
