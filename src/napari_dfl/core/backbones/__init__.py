"""Frozen pretrained backbones: presets, weight sources, safe loading, devices, fine-tuning."""
