"""Prefect flows (orchestration only) and the `embedline` CLI. Importing this package is free."""
