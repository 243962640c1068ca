"""Persistence: the only package that imports lancedb, lance or duckdb.

Importing this package is free; each module imports its engine lazily where it is used.
"""
