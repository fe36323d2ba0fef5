"""jettag.ops (see DESIGN.md module map)."""
