"""Validation: the only package that imports great_expectations (lazily: it costs seconds)."""
