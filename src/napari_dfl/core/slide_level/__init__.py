"""Slide-level learning from one label per slide: embedding grids and attention MIL."""
