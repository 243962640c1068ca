"""The catalog across versions of embedline: an older schema is migrated on first use, reads included."""


def test_a_catalog_an_older_embedline_wrote_is_migrated_when_it_is_only_read(tmp_path):
    import duckdb

    from embedline.storage import catalog
    from embedline.workspace import Workspace

    ws = Workspace.from_env(tmp_path / "home").ensure()
    con = duckdb.connect(str(ws.catalog_path))
    con.execute("CREATE TABLE schema_version (version INTEGER)")
    for version in range(1, 6):  # what 0.1.0 left behind
        con.execute(catalog.MIGRATIONS[version])
        con.execute("INSERT INTO schema_version VALUES (?)", [version])
    con.close()
    assert catalog.list_versions(ws, "debian") == []  # reads the columns migrations 6-8 add
    assert catalog.get_gates(ws, "debian") == {}
    with catalog.reading(ws) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == catalog.SCHEMA_VERSION
