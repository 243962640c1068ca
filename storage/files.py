"""The file store runs share: staging, quarantine records, GX reports and adapters.

Its root is `$EMBEDLINE_STORE_URI`; unset, it is `<lance uri>/_embedline` when Lance is on S3 (`s3://`,
`s3a://`) and the home otherwise (a local Lance: today's layout, file for file; any other remote scheme:
the home too, so several hosts then need `EMBEDLINE_STORE_URI=s3://...` set explicitly). LanceDB lists
only `<name>.lance` folders as tables (and space names start with a letter), so that folder never shows
up as a table. A remote store uses what Lance uses: its storage options
(`$EMBEDLINE_LANCE_STORAGE_OPTIONS`), else the `AWS_*` variables: on another machine a worker with the
same settings reads and writes the same files. Store errors come out typed: `NotFound`, or a
`TransientError` naming the store and the settings to check. Only this module touches `pyarrow.fs`
for the store; callers name files by key (`staging/run-3/documents.arrow`) or by the URI `uri_of` gives.
"""

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from embedline.errors import BadSetting, NotFound, TransientError
from embedline.settings import load
from embedline.workspace import Workspace

STORE_FOLDER = "_embedline"  # under an S3 Lance root; not `<name>.lance`, so never a table
READ_BUFFER = 8 << 20  # one ranged GET per 8 MiB read from S3, not one per Arrow batch


def file_digest(path: Path) -> str:
    """The sha256 of a local file, read in 1 MB blocks: what the store's keys and manifests name."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def golden_key(corpus: str) -> str:
    """Where a corpus's golden queries live in the file store (`<home>/golden/` by default, the bucket
    when Lance is on one, so every worker's gate reads the same ones): JSONL of {"query", "doc_id"}."""
    return f"golden/{corpus}.jsonl"


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def store_uri(ws: Workspace) -> str:
    """The store's root for this workspace (see the module)."""
    if ws.settings.store_uri:
        return ws.settings.store_uri.rstrip("/")
    if ws.lance_uri.startswith(("s3://", "s3a://")):
        return f"{ws.lance_uri.split('?', 1)[0].rstrip('/')}/{STORE_FOLDER}"
    return str(ws.home)


class Store:
    """A root (local folder or `s3://bucket/prefix`) and the filesystem that reaches it."""

    def __init__(self, uri: str, options: dict[str, str] | None = None):
        self.uri = uri.rstrip("/")
        self.remote = is_remote(self.uri)
        self.options = options
        self.fs, self.root = locate(self.uri, options)

    def uri_of(self, key: str) -> str:
        return f"{self.uri}/{key.strip('/')}"

    def key_of(self, uri: str) -> str:
        """The key of a URI under this store (a local path works too); `NotFound` if it is elsewhere."""
        for root in (self.uri, self.root):
            if uri.startswith(root + "/"):
                return uri[len(root) + 1:]
        raise NotFound(f"{uri} is not under the file store {self.uri}: give every machine of the run the "
                       "same EMBEDLINE_STORE_URI (or EMBEDLINE_LANCE_URI)")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key.strip('/')}"

    def open_output(self, key: str):
        return open_output(self.uri_of(key), self.options)

    def open_input(self, key: str):
        return open_input(self.uri_of(key), self.options)

    def write_bytes(self, key: str, data: bytes) -> None:
        with store_errors(self.uri_of(key)), self.open_output(key) as out:
            out.write(data)

    def read_bytes(self, key: str) -> bytes:
        with store_errors(self.uri_of(key)), self.open_input(key) as source:
            return source.read()

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def exists(self, key: str) -> bool:
        with store_errors(self.uri_of(key)):
            return self.fs.get_file_info(self._path(key)).type == pafs.FileType.File

    def list(self, prefix: str, recursive: bool = False) -> list[str]:
        """Keys of the files and folders directly under `prefix` (all files below it if `recursive`)."""
        selector = pafs.FileSelector(self._path(prefix), allow_not_found=True, recursive=recursive)
        with store_errors(self.uri_of(prefix)):
            infos = self.fs.get_file_info(selector)
        if recursive:
            infos = [i for i in infos if i.type == pafs.FileType.File]
        return sorted(self.key_of(info.path) for info in infos)

    def delete(self, prefix: str) -> None:
        """Remove a folder and everything below it (nothing if it is not there: two runs ending at once
        both clear an ended run's staging, and the second found it gone between its check and delete)."""
        path = self._path(prefix)
        with store_errors(self.uri_of(prefix)):
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_dir(path)

    def upload_folder(self, folder: Path, prefix: str) -> None:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(folder)}"
            with store_errors(self.uri_of(key)), path.open("rb") as source, self.open_output(key) as out:
                shutil.copyfileobj(source, out, 1 << 20)

    def download(self, key: str, target: Path) -> Path:
        """Copy one file to `target` (written under a unique temporary name, then renamed into place, so
        concurrent copies never see each other's halves; the temporary file goes if the copy fails)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as out:
            temporary = Path(out.name)
            try:
                with store_errors(self.uri_of(key)), self.open_input(key) as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            except BaseException:
                out.close()
                temporary.unlink(missing_ok=True)
                raise
        temporary.replace(target)
        return target

    @contextmanager
    def local_folder(self, prefix: str) -> Iterator[Path]:
        """A local folder for a tool that writes files (GX): the store's own folder when it is local,
        else a temporary one uploaded under `prefix` when the block ends without error."""
        if not self.remote:
            folder = Path(self._path(prefix))
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            return
        with tempfile.TemporaryDirectory(prefix="embedline-store-") as tmp:
            yield Path(tmp)
            self.upload_folder(Path(tmp), prefix)


# -- errors ---------------------------------------------------------------------------------------------
@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """pyarrow's errors as ours: a missing file is `NotFound`, any other I/O error a `TransientError`
    (a network or permission problem a retry or a settings fix cures) naming what to check."""
    try:
        yield
    except FileNotFoundError:
        raise NotFound(f"{uri} does not exist: the run that wrote it may have been cleared, or this "
                       "machine uses another EMBEDLINE_STORE_URI") from None
    except OSError as err:
        raise TransientError(
            f"file store {uri}: {err}. Check EMBEDLINE_STORE_URI (or EMBEDLINE_LANCE_URI) and the "
            "credentials, endpoint and region in EMBEDLINE_LANCE_STORAGE_OPTIONS or the AWS_* variables"
        ) from err


# -- files by URI (a local path, or s3://bucket/key) ---------------------------------------------------
def locate(uri: str, options: dict[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and its path for `uri`; `options`: Lance's storage options (default: this
    process's `$EMBEDLINE_LANCE_STORAGE_OPTIONS`), over the `AWS_*` variables."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), str(Path(uri.removeprefix("file://")).resolve())
    scheme, _, rest = uri.partition("://")
    if scheme not in ("s3", "s3a"):
        raise BadSetting(f"{uri!r}: the file store takes s3://bucket/prefix or a local folder")
    options = load().lance_storage_options if options is None else options
    settings = s3_settings(options or {}, os.environ)
    with store_errors(uri):
        return s3_filesystem(json.dumps(settings, sort_keys=True)), rest.rstrip("/")


def join(uri: str, *names: str) -> str:
    return "/".join([str(uri).rstrip("/"), *names])


def parent(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[0]


def open_output(uri: str, options: dict[str, str] | None = None):
    """A write stream on a new file (replacing any); closing it finishes the upload."""
    fs, path = locate(uri, options)
    with store_errors(uri):
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        return fs.open_output_stream(path)


def open_input(uri: str, options: dict[str, str] | None = None):
    """A buffered read stream (8 MiB reads: few requests to S3, bounded memory)."""
    fs, path = locate(uri, options)
    with store_errors(uri):
        return fs.open_input_stream(path, buffer_size=READ_BUFFER)


def write_arrow(uri: str, schema: pa.Schema) -> "ArrowWriter":
    """An Arrow IPC stream writer on a new file; closing it closes the file."""
    return ArrowWriter(open_output(uri), schema)


def read_arrow(uri: str) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC stream file, one at a time (bounded memory)."""
    with store_errors(uri), open_input(uri) as source:
        yield from pa.ipc.open_stream(source)


def read_text(uri: str) -> str:
    with store_errors(uri), open_input(uri) as source:
        return source.read().decode()


def write_text(uri: str, text: str) -> None:
    with store_errors(uri), open_output(uri) as out:
        out.write(text.encode())


def delete_file(uri: str) -> None:
    fs, path = locate(uri)
    with store_errors(uri):
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)


class ArrowWriter:
    """An Arrow IPC stream writer that owns its output stream."""

    def __init__(self, sink, schema: pa.Schema):
        self._sink = sink
        try:
            self._writer = pa.ipc.new_stream(sink, schema)
        except BaseException:
            sink.close()
            raise

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def write_table(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._sink.close()

    def __enter__(self) -> "ArrowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Each setting's spellings, as Lance (object_store) takes them: options first, then the variables.
S3_SPELLINGS = {
    "endpoint": (("aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url"),
                 ("AWS_ENDPOINT", "AWS_ENDPOINT_URL")),
    "region": (("aws_region", "region", "aws_default_region", "default_region"),
               ("AWS_REGION", "AWS_DEFAULT_REGION")),
    "access_key": (("aws_access_key_id", "access_key_id"), ("AWS_ACCESS_KEY_ID",)),
    "secret_key": (("aws_secret_access_key", "secret_access_key"), ("AWS_SECRET_ACCESS_KEY",)),
    "session_token": (("aws_session_token", "session_token", "aws_token", "token"),
                      ("AWS_SESSION_TOKEN", "AWS_TOKEN")),
    "allow_http": (("aws_allow_http", "allow_http"), ("AWS_ALLOW_HTTP",)),
}


def s3_settings(options: dict[str, str], environ) -> dict[str, str]:
    """Endpoint, region, keys and allow_http from Lance's storage options, else the `AWS_*` variables
    (options win, as in Lance); the result is also the filesystem cache's key, so env changes count."""
    options = {k.lower(): v for k, v in options.items() if v not in (None, "")}
    found = {}
    for setting, (names, variables) in S3_SPELLINGS.items():
        value = next((options[n] for n in names if n in options), None)
        value = value or next((environ[v] for v in variables if environ.get(v)), None)
        if value is not None:
            found[setting] = str(value)
    return found


@functools.lru_cache(maxsize=8)
def s3_filesystem(settings_json: str) -> pafs.S3FileSystem:
    """An S3 filesystem from `s3_settings` (as JSON: the cache key)."""
    settings = json.loads(settings_json)
    allow_http = _true(settings.pop("allow_http", None))
    kwargs = {}
    endpoint = settings.pop("endpoint", None)
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        kwargs["endpoint_override"] = host.rstrip("/")
        kwargs["scheme"] = scheme or ("http" if allow_http else "https")
    elif allow_http:
        kwargs["scheme"] = "http"
    return pafs.S3FileSystem(**kwargs, **settings)


def _true(value) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def open_store(ws: Workspace) -> Store:
    """The workspace's file store (see the module), once found to be the one the catalog's runs use."""
    from embedline.storage import store_identity  # it reads the store through this module

    store = Store(store_uri(ws), ws.lance_storage_options)
    store_identity.require_own_file_store(ws, store)
    return store

