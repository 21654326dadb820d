"""avasr: align a speech encoder with image representations before ASR fine-tuning."""

__version__ = "0.1.0"
