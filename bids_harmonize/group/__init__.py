"""Group level: collect participant tables, PET-MR vs PET-CT agreement, group report."""
