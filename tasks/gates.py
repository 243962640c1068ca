"""A corpus's validation thresholds. Per key, the first that sets it wins:

1. a run's own `gates` (`ingest --gate`, `db.ingest(gates=...)`): that run only, never stored;
2. what was set for the corpus (`embedline gates --set`, `db.gates(...)`), kept in the catalog;
3. the deployment's defaults (`gates:` in deploy/corpora.yaml): every scheduled run passes them and
   they are kept as the corpus's deployment layer, so backfills, swaps and `embedline validate` judge
   by them too; an operator's `gates --set` outlasts them;
4. the built-in defaults.
"""

from embedline.errors import NotFound
from embedline.names import check_name
from embedline.storage import catalog
from embedline.validation.suite import check_gates, default_gates
from embedline.workspace import Workspace


def corpus_gates(ws: Workspace, corpus: str, updates: dict | None = None) -> dict[str, float]:
    """The thresholds `corpus` is judged by outside a run's own overrides (layers 2-4); `updates` are
    checked and stored first as an operator's (`embedline gates --set`)."""
    check_name(corpus, "corpus name")
    stored = catalog.get_gates(ws, corpus)
    if updates and not catalog.exists(ws):
        raise NotFound(f"no catalog at {catalog.location(ws)} to set {corpus!r}'s gates in: check --home "
                       "(a corpus's gates may be set before its first ingest, in a workspace that exists)")
    if updates:
        stored = {**stored, **check_gates(updates)}
        catalog.set_gates(ws, corpus, stored)
    return {**default_gates(), **catalog.get_gates(ws, corpus, "deploy_gates"), **stored}


def run_gates(ws: Workspace, corpus: str, overrides: dict | None = None,
              deployment_defaults: dict | None = None) -> dict[str, float]:
    """The thresholds one run is validated with (see the module for which wins). A scheduled run's
    `deployment_defaults` ({} when corpora.yaml gives none) are kept as the deployment layer."""
    check_name(corpus, "corpus name")
    if deployment_defaults is not None:
        deployment_defaults = check_gates(deployment_defaults)
        if deployment_defaults != catalog.get_gates(ws, corpus, "deploy_gates"):
            catalog.set_gates(ws, corpus, deployment_defaults, "deploy_gates")
    return {**corpus_gates(ws, corpus), **check_gates(overrides or {})}
