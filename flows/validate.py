"""validate-version: re-run the gates on a stored version and record the verdict."""

from prefect import flow

from embedline.flows.reports import publish_validation_artifacts
from embedline.names import check_name
from embedline.workspace import Workspace
from embedline.tasks.evaluation import revalidate_version


@flow(name="validate-version", log_prints=True)
def validate_version(
    corpus: str, version: int | None = None, home: str | None = None, space: str | None = None
):
    ws = Workspace.from_env(home)
    space, version, report = revalidate_version(ws, check_name(corpus, "corpus name"), version, space)
    publish_validation_artifacts(report, space, run_id=0)
    return space, version, report
