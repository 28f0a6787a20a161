"""Examples a product team copies: each folder runs as ``python -m examples.<name>``."""
