"""clipcli: zero-shot image classification and photo search with CLIP."""

__version__ = "0.1.0"
