"""jettag.metrics (see DESIGN.md module map)."""
