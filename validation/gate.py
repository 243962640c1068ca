"""The promotion gate: a flow asks `require(report)`; a failing report never moves an alias."""

from embedline.errors import ValidationFailed
from embedline.validation.suite import ValidationReport


def require(report: ValidationReport) -> None:
    if not report.passed:
        raise ValidationFailed(report.failures)
