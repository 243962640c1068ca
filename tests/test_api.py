"""The Python API (`embedline.connect`) over one workspace: the same flows as the CLI, in process."""

import inspect
import json
import pydoc
from datetime import datetime, timezone

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

import embedline
from tests.conftest import DEBIAN_CASE


def test_every_public_name_has_a_docstring_and_help_is_a_reference():
    for name in embedline.__all__:
        if name != "__version__":
            assert inspect.getdoc(getattr(embedline, name)), name
    methods = [m for m, _ in inspect.getmembers(embedline.Embedline) if not m.startswith("_")]
    assert {
        "ingest",
        "search",
        "sql",
        "versions",
        "promote",
        "rollback",
        "refresh",
        "validate",
        "maintain",
    } <= set(methods)
    for method in methods:
        assert inspect.getdoc(getattr(embedline.Embedline, method)), method
    text = pydoc.render_doc(embedline, renderer=pydoc.plaintext)
    assert "embedline.connect()" in text and "db.search(" in text


def test_connect_takes_settings_and_refuses_bad_ones(tmp_path):
    db = embedline.connect(tmp_path / "home", precision="fp32", shard_size=10)
    assert (db.settings.precision, db.settings.shard_size, db.home) == ("fp32", 10, str(tmp_path / "home"))
    with pytest.raises(
        embedline.BadSetting, match=r"^EMBEDLINE_DEVICE='gpu0': use auto, cpu, cuda or cuda:N$"
    ):
        embedline.connect(tmp_path, device="gpu0")


def test_ingest_search_sql_versions_promote_rollback_validate_maintain(workspace, debian_case):
    db = embedline.connect(workspace.home)
    first = db.ingest(debian_case, corpus="debian", model="tiny")
    assert (first.status, first.docs_new, first.promoted) == ("succeeded", 120, True)

    record = json.loads(DEBIAN_CASE.read_text().splitlines()[3])
    hits = db.search("debian", record["title"], k=5)
    assert len(hits) == 5 and {"doc_id", "chunk_id", "title", "text", "score"} <= set(hits[0])
    assert db.search("debian", record["title"], k=5, where=f"section = '{record['section']}'")[0]["doc_id"]

    assert db.sql("SELECT count(DISTINCT doc_id) FROM debian").fetchone()[0] == 120
    with pytest.raises(embedline.ReadOnly):
        db.sql("DELETE FROM runs")
    assert db.sql("SELECT count(*) FROM runs").fetchone()[0] == 1

    lines = debian_case.read_text().splitlines()
    changed = json.loads(lines[0])
    changed["text"] += " A new sentence."
    debian_case.write_text("\n".join([json.dumps(changed), *lines[1:]]) + "\n")
    second = db.ingest(debian_case, corpus="debian")  # no model: the one prod serves
    assert (second.space, second.docs_changed, second.docs_unchanged) == ("debian__tiny", 1, 119)

    assert [v["version"] for v in db.versions("debian")] == [first.version, second.version]
    assert db.rollback("debian")["version"] == first.version
    assert db.promote("debian", second.version)["version"] == second.version

    space, version, report = db.validate("debian")
    assert (space, version, report.passed) == ("debian__tiny", second.version, True)
    assert db.gates("debian", min_golden_recall=0.9)["min_golden_recall"] == 0.9
    assert db.gates("debian")["min_golden_recall"] == 0.9  # kept for later runs
    assert db.maintain("debian")[0].startswith("debian__tiny: versions")
    assert [m["name"] for m in db.models()] == ["tiny"]
    for days in (float("nan"), -1, 1e308):  # NaN and 1e308 raised from timedelta; -1 dropped every version
        with pytest.raises(embedline.BadInput, match="retention_days"):
            db.maintain("debian", retention_days=days)
    for keep in (0, 1.5, True, "3"):  # 0 would drop the version a run diffs against
        with pytest.raises(embedline.BadInput, match="keep_versions"):
            db.maintain("debian", keep_versions=keep)
    for k in (0, 10**20, "5", 1.5):
        with pytest.raises(embedline.BadInput, match="-k must be a whole number"):
            db.search("debian", "window manager", k=k)
    for query in ("", "  ", None):  # scored every chunk alike
        with pytest.raises(embedline.BadInput, match="the query must be text"):
            db.search("debian", query)
    assert db.sql("SELECT query_vector('debian', NULL) IS NULL, embed(NULL) IS NULL").fetchone() == (True, True)
    started = datetime.now(timezone.utc)
    for call in (db.refresh, db.backfill):  # typos: each started a flow run (a server, seconds) first
        with pytest.raises(embedline.NotFound, match="no such corpus 'debain'"):
            call("debain", "tiny")
        with pytest.raises(embedline.NotFound, match="embedline models add nomodel PATH"):
            call("debian", "nomodel")
    with get_client(sync_client=True) as client:
        since = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started))  # the server holds many
        runs = [r for r in client.read_flow_runs(flow_run_filter=since, limit=200)
                if {"debain", "nomodel"} & set(map(str, r.parameters.values()))]
    assert runs == []


def test_api_errors_are_typed(workspace):
    db = embedline.connect(workspace.home)
    with pytest.raises(embedline.NotFound, match="embedline ingest nothing SOURCE"):
        db.search("nothing", "text")
    with pytest.raises(embedline.UsageError):
        db.ingest(corpus="docs")
    with pytest.raises(embedline.BadName):
        db.versions("Not A Name")
    for method in (db.versions, db.quarantine, db.maintain):  # answered [] for a typo
        with pytest.raises(embedline.NotFound, match="no such corpus 'nothing'"):
            method("nothing")


def test_sql_errors_raised_while_the_rows_are_read_are_typed_and_rows_still_stream(workspace):
    db = embedline.connect(workspace.home)
    for query in ("SELECT CAST(x AS INT) FROM (VALUES ('a')) t(x)", "SELECT error('boom')"):
        rows = db.sql(query)  # nothing runs yet: a relation runs when it is read
        for read in (rows.fetchall, rows.df, lambda: rows.arrow().read_all(), rows.limit(1).fetchone):
            with pytest.raises(embedline.BadInput, match="^SQL error: "):
                read()
    late = db.sql("SELECT CASE WHEN i = 4500000 THEN error('late') ELSE i END AS i FROM range(5000000) t(i)")
    reader = late.to_arrow_reader(1000)
    assert reader.read_next_batch().num_rows == 1000  # streamed: the first batches come before the error
    with pytest.raises(embedline.BadInput, match="late"):
        reader.read_all()
    late = db.sql("SELECT CASE WHEN i = 4500000 THEN error('late') ELSE i END AS i FROM range(5000000) t(i)")
    assert late.fetchone() == (0,)
    with pytest.raises(embedline.BadInput, match="^SQL error: Invalid Input Error: late$"):
        late.fetchmany(5000000)  # DuckDB: "... closed pending query result", the cause on a later line
    ten = db.sql("SELECT i FROM range(10) t(i)")
    assert ten.columns == ["i"] and len(ten.fetchall()) == 10 and ten.arrow().read_all().num_rows == 10
    assert ten.filter("i > 6").order("i").fetchall() == [(7,), (8,), (9,)]
    pairs = db.sql("SELECT i, i::VARCHAR AS s, sum(i) OVER (ORDER BY i) AS total, INTERVAL 1 DAY AS d,"
                   " uuid() IS NOT NULL AS u, MAP {'a': i} AS m, [i]::INT[1] AS v FROM range(5000) t(i)"
                   " ORDER BY i")
    looped = [row for row in pairs]
    fetched = pairs.fetchall()
    assert looped == fetched and looped[4][:3] == (4, "4", 10)
    assert [type(value) for value in looped[4]] == [type(value) for value in fetched[4]]  # int, not Decimal
    assert [row for row in pairs] == looped  # a loop runs it afresh
    rows = iter(db.sql("SELECT CASE WHEN i = 4500000 THEN error('late') ELSE i END FROM range(5000000) t(i)"))
    assert next(rows) == (0,)  # streamed
    with pytest.raises(embedline.BadInput, match="late"):
        list(rows)


def test_connect_refuses_a_misspelt_setting_and_an_empty_home_is_the_default(tmp_path, monkeypatch):
    """`devcie="cuda:9"` was ignored, and an empty home made the working folder a 0700 workspace."""
    with pytest.raises(embedline.BadSetting, match="no setting devcie"):
        embedline.connect(tmp_path, devcie="cuda:9")
    monkeypatch.chdir(tmp_path)
    assert embedline.connect("").home == str(tmp_path / ".embedline")
    monkeypatch.setenv("EMBEDLINE_HOME", " ")
    assert embedline.connect().home == str(tmp_path / ".embedline")


def test_config_masks_keys_in_any_url_setting(tmp_path):
    settings = embedline.connect(tmp_path, store_uri="s3://AKIAEXAMPLE:wJalrSECRET@bucket/x",
                                 lance_uri="s3://AKIAEXAMPLE:wJalrSECRET@bucket/lance").settings
    shown = {name: value for name, value, _ in settings.shown()}
    assert shown["EMBEDLINE_STORE_URI"] == "s3://AKIAEXAMPLE:***@bucket/x"
    assert "wJalrSECRET" not in json.dumps(shown)


def test_commands_on_a_mistyped_home_raise_not_found_and_create_nothing(tmp_path):
    db = embedline.connect(tmp_path / "typo")
    for call in (lambda: db.versions("debian"), lambda: db.quarantine("debian"),
                 lambda: db.rollback("debian"), lambda: db.promote("debian", 3),
                 lambda: db.search("debian", "editor"), lambda: db.validate("debian"),
                 lambda: db.gates("debian", min_golden_recall=0.8)):
        with pytest.raises(embedline.NotFound):
            call()
    with pytest.raises(embedline.BadInput, match="version must be a whole number"):
        db.promote("debian", "5")
    source = DEBIAN_CASE
    with pytest.raises(embedline.BadName, match="corpus name 'Debian'"):  # these before any flow run
        db.ingest(source, "Debian")
    with pytest.raises(embedline.BadName, match="model name 'Tiny'"):
        db.ingest(source, "debian", model="Tiny")
    with pytest.raises(embedline.BadInput, match="unknown validation gate 'min_magic'"):
        db.ingest(source, "debian", gates={"min_magic": 1})
    assert db.sql("SELECT count(*) FROM runs").fetchone() == (0,)
    assert not (tmp_path / "typo").exists()



def test_every_error_is_exported_and_every_method_is_named_in_the_package_help():
    import inspect

    import embedline.errors

    errors = {n for n, c in vars(embedline.errors).items() if inspect.isclass(c) and issubclass(c, Exception)}
    assert errors <= set(embedline.__all__)  # `except embedline.SwapStale`, as the README names them
    methods = {n for n, m in vars(embedline.Embedline).items() if not n.startswith("_") and callable(m)}
    listed = " ".join(embedline.__doc__.split())
    assert {m for m in methods if f" {m}," not in listed and f" {m}." not in listed} == set()


def test_importing_embedline_sets_prefect_and_gx_defaults_unless_the_user_set_them(tmp_path):
    """Prefect sends SDK analytics from its import on, GX and the Prefect server theirs: off by default,
    before either is imported; the temporary server's start may take 120 s; a value the user set stays."""
    import os
    import subprocess
    import sys

    code = ("import os, embedline.flows.cli\n"
            "from prefect._internal.analytics.enabled import is_telemetry_enabled\n"
            "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS\n"
            "print(os.environ['DO_NOT_TRACK'], os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'],"
            " os.environ['GX_ANALYTICS_ENABLED'], is_telemetry_enabled(),"
            " PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())\n")
    names = ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "GX_ANALYTICS_ENABLED",
             "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    env = {k: v for k, v in os.environ.items() if k not in names}
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert quiet.stdout.split() == ["1", "false", "false", "False", "120"], quiet.stderr[-2000:]
    chosen = subprocess.run([sys.executable, "-c", code], env={**env, "GX_ANALYTICS_ENABLED": "true"},
                            capture_output=True, text=True, timeout=120)
    assert chosen.stdout.split()[2] == "true"
