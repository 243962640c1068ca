"""Model files in the file store, keyed by name + fingerprint: a worker without a model's folder fetches
the registered model's files from `<store>/models/<name>-<fingerprint>/` into
`<home>/cache/models/<fingerprint>/`, and uses them only if they fingerprint the same.

`embedline models push NAME` puts a host's copy there. With a local store the folder is used in place.
"""

import os
import shutil
import tempfile
from pathlib import Path

from embedline.errors import BadInput
from embedline.storage import files


def model_key(name: str, fingerprint: str) -> str:
    return f"models/{name}-{fingerprint}"


def push_model(ws, name: str) -> str:
    """Upload this host's files of registered model `name` to the store; returns where they went."""
    from embedline.tasks.models import resolve_model

    spec = resolve_model(ws, name)
    store = files.open_store(ws)
    key = model_key(spec.name, spec.fingerprint)
    if store.remote or Path(spec.path).resolve() != Path(store.root, key):
        store.upload_folder(Path(spec.path), key)
    return store.uri_of(key)


def fetch_model(ws, name: str, fingerprint: str) -> Path | None:
    """A local folder with the stored files of model `name` at `fingerprint` (fetched into the cache
    once and checked), or None when the store holds none."""
    from embedline.tasks.models import fingerprint_model_dir

    store = files.open_store(ws)
    key = model_key(name, fingerprint)
    if not store.remote:
        folder = Path(store.root, key)
        return folder if Path(folder, "config.json").is_file() else None
    cached = ws.home / "cache" / "models" / fingerprint
    if Path(cached, "config.json").is_file():
        return cached
    keys = store.list(key, recursive=True)
    if f"{key}/config.json" not in keys:
        return None
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{fingerprint}.", dir=cached.parent))
    try:
        for item in keys:
            store.download(item, partial / item[len(key) + 1:])
        found = fingerprint_model_dir(partial)
        if found != fingerprint:
            raise BadInput(f"model files at {store.uri_of(key)} fingerprint {found}, not {fingerprint}: push "
                           f"the registered model's files again (`embedline models push {name}`)")
        try:
            os.rename(partial, cached)
        except OSError:  # another process of this host fetched it first
            pass
        return cached
    finally:
        shutil.rmtree(partial, ignore_errors=True)
