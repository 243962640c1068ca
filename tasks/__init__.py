"""Units of work as plain functions. Nothing here imports Prefect; flows wrap these as tasks."""
