"""Model files in the file store, keyed by name + fingerprint: a worker without a model's folder fetches
the registered model's files from `<store>/models/<name>-<fingerprint>/` into
`<home>/cache/models/<fingerprint>/`, and uses them only if they fingerprint the same.

`embedline models push NAME` puts a host's copy there, then (last) the manifest
`models/<name>-<fingerprint>.manifest.json`: each file's relative name and full sha256. A fetch takes
only the manifest's files and checks every one, so a push still running, or one from before manifests,
reads as "not pushed yet" (push again). With a local store the folder is used in place.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from embedline.errors import BadInput
from embedline.storage import files, store_identity
from embedline.storage.files import file_digest


def model_key(name: str, fingerprint: str) -> str:
    return f"models/{name}-{fingerprint}"


def manifest_key(name: str, fingerprint: str) -> str:
    return f"{model_key(name, fingerprint)}.manifest.json"


def push_model(ws, name: str) -> str:
    """Upload this host's files of registered model `name` to the store, the manifest last; returns
    where they went."""
    from embedline.tasks.evaluation import kept_files
    from embedline.tasks.models import resolve_model

    spec = resolve_model(ws, name)
    store_identity.bind_file_store(ws, kept_files)  # files pushed where no worker reads them would not serve
    store = files.open_store(ws)
    key = model_key(spec.name, spec.fingerprint)
    folder = Path(spec.path)
    if store.remote or folder.resolve() != Path(store.root, key):
        store.upload_folder(folder, key)
    manifest = {path.relative_to(folder).as_posix(): file_digest(path)
                for path in sorted(p for p in folder.rglob("*") if p.is_file())}
    store.write_text(manifest_key(spec.name, spec.fingerprint), json.dumps({"files": manifest}, indent=1))
    return store.uri_of(key)


def fetch_model(ws, name: str, fingerprint: str) -> Path | None:
    """A local folder with the stored files of model `name` at `fingerprint` (fetched into the cache
    once, each file checked against the manifest), or None when the store holds no finished push."""
    from embedline.tasks.models import fingerprint_model_dir

    store = files.open_store(ws)
    key = model_key(name, fingerprint)
    if not store.remote:
        folder = Path(store.root, key)
        return folder if Path(folder, "config.json").is_file() else None
    cached = ws.home / "cache" / "models" / fingerprint
    if Path(cached, "config.json").is_file():
        return cached
    if not store.exists(manifest_key(name, fingerprint)):
        return None
    manifest = json.loads(store.read_text(manifest_key(name, fingerprint)))["files"]
    for item in manifest:
        check_relative(item, store.uri_of(manifest_key(name, fingerprint)))
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{fingerprint}.", dir=cached.parent))
    try:
        for item, expected in manifest.items():
            found = file_digest(store.download(f"{key}/{item}", partial / item))
            if found != expected:
                raise BadInput(f"model file {store.uri_of(f'{key}/{item}')} has sha256 {found[:16]}…, its "
                               f"manifest says {expected[:16]}…: push the model again "
                               f"(`embedline models push {name}`)")
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


def check_relative(name: str, manifest_uri: str) -> None:
    """Refuse a file name that would land outside the model's cache folder."""
    parts = name.split("/")
    absolute = PurePosixPath(name).is_absolute() or "\\" in name
    if not name or absolute or any(part in ("", ".", "..") for part in parts):
        raise BadInput(f"{manifest_uri} lists {name!r}, not a plain relative file name: the store was "
                       "written by something else; push the model again (`embedline models push NAME`)")
