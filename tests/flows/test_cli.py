"""The `embedline` console script as users run it: one-line errors, formats, read-only SQL."""

import json

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
        "error: DELETE is a write and this session is read-only: pass --write to allow it"
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
    as_csv = run_cli("sql", query, "--format", "csv", home=ingested.home, check=True).stdout.splitlines()
    assert as_csv[0] == "doc_id,s" and len(as_csv) == 6
    as_table = run_cli("sql", query, home=ingested.home, check=True).stdout.splitlines()
    assert as_table[0].split() == ["doc_id", "s"] and as_table[-1] == "(5 rows)"


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
    return top + [["models", c.name] for c in models_app.registered_commands]


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
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
    rows = {r["variable"]: r["value"] for r in json.loads(run_cli("config", "--json", home=workspace.home,
                                                                  check=True).stdout)}
    assert rows["EMBEDLINE_PRECISION"] == "fp32" and rows["EMBEDLINE_HOME"] == str(workspace.home)
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
    shown = json.loads(run_cli("gates", "debian", "--set", "min_effective_rank=1000", "--json",
                               home=workspace.home, check=True).stdout)
    assert {g["gate"]: g["threshold"] for g in shown}["min_effective_rank"] == 1000
    failed = run_cli("ingest", "debian", str(debian_case), "--model", "tiny", "--json", home=workspace.home)
    assert failed.returncode == 1 and "effective_rank" in failed.stderr  # a 32-d model cannot reach rank 1000
    (run,) = json.loads(failed.stdout)  # the recorded run, for scripts
    assert (run["status"], run["promoted"], run["docs_new"]) == ("failed", False, 120)
    bad = run_cli("gates", "debian", "--set", "min_magic=1", home=workspace.home)
    assert bad.returncode == 3 and "unknown validation gate 'min_magic'" in bad.stderr


def test_max_embed_commits_a_large_embed_in_batches_until_nothing_is_deferred(workspace, debian_case):
    counts = []
    for _ in range(3):
        (run,) = json.loads(
            run_cli(
                "ingest",
                "debian",
                str(debian_case),
                "--model",
                "tiny",
                "--max-embed",
                "50",
                "--json",
                home=workspace.home,
                check=True,
            ).stdout
        )
        counts.append((run["docs_new"], run["docs_deferred"], run["promoted"]))
    assert counts == [(50, 70, True), (50, 20, True), (20, 0, True)]
    served = run_cli("sql", "SELECT count(DISTINCT doc_id) AS n FROM debian", "--json", home=workspace.home,
                     check=True).stdout
    assert json.loads(served) == [{"n": 120}]
