"""jettag.models (see DESIGN.md module map)."""
