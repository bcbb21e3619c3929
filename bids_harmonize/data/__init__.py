"""Package data: tracer, atlas and scanner tables, and the shipped demo model."""
