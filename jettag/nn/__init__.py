"""jettag.nn (see DESIGN.md module map)."""
