"""bids_harmonize: make PET-MR brain PET quantitatively interchangeable with PET-CT."""

from bids_harmonize.__about__ import __version__

__all__ = ["__version__"]
