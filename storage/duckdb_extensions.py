"""DuckDB extensions from their registry packages (`duckdb-extension-NAME`), loaded offline. DuckDB's own
autoload would download them from the network at run time, which a worker may not reach."""

import os
import tempfile
from pathlib import Path

import duckdb

# Extensions a `--query` source may need: Postgres tables, S3/HTTP files, AWS credential chains. The
# postgres package ships `postgres.duckdb_extension`, but DuckDB derives the entry point from the file
# name and expects `postgres_scanner`.
QUERY_EXTENSIONS = {"postgres": "postgres_scanner", "httpfs": "httpfs", "aws": "aws"}


def shipped(name: str) -> Path | None:
    """The signed extension file of package `duckdb-extension-<name>` for this duckdb; None if absent."""
    try:
        package = __import__(f"duckdb_extension_{name}")
    except ImportError:
        return None
    folder = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    path = folder / f"{name}.duckdb_extension"
    return path if path.is_file() else None


def load_installed(con: duckdb.DuckDBPyConnection, names: dict[str, str] = QUERY_EXTENSIONS) -> list[str]:
    """LOAD each installed extension of `names` (package name -> name DuckDB loads it as); the loaded ones."""
    loaded = []
    for package, loader_name in names.items():
        path = shipped(package)
        if path is None:
            continue
        if loader_name == package:
            con.execute(f"LOAD '{_quote(str(path))}'")
        else:
            with tempfile.TemporaryDirectory(prefix="embedline-ext-") as private:  # 0700, this process's
                link = Path(private) / f"{loader_name}.duckdb_extension"
                os.symlink(path, link)
                con.execute(f"LOAD '{_quote(str(link))}'")
        loaded.append(loader_name)
    return loaded


def _quote(text: str) -> str:
    return text.replace("'", "''")
