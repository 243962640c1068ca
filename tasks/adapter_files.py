"""Adapter files in the file store, referenced by store key + sha256: any machine that shares the
catalog (and the store) serves an adapter another fitted.

A saved adapter goes to `<store>/adapters/<corpus>__<from>__to__<to>-<sha256[:16]>.npz` (never
overwritten: a key names one content). Loading fetches it once into `<home>/cache/adapters/<sha256>`,
checking the digest first, so a file that changed in the store is refused rather than served.
Catalogs from before (schema < 13) kept an absolute local path and no digest: those still load as they are.
"""

import functools
import os
import tempfile
from pathlib import Path

from embedline.errors import BadInput, NotFound
from embedline.storage import files
from embedline.storage.files import file_digest
from embedline.tasks.adapters import Adapter
from embedline.workspace import Workspace


def adapter_key(corpus: str, from_model: str, to_model: str, digest: str) -> str:
    return f"adapters/{corpus}__{from_model}__to__{to_model}-{digest[:16]}.npz"


def cache_path(ws: Workspace, digest: str) -> Path:
    return ws.home / "cache" / "adapters" / digest


def save_adapter(ws: Workspace, adapter: Adapter, corpus: str, from_model: str,
                 to_model: str) -> tuple[str, str]:
    """Write the adapter to the file store; returns (store key, sha256) for the catalog."""
    with tempfile.TemporaryDirectory(prefix="embedline-adapter-") as tmp:
        path = adapter.save(Path(tmp) / "adapter.npz")
        digest = file_digest(path)
        key = adapter_key(corpus, from_model, to_model, digest)
        files.open_store(ws).write_bytes(key, path.read_bytes())
    return key, digest


def load_adapter(ws: Workspace, path: str, digest: str | None) -> Adapter:
    """The adapter the catalog names: `path` a store key with its sha256 `digest`, or (digest None) an
    absolute local path recorded before adapters lived in the store."""
    if digest is None:
        if not Path(path).is_file():
            raise NotFound(f"adapter file {path} is not on this machine (recorded before adapters lived in "
                           "the file store): run the refresh again to fit one every machine can load")
        return Adapter.load(Path(path))
    return _load_cached(str(fetch_adapter(ws, path, digest)))


def fetch_adapter(ws: Workspace, key: str, digest: str) -> Path:
    """The verified local copy of a stored adapter, fetched into the cache when missing: under a name of
    its own, checked, then renamed into place, so loaders fetching at once on one host never collide."""
    cached = cache_path(ws, digest)
    if cached.is_file():
        return cached
    store = files.open_store(ws)
    cached.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{digest}.", suffix=".partial", dir=cached.parent)
    os.close(handle)
    partial = Path(name)
    try:
        store.download(key, partial)
        found = file_digest(partial)
        if found != digest:
            raise BadInput(f"adapter {store.uri_of(key)} has sha256 {found[:16]}…, the catalog expects "
                           f"{digest[:16]}…: the file was changed or replaced; fit it again with "
                           "`embedline refresh CORPUS --model MODEL`")
        os.replace(partial, cached)  # atomic; a copy another loader put there first had the same bytes
        return cached
    finally:
        partial.unlink(missing_ok=True)


@functools.lru_cache(maxsize=32)
def _load_cached(path: str) -> Adapter:
    """Adapters by their cache path (named by digest: its content never changes)."""
    return Adapter.load(Path(path))
