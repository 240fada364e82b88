"""Diffusion samplers, training modules, callbacks and metrics (see DESIGN.md)."""
