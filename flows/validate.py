"""validate-version: re-run the gates on a stored version and record the verdict."""

from prefect import flow

from flows.reports import publish_validation_artifacts
from storage.names import check_name
from storage.workspace import Workspace
from tasks.evaluation import revalidate_version


@flow(name="validate-version", log_prints=True)
def validate_version(corpus: str, version: int | None = None, home: str | None = None):
    ws = Workspace.from_env(home)
    space, version, report = revalidate_version(ws, check_name(corpus, "corpus name"), version)
    publish_validation_artifacts(report, space, run_id=0)
    return space, version, report
