"""Data files shipped with `core` (the synthetic generator's fitted profile)."""
