"""jettag.hub (see DESIGN.md module map)."""
