"""The GX suite a space's batch must pass before it may be promoted."""

import os
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Expectations:
    """What a good batch looks like for one model."""

    dim: int
    model_key: str
    normalized: bool = True
    norm_tolerance: float = 1e-3


@dataclass
class Outcome:
    expectation: str
    column: str | None
    success: bool
    detail: str


@dataclass
class ValidationReport:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[str]:
        return [f"{o.expectation}({o.column or 'table'}): {o.detail}" for o in self.outcomes if not o.success]


def validate_frames(chunks: pd.DataFrame, summary: pd.DataFrame, expect: Expectations) -> ValidationReport:
    """Run the chunk suite on per-row scalars and the reconcile suite on the run summary."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations import expectations as ge

    context = gx.get_context(mode="ephemeral")
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
    report = ValidationReport()
    for name, frame, suite in (("chunks", chunks, chunk_suite), ("run_summary", summary, summary_suite)):
        report.outcomes += _run(context, gx, name, frame, suite)
    return report


def _run(context, gx, name: str, frame: pd.DataFrame, expectations: list) -> list[Outcome]:
    batch = context.data_sources.add_pandas(name).add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": frame})
    return [_outcome(r) for r in result.results]


def _outcome(result) -> Outcome:
    config = result.expectation_config
    details = result.result or {}
    if "unexpected_count" in details:
        sample = details.get("partial_unexpected_list", [])[:3]
        detail = f"{details['unexpected_count']} unexpected, e.g. {sample}"
    else:
        detail = f"observed {details.get('observed_value')}"
    if result.exception_info and result.exception_info.get("raised_exception"):
        detail = result.exception_info.get("exception_message", "raised")
    return Outcome(config.type, config.kwargs.get("column") or config.kwargs.get("column_A"), bool(result.success), detail)


def _quiet(context) -> None:
    """No per-metric progress bars in logs and CLI output."""
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    except (ImportError, AttributeError):
        pass


def validate_batch(chunk_batches, counts: dict, chunks_reported: int, expect: Expectations) -> ValidationReport:
    """Validate staged chunk rows (Arrow batches) and the run's counts."""
    from validation.metrics import chunk_scalars, run_summary_frame

    chunks = chunk_scalars(chunk_batches)
    return validate_frames(chunks, run_summary_frame(counts, len(chunks), chunks_reported), expect)
