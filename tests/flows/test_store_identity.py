"""One catalog, one Lance store and one file store: a run refuses a store that is not its catalog's before
it writes a thing (a host with the wrong EMBEDLINE_LANCE_URI, EMBEDLINE_CATALOG_URL or
EMBEDLINE_STORE_URI), and binds a store the catalog has not bound yet only when the catalog's history
does not speak against it (see storage/store_identity.py)."""

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import lancedb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import embedline
from embedline.errors import CatalogMismatch
from embedline.settings import load
from embedline.storage import catalog, embeddings, files
from embedline.storage import store_identity
from embedline.storage.store_identity import MARKER, STORE_ID
from embedline.tasks.evaluation import kept_files, save_golden
from embedline.tasks.models import add_model
from embedline.workspace import Workspace
from tests.conftest import ingest, run_cli


def rewrite(path: Path, doc_index: int, text: str) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[doc_index]["text"] = text
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def marker(lance: str) -> Path:
    return Path(lance) / MARKER


def other_workspace(tmp_path, workspace, name: str) -> Workspace:
    """Another home with its own catalog and the same tiny model."""
    other = Workspace.from_env(tmp_path / name).ensure()
    add_model(other, "tiny", catalog.list_models(workspace)[0]["path"])
    return other


def runs_recorded(ws: Workspace) -> int:
    with duckdb.connect(str(ws.catalog_path), read_only=True) as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]


def tables(lance: str) -> dict:
    """What a store holds: each table and its latest version."""
    ws = Workspace.from_env(settings=load(lance_uri=lance))
    return {space: embeddings.open_space(ws, space).version for space in embeddings.space_names(ws)}


def test_a_first_run_binds_the_store_and_another_catalog_is_refused_it(workspace, debian_case, tmp_path,
                                                                      monkeypatch):
    ingest(workspace, debian_case)
    assert marker(workspace.lance_uri).read_text() == catalog.catalog_id(workspace)
    assert marker(workspace.lance_uri).stat().st_mode & 0o077 == 0  # private, like the rest of the home
    stranger = other_workspace(tmp_path, workspace, "stranger")
    before = tables(workspace.lance_uri)
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", workspace.lance_uri)
    with pytest.raises(CatalogMismatch, match="Lance store of another catalog.*EMBEDLINE_CATALOG_URL"):
        ingest(stranger, debian_case, corpus="tickets")  # a new corpus: no table of its own to collide with
    assert tables(workspace.lance_uri) == before and runs_recorded(stranger) == 0  # nothing changed


def test_reads_refuse_another_catalogs_store_and_check_one_without_an_id_without_writing(
        workspace, debian_case, tmp_path, monkeypatch):
    """A search, a SQL session, a validation on a host pointed at a dev store with the same space names
    and versions would serve (or judge) that store's rows; a reading host may not write the id."""
    dev = other_workspace(tmp_path, workspace, "dev")
    ingest(dev, debian_case)
    ingest(workspace, debian_case)
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", dev.lance_uri)
    db = embedline.connect(workspace.home)
    for read in (lambda: db.search("debian", "editor"), lambda: db.sql("SELECT count(*) FROM debian"),
                 lambda: db.validate("debian"), lambda: db.footprint("debian", queries=5)):
        with pytest.raises(CatalogMismatch, match="another catalog.*nothing was read"):
            read()
    assert db.sql("SELECT count(*) FROM runs").fetchall() == [(1,)]  # the catalog's own tables answer
    marker(dev.lance_uri).unlink()  # a store from before ids: the binding rule, and nothing written
    monkeypatch.setattr(store_identity, "CLOCK_SLACK", timedelta(0))  # the two ingests are seconds apart
    with pytest.raises(CatalogMismatch, match="run-1 on version .* this catalog's run 1 recorded"):
        db.search("debian", "editor")
    monkeypatch.delenv("EMBEDLINE_LANCE_URI")
    marker(workspace.lance_uri).unlink()
    assert embedline.connect(workspace.home).search("debian", "editor", k=3)
    assert not marker(workspace.lance_uri).exists() and not marker(dev.lance_uri).exists()
    mistyped = tmp_path / "mistyped"
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", str(mistyped))
    with pytest.raises(CatalogMismatch, match="which .*mistyped has no tables for"):
        embedline.connect(workspace.home).search("debian", "editor")
    assert not mistyped.exists()  # a read creates no folder


def test_a_stale_store_of_another_catalog_is_refused_even_with_the_same_tables(workspace, debian_case,
                                                                             tmp_path, monkeypatch):
    """A dev store left on a host: the same space names, the same version numbers, another catalog."""
    dev = other_workspace(tmp_path, workspace, "dev")
    ingest(dev, debian_case)
    ingest(workspace, debian_case)
    before = tables(dev.lance_uri)
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", dev.lance_uri)
    with pytest.raises(CatalogMismatch, match="another catalog"):
        ingest(workspace, debian_case)
    assert tables(dev.lance_uri) == before


def test_an_empty_store_is_refused_to_a_catalog_that_serves_spaces(workspace, debian_case, tiny_model_dir,
                                                                   tmp_path, monkeypatch):
    """A new model's first run (a backfill's) on a worker with another store would create its space apart
    from prod's; a clean head with no alias yet counts (a first rollout that does not promote)."""
    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case, promote=False)
    assert catalog.list_aliases(workspace) == []
    empty = str(tmp_path / "empty")
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", empty)
    with pytest.raises(CatalogMismatch, match=r"\['debian__tiny'\].*EMBEDLINE_LANCE_URI"):
        ingest(workspace, debian_case, model="small")
    assert tables(empty) == {} and not marker(empty).exists()


def test_a_store_without_an_id_is_bound_by_its_own_catalog_and_never_by_retries_of_another(
        workspace, debian_case, tmp_path, monkeypatch):
    """As a store written before catalogs had ids. Run ids alone prove nothing (every catalog counts from
    1, and a refused run used to record one more): the tags must name versions committed during its runs."""
    monkeypatch.setattr(store_identity, "CLOCK_SLACK", timedelta(0))  # the test's runs are seconds apart
    stranger = other_workspace(tmp_path, workspace, "stranger")
    ingest(stranger, debian_case)  # its own run 1 of debian__tiny, in its own store
    ingest(workspace, debian_case)
    ingest(workspace, debian_case)
    marker(workspace.lance_uri).unlink()
    before = tables(workspace.lance_uri)
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", workspace.lance_uri)
    for _ in range(3):  # a cron retrying
        with pytest.raises(CatalogMismatch, match="run-1 on version .* this catalog's run 1 recorded"):
            ingest(stranger, debian_case)
    assert tables(workspace.lance_uri) == before and not marker(workspace.lance_uri).exists()
    assert runs_recorded(stranger) == 1
    fresh = other_workspace(tmp_path, workspace, "fresh")
    with pytest.raises(CatalogMismatch, match="holds tables \\(debian__tiny\\) of runs this catalog never"):
        ingest(fresh, debian_case)
    assert ingest(workspace, debian_case).status == "succeeded"
    assert marker(workspace.lance_uri).read_text() == catalog.catalog_id(workspace)


def test_a_catalog_backup_restored_over_a_store_without_an_id_binds_it(workspace, debian_case, tmp_path,
                                                                      monkeypatch):
    """The runs after the backup are news to it; those it holds prove the store is its own, also once
    it has reused a lost run's id without writing a version (the lost run's tag stays)."""
    monkeypatch.setattr(store_identity, "CLOCK_SLACK", timedelta(0))
    original = debian_case.read_text()
    ingest(workspace, debian_case)
    shutil.copy(workspace.catalog_path, tmp_path / "backup.duckdb")
    rewrite(debian_case, 0, "edited after the backup")
    ingest(workspace, debian_case)  # run 2: lost with the restore, its tag stays
    shutil.copy(tmp_path / "backup.duckdb", workspace.catalog_path)
    debian_case.write_text(original)
    for _ in range(2):
        marker(workspace.lance_uri).unlink()
        assert ingest(workspace, debian_case).status == "succeeded"  # the first reuses id 2, no new version
        assert marker(workspace.lance_uri).read_text() == catalog.catalog_id(workspace)


def test_a_short_marker_is_written_again_and_another_tools_table_is_left_alone(workspace, debian_case):
    ingest(workspace, debian_case)
    marker(workspace.lance_uri).write_text(catalog.catalog_id(workspace)[:7])  # a killed write
    lancedb.connect(workspace.lance_uri).create_table("notes", pa.table({"x": [1]}))
    assert ingest(workspace, debian_case).status == "succeeded"
    assert marker(workspace.lance_uri).read_text() == catalog.catalog_id(workspace)
    assert "notes" in embeddings.space_names(workspace)


def test_the_id_lives_under_the_lance_root_as_the_file_store_reaches_it():
    assert store_identity._marker_root("s3+ddb://bucket/lance?ddbTableName=t") == "s3://bucket/lance"
    assert store_identity._marker_root("s3://bucket/lance?x=1") == "s3://bucket/lance"
    assert store_identity._marker_root("/srv/lance") == "/srv/lance"
    assert store_identity._marker_root("gs://bucket/lance") is None  # not checked


def test_every_backup_of_a_catalog_from_before_ids_gets_the_same_id(workspace, debian_case, tmp_path):
    """Its id comes from its first run, so a backup restored after the upgrade still owns the store."""
    ingest(workspace, debian_case)
    ids = []
    for name in ("restored", "upgraded"):
        home = tmp_path / name
        home.mkdir()
        shutil.copy(workspace.catalog_path, home / "catalog.duckdb")
        with duckdb.connect(str(home / "catalog.duckdb")) as con:  # as schema 15 left it
            con.execute("DROP TABLE catalog_identity")
            con.execute("DELETE FROM schema_version WHERE version >= 16")
        ids.append(catalog.catalog_id(Workspace.from_env(home)))
    assert ids[0] == ids[1] and len(ids[0]) == 32


def test_the_file_store_is_bound_and_a_host_on_another_gates_on_nothing_stale(workspace, debian_case,
                                                                            tmp_path, monkeypatch):
    """The setting forgotten or mistyped on one host: its golden queries are stale (or another corpus's),
    and its quarantine, reports and staging land where no other host looks."""
    records = [json.loads(line) for line in debian_case.read_text().splitlines()]
    pairs = [{"query": r["text"], "doc_id": r["id"]} for r in records if len(r["text"]) < 120][:10]
    shared = tmp_path / "shared-store"
    monkeypatch.setenv("EMBEDLINE_STORE_URI", str(shared))
    save_golden(Workspace.from_env(), "debian", pairs)  # binds the store before any run
    recorded, where = catalog.file_store(workspace)
    assert (shared / STORE_ID).read_text() == recorded and recorded.startswith(catalog.catalog_id(workspace))
    assert where == str(shared)
    assert ingest(workspace, debian_case).promoted

    monkeypatch.delenv("EMBEDLINE_STORE_URI")  # the host without the setting: its store is the home
    (workspace.home / "golden").mkdir()
    stale = '{"query": "x", "doc_id": "stale"}\n'
    (workspace.home / "golden" / "debian.jsonl").write_text(stale)
    runs = runs_recorded(workspace)
    rewrite(debian_case, 0, "an edit the stale golden queries would refuse")
    refused = f"file store {workspace.home} \\(store id None\\) is not the one this catalog's runs use: " \
              f"{shared} \\(store id {recorded}\\).*EMBEDLINE_STORE_URI"
    for attempt in (lambda: ingest(workspace, debian_case),
                    lambda: save_golden(Workspace.from_env(), "debian", pairs),
                    lambda: embedline.connect(workspace.home).validate("debian")):
        with pytest.raises(CatalogMismatch, match=refused):
            attempt()
    assert runs_recorded(workspace) == runs and not any((workspace.home / "staging").iterdir())
    assert (workspace.home / "golden" / "debian.jsonl").read_text() == stale  # refused: nothing written
    monkeypatch.setenv("EMBEDLINE_STORE_URI", str(shared))
    assert ingest(workspace, debian_case).promoted  # the right store still serves

    stranger = other_workspace(tmp_path, workspace, "stranger")  # another catalog's host on that store
    with pytest.raises(CatalogMismatch, match=f"file store {shared} is another catalog's"):
        ingest(stranger, debian_case)
    assert runs_recorded(stranger) == 0

    shutil.copy(shared / STORE_ID, workspace.home / STORE_ID)  # the shared store lost for good: adopt one
    monkeypatch.delenv("EMBEDLINE_STORE_URI")
    store_identity._FILE_STORE_CHECKS.clear()  # a new process (this one decided the home once)
    assert files.open_store(Workspace.from_env()).uri == str(workspace.home)


class Bindings:
    """Two catalogs and three file stores, driven by random operations: the model the property checks."""

    def __init__(self, root: Path):
        self.homes = [root / f"catalog-{i}" for i in range(2)]
        self.stores = [root / f"store-{i}" for i in range(3)]
        self.bound: dict[int, str] = {}  # catalog → the store id it recorded

    def ws(self, c: int, s: int) -> Workspace:
        home = self.homes[c]
        return Workspace.from_env(home, settings=load(home=home, store_uri=str(self.stores[s])))

    def store_id(self, s: int) -> str | None:
        path = self.stores[s] / STORE_ID
        return path.read_text() if path.exists() else None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["bind", "open", "adopt", "wipe"]), st.integers(0, 1),
                          st.integers(0, 2)), max_size=12))
@example([("bind", 0, 0), ("bind", 1, 0), ("open", 1, 0), ("bind", 1, 1), ("open", 0, 1)])
@example([("bind", 0, 0), ("wipe", 0, 0), ("open", 0, 0), ("bind", 0, 1), ("adopt", 0, 1), ("open", 0, 1)])
def test_a_catalog_uses_one_file_store_whatever_the_order_of_binds_and_opens(tmp_path_factory, operations):
    """Once a catalog records a store, only a store with that id opens for it; a store never serves two
    catalogs; a refused operation writes no store id."""
    model = Bindings(tmp_path_factory.mktemp("bindings"))
    for op, c, s in operations:
        store_identity._FILE_STORE_CHECKS.clear()  # what another process would see
        ws, before = model.ws(c, s), model.store_id(s)
        expected_ok = {"bind": c not in model.bound and (before is None or before.startswith(
                           catalog.catalog_id(ws))) or model.bound.get(c) == before,
                       "open": c not in model.bound or model.bound[c] == before}.get(op)
        if op == "adopt" and c in model.bound:
            model.stores[s].mkdir(parents=True, exist_ok=True)
            (model.stores[s] / STORE_ID).write_text(model.bound[c])
            continue
        if op == "wipe":
            shutil.rmtree(model.stores[s], ignore_errors=True)
            continue
        if op == "adopt":
            continue
        action = store_identity.bind_file_store if op == "bind" else files.open_store
        try:
            action(ws)
            ok = True
        except CatalogMismatch:
            ok = False
        assert ok == expected_ok, (op, c, s, model.bound, before)
        if op == "bind" and ok:
            model.bound.setdefault(c, model.store_id(s))
        if not ok:
            assert model.store_id(s) == before  # refused: nothing written
        assert (catalog.file_store(ws) or (None,))[0] == model.bound.get(c)
    for c, recorded in model.bound.items():  # each its own: a store bound by one refuses the other
        assert recorded.startswith(catalog.catalog_id(model.ws(c, 0)))


def test_a_host_on_another_lance_binds_no_file_store_and_a_new_catalog_is_told_how_to_start(
        workspace, debian_case, tmp_path, monkeypatch):
    stranger = other_workspace(tmp_path, workspace, "stranger")
    ingest(stranger, debian_case)
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", stranger.lance_uri)  # mistyped: another catalog's Lance
    monkeypatch.setenv("EMBEDLINE_STORE_URI", str(tmp_path / "empty-store"))
    with pytest.raises(CatalogMismatch, match="Lance store of another catalog"):
        ingest(workspace, debian_case)
    assert catalog.file_store(workspace) is None and not (tmp_path / "empty-store" / STORE_ID).exists()

    monkeypatch.delenv("EMBEDLINE_LANCE_URI")
    monkeypatch.delenv("EMBEDLINE_STORE_URI")
    ingest(workspace, debian_case)
    workspace.catalog_path.unlink()  # a new catalog in the old home: its store-id is the old catalog's
    shutil.rmtree(workspace.lance_uri)
    add_model(workspace, "tiny", catalog.list_models(stranger)[0]["path"])
    with pytest.raises(CatalogMismatch, match=f"file store {workspace.home} is another catalog's.*A new "
                                              f"catalog needs a store without a store-id.*remove "
                                              f"{workspace.home / STORE_ID}"):
        ingest(workspace, debian_case)
    (workspace.home / STORE_ID).unlink()
    assert ingest(workspace, debian_case).promoted


UNBIND = "UPDATE catalog_identity SET file_store = NULL"  # what the refusal tells an operator to run


def test_the_first_bind_after_the_upgrade_needs_the_files_the_catalog_kept(workspace, debian_case, tmp_path,
                                                                         monkeypatch):
    """The host that forgot EMBEDLINE_STORE_URI may run first: a store without the golden queries a
    version measured (their gate still on) is not the catalog's, and binds nothing; the store that has
    them binds. Where the catalog has no such history a wrong store binds, and `sql --write` undoes it."""
    records = [json.loads(line) for line in debian_case.read_text().splitlines()]
    shared = tmp_path / "shared-store"
    monkeypatch.setenv("EMBEDLINE_STORE_URI", str(shared))
    pairs = [{"query": r["text"], "doc_id": r["id"]} for r in records[1:] if len(r["text"]) < 120][:10]
    save_golden(Workspace.from_env(), "debian", pairs)
    ingest(workspace, debian_case)
    with duckdb.connect(str(workspace.catalog_path)) as con:  # as the catalog was before the upgrade
        con.execute("UPDATE catalog_identity SET file_store = NULL")
    (shared / STORE_ID).unlink()

    monkeypatch.delenv("EMBEDLINE_STORE_URI")
    with pytest.raises(CatalogMismatch, match=f"file store {workspace.home} lacks golden/debian.jsonl, which "
                                              "this catalog's runs kept.*EMBEDLINE_STORE_URI"):
        store_identity.bind_file_store(Workspace.from_env(), kept_files)
    assert catalog.file_store(workspace) is None and not (workspace.home / STORE_ID).exists()
    catalog.set_gates(workspace, "debian", {"min_golden_recall": 0.0})  # retired: the file proves nothing
    assert kept_files(workspace) == []
    catalog.set_gates(workspace, "debian", {})
    monkeypatch.setenv("EMBEDLINE_STORE_URI", str(shared))
    rewrite(debian_case, 0, "edited after the upgrade")
    assert ingest(workspace, debian_case).promoted
    assert catalog.file_store(workspace) == ((shared / STORE_ID).read_text(), str(shared))

    run_cli("sql", UNBIND, "--write", home=workspace.home, check=True)
    (shared / STORE_ID).unlink()
    (workspace.home / "golden").mkdir(exist_ok=True)
    shutil.copy(shared / "golden" / "debian.jsonl", workspace.home / "golden")  # a stale copy passes for it
    monkeypatch.delenv("EMBEDLINE_STORE_URI")
    store_identity.bind_file_store(Workspace.from_env(), kept_files)  # the wrong host binds first
    monkeypatch.setenv("EMBEDLINE_STORE_URI", str(shared))
    wrong = f"{shared} \\(store id None\\) is not the one this catalog's runs use: {workspace.home} .*" \
            f"remove {workspace.home}/{STORE_ID}, then .*UPDATE catalog_identity SET file_store = NULL"
    with pytest.raises(CatalogMismatch, match=wrong):
        ingest(workspace, debian_case)
    (workspace.home / "golden" / "debian.jsonl").unlink()  # the stale copy gone, the store-id left
    run_cli("sql", UNBIND, "--write", home=workspace.home, check=True)
    monkeypatch.delenv("EMBEDLINE_STORE_URI")
    with pytest.raises(CatalogMismatch, match=f"file store {workspace.home} lacks golden/debian.jsonl"):
        store_identity.bind_file_store(Workspace.from_env(), kept_files)  # its own id adopts nothing
    monkeypatch.setenv("EMBEDLINE_STORE_URI", str(shared))
    rewrite(debian_case, 0, "edited after the unbind")
    assert ingest(workspace, debian_case).promoted
    assert catalog.file_store(workspace)[1] == str(shared)


def test_a_sql_write_session_reads_an_adapter_from_the_file_store(workspace, debian_case):
    """The session attaches the catalog file, which DuckDB then opens no second time in the process: the
    file store's check is decided before."""
    from embedline.storage import sql
    from embedline.tasks.adapter_files import fetch_adapter

    ingest(workspace, debian_case)
    files.open_store(workspace).write_bytes("adapters/x.npz", b"weights")
    store_identity._FILE_STORE_CHECKS.clear()  # a new process
    with sql.connect(workspace, write=True) as con:
        assert con.execute("SELECT count(*) FROM catalog.runs").fetchone()[0] == 1
        digest = hashlib.sha256(b"weights").hexdigest()
        assert Path(fetch_adapter(workspace, "adapters/x.npz", digest)).read_bytes() == b"weights"
