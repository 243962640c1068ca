"""The GX suites a space's batch must pass before it may be promoted.

Three suites per space, each on a frame without vector columns (GX would pickle them):
- `<space>.chunks`: one row per chunk (ids, dim, norm, finite, text length, model key);
- `<space>.run_summary`: the run's counts, which must reconcile;
- `<space>.quality`: one row of embedding metrics (RankMe, isotropy, near-duplicates, drift, golden recall).
With a report folder, the context is a file context there and every run updates its Data Docs.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Expectations:
    """What a good batch looks like for one model (thresholds overridable per call)."""

    dim: int
    model_key: str
    normalized: bool = True
    norm_tolerance: float = 1e-3
    min_effective_rank: float = 2.0
    max_near_duplicate_rate: float = 0.5
    min_drift_cosine: float = 0.99  # the same chunk text must keep its vector
    min_golden_recall: float = 0.5


# The thresholds a corpus may set (deploy/corpora.yaml `gates:`, `Embedline.gates`, `ingest(gates=...)`).
GATES = (
    "norm_tolerance",
    "min_effective_rank",
    "max_near_duplicate_rate",
    "min_drift_cosine",
    "min_golden_recall",
)


# The values each threshold may take: outside them (or NaN) every run would fail, or none could.
GATE_RANGES = {
    "norm_tolerance": (0.0, math.inf),
    "min_effective_rank": (0.0, math.inf),
    "max_near_duplicate_rate": (0.0, 1.0),
    "min_drift_cosine": (-1.0, 1.0),
    "min_golden_recall": (0.0, 1.0),
}


def default_gates() -> dict[str, float]:
    defaults = Expectations(dim=0, model_key="")
    return {name: getattr(defaults, name) for name in GATES}


def check_gates(gates: dict | None) -> dict[str, float]:
    """`gates` as floats, or `BadInput` naming the unknown, non-numeric or out-of-range threshold."""
    from embedline.errors import BadInput

    checked = {}
    for name, value in (gates or {}).items():
        if name not in GATES:
            raise BadInput(f"unknown validation gate {name!r}: use one of {', '.join(GATES)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BadInput(f"validation gate {name}={value!r}: give a number") from None
        low, high = GATE_RANGES[name]
        if not (math.isfinite(number) and low <= number <= high):
            span = f"from {low:g} to {high:g}" if math.isfinite(high) else f"of at least {low:g}"
            raise BadInput(f"validation gate {name}={value!r}: give a finite number {span}")
        checked[name] = number
    return checked


@dataclass
class Outcome:
    suite: str
    expectation: str
    column: str | None
    success: bool
    detail: str


@dataclass
class ValidationReport:
    outcomes: list[Outcome] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    docs_url: str | None = None

    @property
    def passed(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[str]:
        return [
            f"{o.column or o.suite}: {_short(o.expectation)} ({o.detail})"
            for o in self.outcomes
            if not o.success
        ]


def _short(expectation: str) -> str:
    """expect_column_values_to_be_between -> be_between"""
    for prefix in ("expect_column_values_to_", "expect_column_pair_values_to_", "expect_table_", "expect_"):
        if expectation.startswith(prefix):
            return expectation[len(prefix):]
    return expectation


def preload_library() -> None:
    """Import great-expectations now (seconds of imports), e.g. while a command waits for a server."""
    import great_expectations  # noqa: F401  (its analytics: off, see embedline/__init__.py)
    from great_expectations import expectations  # noqa: F401


def validate_frames(name: str, chunks: pd.DataFrame, summary: pd.DataFrame, metrics: dict,
                    expect: Expectations, report_dir: Path | None = None) -> ValidationReport:
    """Run the three suites; with `report_dir`, persist them there and update the Data Docs."""
    import great_expectations as gx
    from great_expectations import expectations as ge

    if report_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        report_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(report_dir))
    _quiet(context)
    chunk_suite = [
        ge.ExpectColumnValuesToNotBeNull(column="chunk_id"),
        ge.ExpectColumnValuesToBeUnique(column="chunk_id"),
        ge.ExpectColumnValuesToBeBetween(column="dim", min_value=expect.dim, max_value=expect.dim),
        ge.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
        ge.ExpectColumnValuesToBeBetween(column="text_len", min_value=1),
        ge.ExpectColumnValuesToBeInSet(column="model_key", value_set=[expect.model_key]),
    ]
    if expect.normalized:
        chunk_suite.append(ge.ExpectColumnValuesToBeBetween(
            column="norm", min_value=1 - expect.norm_tolerance, max_value=1 + expect.norm_tolerance))
    summary_suite = [
        ge.ExpectColumnPairValuesToBeEqual(column_A="docs_read", column_B="docs_accounted"),
        ge.ExpectColumnPairValuesToBeEqual(column_A="chunk_rows", column_B="chunks_reported"),
    ]
    # A metric that does not apply (too few rows, no previous version, no golden set) is null,
    # and GX's column-value expectations pass nulls.
    quality_suite = [
        ge.ExpectColumnValuesToBeBetween(column="effective_rank", min_value=expect.min_effective_rank),
        ge.ExpectColumnValuesToBeBetween(
            column="near_duplicate_rate", max_value=expect.max_near_duplicate_rate
        ),
        ge.ExpectColumnValuesToBeBetween(column="drift_min_cosine", min_value=expect.min_drift_cosine),
        ge.ExpectColumnValuesToBeBetween(column="golden_recall", min_value=expect.min_golden_recall),
    ]
    metrics_frame = pd.DataFrame([{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                   for k, v in metrics.items()}])
    for column in ("effective_rank", "near_duplicate_rate", "drift_min_cosine", "golden_recall"):
        metrics_frame[column] = pd.to_numeric(metrics_frame.get(column), errors="coerce").astype("float64")
    report = ValidationReport(metrics=metrics)
    pages = []  # each run's stored result and its suite: the Data Docs pages this validation adds
    for suite_name, frame, suite in (("chunks", chunks, chunk_suite), ("run_summary", summary, summary_suite),
                                     ("quality", metrics_frame, quality_suite)):
        outcomes, identifiers = _run(context, gx, name, suite_name, frame, suite, report_dir is not None)
        report.outcomes += outcomes
        pages += identifiers
    if report_dir is not None:
        # one Data Docs build for the three results: a checkpoint action per suite rebuilt the index and
        # recompiled the templates three times (~0.3 s of a 20k-chunk run)
        context.build_data_docs(resource_identifiers=pages, build_index=True)
        report.docs_url = context.get_docs_sites_urls()[0]["site_url"]
    return report


def _run(
    context, gx, space: str, suite_name: str, frame: pd.DataFrame, expectations: list, persist: bool
) -> tuple[list[Outcome], list]:
    """The suite's outcomes; persisted, also its stored result's and its suite's identifiers."""
    full_name = f"{space}.{suite_name}"
    source = context.data_sources.add_or_update_pandas(space)
    asset = next((a for a in source.assets if a.name == suite_name), None) or source.add_dataframe_asset(
        suite_name
    )
    batch = next(
        (b for b in asset.batch_definitions if b.name == "all"), None
    ) or asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=full_name, expectations=expectations))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=full_name, data=batch, suite=suite)
    )
    if not persist:
        result = definition.run(batch_parameters={"dataframe": frame})
        return [_outcome(suite_name, r) for r in result.results], []
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(name=full_name, validation_definitions=[definition], actions=[])
    )
    ((identifier, result),) = checkpoint.run(batch_parameters={"dataframe": frame}).run_results.items()
    outcomes = [_outcome(suite_name, r) for r in result.results]
    return outcomes, [identifier, ExpectationSuiteIdentifier(full_name)]


def _outcome(suite_name: str, result) -> Outcome:
    config = result.expectation_config
    details = result.result or {}
    if "unexpected_count" in details:
        sample = details.get("partial_unexpected_list", [])[:3]
        detail = f"{details['unexpected_count']} unexpected, e.g. {sample}"
    else:
        detail = f"observed {details.get('observed_value')}"
    if result.exception_info and result.exception_info.get("raised_exception"):
        detail = result.exception_info.get("exception_message", "raised")
    column = config.kwargs.get("column") or config.kwargs.get("column_A")
    return Outcome(suite_name, config.type, column, bool(result.success), detail)


def _quiet(context) -> None:
    """No per-metric progress bars in logs and CLI output."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)


def validate_batch(name: str, chunk_batches, counts: dict, chunks_reported: int, expect: Expectations,
                   extra_metrics: dict | None = None, report_dir: Path | None = None) -> ValidationReport:
    """Validate staged chunk rows (Arrow batches), the run's counts and the batch's quality metrics."""
    from embedline.validation.metrics import chunk_scalars_and_vectors, run_summary_frame, vector_metrics

    chunks, vectors = chunk_scalars_and_vectors(chunk_batches)
    metrics = {**vector_metrics(vectors), **(extra_metrics or {})}
    return validate_frames(name, chunks, run_summary_frame(counts, len(chunks), chunks_reported), metrics,
                           expect, report_dir)
