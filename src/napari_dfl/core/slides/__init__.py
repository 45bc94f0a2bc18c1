"""Whole-slide images: readers (TIFF, plain images, OpenSlide), metadata, tissue, tiles.

Also cutting the patches of a sample (its composition of zooms and colour variants).
"""
