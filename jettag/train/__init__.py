"""jettag.train (see DESIGN.md module map)."""
