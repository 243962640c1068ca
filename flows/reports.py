"""Validation results as Prefect artifacts: a table of outcomes, a markdown of metrics, a Data Docs link."""

import math

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact


def publish_validation_artifacts(report, space: str, run_id: int) -> None:
    key = f"validation-{space.replace('_', '-')}"
    create_table_artifact(
        [{"suite": o.suite, "expectation": o.expectation, "column": o.column or "", "success": o.success,
          "detail": o.detail} for o in report.outcomes],
        key=key, description=f"GX expectations of run {run_id}: {'passed' if report.passed else 'FAILED'}",
    )
    rows = "\n".join(f"| {name} | {_fmt(value)} |" for name, value in report.metrics.items())
    create_markdown_artifact(
        f"### Embedding quality, run {run_id} ({space})\n\n| metric | value |\n|---|---|\n{rows}\n",
        key=f"quality-{space.replace('_', '-')}", description="RankMe, isotropy, duplicates, drift, golden recall",
    )
    if report.docs_url:
        create_link_artifact(report.docs_url, link_text="GX Data Docs", key=f"data-docs-{space.replace('_', '-')}")


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return "n/a" if value is None else str(value)
