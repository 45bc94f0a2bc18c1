"""Annotations (QuPath GeoJSON dialect), the samples they yield, and labelled datasets."""
