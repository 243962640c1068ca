"""The `embedline` console script as users run it: one-line errors, formats, read-only SQL."""

import json
import os
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import CASES, ingest, run_cli

CASES_HOME = CASES / "no-such-home"  # commands that never open a workspace


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, tiny_model_dir):
    """One ingested workspace shared by the read-only CLI tests of this module."""
    from embedline.workspace import Workspace
    from embedline.tasks.models import add_model
    from tests.conftest import DEBIAN_CASE

    ws = Workspace.from_env(tmp_path_factory.mktemp("cli") / "home").ensure()
    add_model(ws, "tiny", str(tiny_model_dir))
    ingest(ws, DEBIAN_CASE)
    return ws


def test_sql_refuses_a_write_without_the_write_flag(ingested):
    result = run_cli("sql", "DELETE FROM runs", home=ingested.home)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "error: DELETE is a write and this session is read-only:"
        " pass --write (Python: write=True) to allow it"
    ]
    count = run_cli(
        "sql", "SELECT count(*) AS n FROM runs", "--format", "json", home=ingested.home, check=True
    )
    assert json.loads(count.stdout) == [{"n": 1}]


def test_sql_write_flag_allows_a_write(ingested):
    run_cli("sql", "DELETE FROM quarantine", "--write", home=ingested.home, check=True)


def test_sql_embed_query_in_three_formats(ingested):
    query = ("SELECT doc_id, array_cosine_similarity(vector, embed('tiling window manager')) AS s "
             "FROM debian ORDER BY s DESC LIMIT 5")
    as_json = json.loads(run_cli("sql", query, "--format", "json", home=ingested.home, check=True).stdout)
    assert len(as_json) == 5 and set(as_json[0]) == {"doc_id", "s"}
    assert as_json == sorted(as_json, key=lambda r: -r["s"])
    plain = "SELECT doc_id, chunk_index AS s FROM debian ORDER BY doc_id, s LIMIT 5"  # no model to load
    expected = [r["doc_id"] for r in json.loads(run_cli("sql", plain, "--json", home=ingested.home,
                                                        check=True).stdout)]
    as_csv = run_cli("sql", plain, "--format", "csv", home=ingested.home, check=True).stdout.splitlines()
    assert as_csv[0] == "doc_id,s" and [line.split(",")[0] for line in as_csv[1:]] == expected
    as_table = run_cli("sql", plain, home=ingested.home, check=True).stdout.splitlines()
    assert as_table[0].split() == ["doc_id", "s"] and as_table[-1] == "(5 rows)"
    assert [line.split()[0] for line in as_table[2:-1]] == expected


@pytest.mark.parametrize("query, reason", [
    ("SELECT CAST(x AS INT) FROM (VALUES ('a')) t(x)", "Conversion Error"),
    ("SELECT error('boom')", "boom"),
    ("SELECT query_vector('debian', 'x', 'nope')", "Python exception occurred while executing the UDF"),
])
def test_sql_errors_raised_while_the_rows_are_read_get_a_one_line_error(ingested, query, reason):
    result = run_cli("sql", query, home=ingested.home)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: SQL error: ") and reason in lines[0], lines


def test_backfill_and_refresh_refuse_a_bad_batch_size_or_order_up_front(workspace, debian_case,
                                                                        tiny_model_dir):
    from embedline.storage import catalog
    from embedline.tasks.models import add_model

    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case)
    for args, message in [
        (("refresh", "debian", "--model", "small", "--order", "newest"),
         "order 'newest': use one of source, recent, residual"),
        (("backfill", "debian", "--model", "small", "--batch-docs", "0"), "batch_docs 0"),
        (("refresh", "debian", "--model", "small", "--batch-docs", "-1"), "batch_docs -1"),
    ]:
        result = run_cli(*args, home=workspace.home)
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    with catalog.reading(workspace) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # nothing ran: no adapter fit
        assert con.execute("SELECT count(*) FROM adapters").fetchone()[0] == 0
    assert not (workspace.home / "logs").exists()  # and no backfill detached


def test_search_json_lists_doc_ids_titles_and_scores(ingested):
    from tests.conftest import DEBIAN_CASE

    record = json.loads(DEBIAN_CASE.read_text().splitlines()[0])
    hits = json.loads(
        run_cli(
            "search", "debian", record["title"], "-k", "4", "--json", home=ingested.home, check=True
        ).stdout
    )
    assert len(hits) == 4
    assert set(hits[0]) == {"score", "doc_id", "title", "chunk_index", "text"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.mark.parametrize("bad", ["../etc", "Debian", "drop table x", "a__b", "runs"])
def test_bad_corpus_names_get_a_one_line_error(workspace, bad):
    result = run_cli("search", bad, "anything", home=workspace.home)
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1 and "corpus name" in result.stderr


def test_unknown_corpus_and_bad_sql_say_what_to_do(workspace):
    missing = run_cli("search", "nothing_here", "text", home=workspace.home)
    assert missing.returncode == 4 and "embedline ingest nothing_here SOURCE" in missing.stderr
    bad_sql = run_cli("sql", "SELEC 1", home=workspace.home)
    assert bad_sql.returncode == 3 and bad_sql.stderr.startswith("error: SQL does not parse")


def test_versions_and_models_list(ingested):
    versions = json.loads(run_cli("versions", "debian", "--json", home=ingested.home, check=True).stdout)
    assert [(v["validation"], v["aliases"]) for v in versions] == [("passed", ["prod"])]
    models = json.loads(run_cli("models", "list", "--json", home=ingested.home, check=True).stdout)
    assert [(m["name"], m["dim"], m["pooling"]) for m in models] == [("tiny", 32, "mean")]


def _commands() -> list[list[str]]:
    from embedline.flows.cli import app, models_app

    top = [[c.name or c.callback.__name__] for c in app.registered_commands]
    return [[], ["models"]] + top + [["models", c.name] for c in models_app.registered_commands]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "embedline")
def test_every_command_has_help_with_an_example(command):
    from typer.testing import CliRunner

    from embedline.flows.cli import app

    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: embedline" in result.output or "Example: EMBEDLINE_" in result.output


def test_help_lists_the_exit_codes_and_version_prints():
    from embedline import __version__

    help_text = run_cli("--help", home=CASES_HOME).stdout
    assert "Exit codes:" in help_text and "  2  usage error" in help_text and "  3  bad input" in help_text
    assert run_cli("--version", home=CASES_HOME, check=True).stdout.strip() == f"embedline {__version__}"


def test_usage_errors_exit_2_and_bad_input_exits_3(workspace, debian_case):
    nothing = run_cli("ingest", home=workspace.home)
    assert nothing.returncode == 2 and nothing.stderr.startswith("error: give the corpus")
    twice = run_cli("ingest", "debian", str(debian_case), "--corpus", "debian", home=workspace.home)
    assert twice.returncode == 2 and "corpus once" in twice.stderr
    unknown_option = run_cli("versions", "debian", "--nope", home=workspace.home)
    assert unknown_option.returncode == 2
    missing_file = run_cli("ingest", "debian", str(debian_case) + ".missing", home=workspace.home)
    assert missing_file.returncode == 3 and "does not exist" in missing_file.stderr


def test_settings_errors_name_the_variable(workspace, monkeypatch):
    monkeypatch.setenv("EMBEDLINE_PRECISION", "fp8")
    result = run_cli("versions", "debian", home=workspace.home)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "error: EMBEDLINE_PRECISION='fp8': Input should be 'auto', 'fp32', 'bf16' or 'fp16'"]
    monkeypatch.setenv("EMBEDLINE_PRECISION", "fp32")
    monkeypatch.setenv("EMBEDLINE_SHARD_SIZE", "many")
    assert "EMBEDLINE_SHARD_SIZE='many'" in run_cli("config", home=workspace.home).stderr


def test_config_prints_resolved_settings_with_secrets_masked(workspace, monkeypatch):
    monkeypatch.setenv("EMBEDLINE_LANCE_STORAGE_OPTIONS",
                       json.dumps({"aws_region": "eu-west-1", "aws_secret_access_key": "hunter2"}))
    monkeypatch.setenv("EMBEDLINE_PRECISION", "fp32")
    for unset in ("EMBEDLINE_LANCE_URI", "EMBEDLINE_STORE_URI", "EMBEDLINE_SHARD_TIMEOUT"):
        monkeypatch.delenv(unset, raising=False)
    rows = {r["variable"]: r["value"] for r in json.loads(run_cli("config", "--json", home=workspace.home,
                                                                  check=True).stdout)}
    assert rows["EMBEDLINE_PRECISION"] == "fp32" and rows["EMBEDLINE_HOME"] == str(workspace.home)
    assert (rows["EMBEDLINE_LANCE_URI"], rows["EMBEDLINE_STORE_URI"]) == (  # unset: what they resolve to
        str(workspace.home / "lance"), str(workspace.home))
    assert rows["EMBEDLINE_SHARD_TIMEOUT"] == "3600"
    assert "hunter2" not in json.dumps(rows) and json.loads(rows["EMBEDLINE_LANCE_STORAGE_OPTIONS"]) == {
        "aws_region": "eu-west-1", "aws_secret_access_key": "***"}


def test_corpus_is_positional_and_the_old_spellings_still_work(workspace, debian_case):
    first = json.loads(run_cli("ingest", "debian", str(debian_case), "--model", "tiny", "--format", "json",
                               home=workspace.home, check=True, own_server=True).stdout)  # one-shot
    again = json.loads(run_cli("ingest", str(debian_case), "--corpus", "debian", "--json",
                               home=workspace.home, check=True).stdout)
    assert (
        first[0]["docs_new"] == 120 and again[0]["docs_unchanged"] == 120
    )  # the same corpus, the same model
    swapped = run_cli("ingest", str(debian_case), "debian", home=workspace.home)
    assert swapped.returncode == 2 and f"give the corpus first: `embedline ingest debian {debian_case}`" in (
        swapped.stderr)
    failed = run_cli("validate", "debian", "--version", "99", home=workspace.home, own_server=True)
    assert failed.returncode == 4 and failed.stderr.splitlines()[-1].startswith("error: ")  # the last line
    as_csv = run_cli(
        "versions", "debian", "--format", "csv", home=workspace.home, check=True
    ).stdout.splitlines()
    assert as_csv[0].startswith("space,version,tag") and len(as_csv) == 2
    status = run_cli("refresh", "status", "debian", "--json", home=workspace.home, check=True)
    assert json.loads(status.stdout) == []  # no refresh started
    assert (
        run_cli("refresh", "--status", "debian", "--json", home=workspace.home, check=True).stdout
        == status.stdout
    )


def test_gates_are_set_per_corpus_and_apply_to_its_runs(workspace, debian_case):
    before_any_run = run_cli("gates", "debian", "--set", "min_effective_rank=1000", "--json",
                             home=workspace.home, check=True)
    shown = json.loads(before_any_run.stdout)
    assert {g["gate"]: g["threshold"] for g in shown}["min_effective_rank"] == 1000
    assert "note: corpus 'debian' has no runs" in before_any_run.stderr  # set ahead of a first run, or a typo
    failed = run_cli("ingest", "debian", str(debian_case), "--model", "tiny", "--json", home=workspace.home)
    assert failed.returncode == 1 and "effective_rank" in failed.stderr  # a 32-d model cannot reach rank 1000
    (run,) = json.loads(failed.stdout)  # the recorded run, for scripts
    assert (run["status"], run["promoted"], run["docs_new"]) == ("failed", False, 120)
    bad = run_cli("gates", "debian", "--set", "min_magic=1", home=workspace.home)
    assert bad.returncode == 3 and "unknown validation gate 'min_magic'" in bad.stderr
    no_value = run_cli("gates", "debian", "--set", "min_golden_recall", home=workspace.home)
    assert no_value.returncode == 2 and "--set 'min_golden_recall': write NAME=VALUE" in no_value.stderr
    assert "has no runs" not in run_cli("gates", "debian", home=workspace.home, check=True).stderr


def test_max_embed_commits_a_large_embed_in_batches_until_nothing_is_deferred(workspace, debian_case):
    counts = []
    for _ in range(2):  # in this process (the CLI's process costs seconds of imports each time)
        run = ingest(workspace, debian_case, max_embed=50)
        counts.append((run.docs_new, run.docs_deferred, run.promoted))
    (run,) = json.loads(run_cli("ingest", "debian", str(debian_case), "--model", "tiny", "--max-embed", "50",
                                "--json", home=workspace.home, check=True).stdout)
    counts.append((run["docs_new"], run["docs_deferred"], run["promoted"]))
    assert counts == [(50, 70, True), (50, 20, True), (20, 0, True)]
    served = run_cli("sql", "SELECT count(DISTINCT doc_id) AS n FROM debian", "--json", home=workspace.home,
                     check=True).stdout
    assert json.loads(served) == [{"n": 120}]


def test_sql_json_holds_any_result_as_valid_json(tmp_path):
    query = ("SELECT TIME '12:00:00', INTERVAL 1 DAY, 'nan'::DOUBLE, gen_random_uuid(), 'x'::BLOB, "
             "1 AS a, 2 AS a")
    result = run_cli("sql", query, "--json", home=tmp_path / "home", check=True)
    (row,) = json.loads(result.stdout)
    assert list(row.values())[:3] == ["12:00:00", "P1D", None]
    assert list(row.values())[4:] == ["eA==", 1, 2] and list(row)[-2:] == ["a", "a_1"]


@pytest.fixture
def own_umask():
    """`main()` sets the process's umask; put the test process's back."""
    kept = os.umask(0o022)
    os.umask(kept)
    yield
    os.umask(kept)


def _main_stderr(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    from embedline.flows.cli import main

    monkeypatch.setattr(sys, "argv", ["embedline", *args])
    with pytest.raises(SystemExit) as ended:
        main()
    return ended.value.code, capsys.readouterr().err


def test_an_unexpected_error_is_one_masked_line_and_its_traceback_needs_embedline_debug(
        workspace, monkeypatch, capsys, own_umask):
    from embedline.api import Embedline

    def lost(self, corpus):
        raise RuntimeError("catalog postgresql://app:hunter2@db/catalog went away\n  (retry later)")

    monkeypatch.setattr(Embedline, "versions", lost)
    monkeypatch.delenv("EMBEDLINE_DEBUG", raising=False)
    code, err = _main_stderr(capsys, monkeypatch, "versions", "debian")
    line = "error: RuntimeError: catalog postgresql://app:***@db/catalog went away (retry later)"
    assert code == 1 and err.splitlines() == [f"{line} (set EMBEDLINE_DEBUG=1 for the traceback)"]
    monkeypatch.setenv("EMBEDLINE_DEBUG", "1")
    code, err = _main_stderr(capsys, monkeypatch, "versions", "debian")
    assert code == 1 and err.startswith("Traceback (most recent call last):")
    assert "hunter2" not in err and "in lost" in err and err.splitlines()[-1] == line


def test_an_expected_error_inside_a_flow_is_one_line_and_the_run_still_fails(workspace, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime, LogFilter
    from prefect.client.schemas.filters import LogFilterFlowRunId

    since = datetime.now(timezone.utc) - timedelta(seconds=1)  # the session's server holds other runs
    missing = tmp_path / "nowhere.jsonl"
    result = run_cli("ingest", "missing_source", str(missing), home=workspace.home)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: source {missing} does not exist"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(
            after_=since)))
        (run,) = [r for r in runs if r.parameters.get("corpus") == "missing_source"]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    assert run.state.is_failed() and "does not exist" in run.state.message
    assert any("Traceback" in log.message for log in logs)  # the server's logs keep where it failed


def test_search_refuses_a_bad_model_name_before_suggesting_to_register_it(ingested):
    result = run_cli("search", "debian", "window manager", "--model", "X Y", home=ingested.home)
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: invalid model name 'X Y'") and "models add" not in line


def test_promote_checks_the_space_name_and_names_the_space_a_version_is_missing_from(ingested):
    bad = run_cli("promote", "debian", "1", "--space", "Debian Tiny", home=ingested.home)
    assert bad.returncode == 3 and "invalid space name 'Debian Tiny'" in bad.stderr
    missing = run_cli("promote", "debian", "1", "--space", "debian__other", home=ingested.home)
    assert missing.returncode == 4
    assert missing.stderr.strip().splitlines() == [
        "error: corpus 'debian' has no version 1 in space 'debian__other': see `embedline versions debian`"]
