"""Multimodal (image-caption) intermediate tasks: caption datasets, vision features, heads."""
