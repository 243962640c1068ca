"""A corpus's validation thresholds: the defaults, overridden by what was set for it (kept in the catalog)."""

from embedline.names import check_name
from embedline.storage import catalog
from embedline.validation.suite import check_gates, default_gates
from embedline.workspace import Workspace


def corpus_gates(ws: Workspace, corpus: str, updates: dict | None = None) -> dict[str, float]:
    """The thresholds `corpus` is validated with; `updates` are checked, stored and kept for later runs."""
    check_name(corpus, "corpus name")
    stored = catalog.get_gates(ws, corpus)
    if updates:
        stored = {**stored, **check_gates(updates)}
        catalog.set_gates(ws, corpus, stored)
    return {**default_gates(), **stored}
