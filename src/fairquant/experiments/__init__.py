"""Experiments: studies that train, quantize and audit many cells into one run directory."""
