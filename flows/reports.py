"""What a run shows in the Prefect UI: validation outcomes and metrics, a Data Docs link, a link to
the Lance version, and two plots (PCA map, drift histogram) saved as PNG and inlined in markdown."""

import base64
import math

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from embedline.storage import catalog, files
from embedline.workspace import Workspace
from embedline.tasks import plots


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
        key=f"quality-{space.replace('_', '-')}",
        description="RankMe, isotropy, duplicates, drift, golden recall",
    )
    if report.docs_url and files.is_remote(report.docs_url):  # s3://: no browser opens it as a link
        create_markdown_artifact(f"GX Data Docs of run {run_id}: `{report.docs_url}`",
                                 key=f"data-docs-{space.replace('_', '-')}")
    elif report.docs_url:
        create_link_artifact(
            report.docs_url, link_text="GX Data Docs", key=f"data-docs-{space.replace('_', '-')}"
        )


def publish_version_artifacts(ws: Workspace, space: str, run_id: int, version: int | None,
                              changed_doc_ids: list[str], color_by: str | None = None) -> list[str]:
    """Link the Lance version and plot it; returns the PNG files written under <store>/reports/plots (the
    file store: the home unless Lance or EMBEDLINE_STORE_URI is on an object store)."""
    if version is None:
        return []
    key = space.replace("_", "-")
    uri = f"{ws.lance_uri.rstrip('/')}/{space}.lance"
    create_link_artifact(uri if "://" in uri else f"file://{uri}", key=f"lance-{key}",
                         link_text=f"Lance {space} version {version} (tag run-{run_id})",
                         description=f"lance.dataset({uri!r}, version='run-{run_id}')")
    previous = catalog.latest_passed_version(ws, space, before=version)
    pictures = {"pca": plots.pca_map(ws, space, version, color_by)[0],
                "drift": plots.drift_histogram(ws, space, version, previous, changed_doc_ids)}
    store = files.open_store(ws)
    written, sections = [], []
    for name, png in pictures.items():
        if png is None:
            why = "The version has too few chunks to plot." if name == "pca" else \
                "No previous version shares documents with this one: nothing drifted."
            sections.append(f"#### {name}\n\n{why}")
            continue
        stored = f"reports/plots/{space}-run-{run_id}-{name}.png"
        store.write_bytes(stored, png)
        path = store.uri_of(stored)
        written.append(path)
        sections.append(
            f"#### {name} ({path})\n\n![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
        )
    create_markdown_artifact("\n\n".join(sections), key=f"plots-{key}",
                             description=f"PCA map and drift histogram of {space} version {version}")
    return written


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return "n/a" if value is None else str(value)
