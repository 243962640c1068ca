"""Read a source into `Document`s, streaming; records that cannot be used become `Rejected`.

Supported: JSONL (optionally .gz), CSV, Parquet, a folder of .txt/.md/.html files, and a glob pattern
matching files of those types.
"""

import csv
import fnmatch
import glob
import gzip
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path

from embedline.errors import BadInput
from embedline.tasks.documents import Document, Rejected

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")


@dataclass(frozen=True)
class FieldMap:
    id_field: str = "id"
    text_field: str = "text"
    title_field: str = "title"
    max_chars: int = 1_000_000  # longer documents are quarantined, not silently truncated


QUERY_PREFIX = "query:"


def read_source(source: str, fields: FieldMap) -> Iterator[Document | Rejected]:
    """Documents of `source` in order; bad records as `Rejected` (with position and reason).

    `source` is a file, a folder of text files, a glob pattern (`docs/*.md`, `dumps/**/*.jsonl`: the
    matching files of supported types, in sorted order), or `query:<SQL>` for the rows of a DuckDB query.
    """
    if source.startswith(QUERY_PREFIX):
        return to_documents(_read_query(source[len(QUERY_PREFIX):]), fields)
    path = Path(source)
    if path.is_dir():
        files, unlisted = _folder_files(path)
        records = chain(_unlisted(unlisted), _read_text_files(files, path, fields))
    elif path.exists():
        records = _read_file(path, path.parent, fields)
    elif _is_pattern(source):
        root = _pattern_root(source)
        unlisted = _walk(root, partial(_glob_enters, root, Path(source).parts[len(root.parts):-1]))[1]
        records = chain(_unlisted(unlisted), _read_files(_glob_files(source), root, fields))
    else:
        raise BadInput(f"source {source} does not exist")
    return to_documents(records, fields)


def _walk(root: Path, enters: Callable[[Path], bool] | None = None) -> tuple[list[Path], list[OSError]]:
    """The files under `root` (in the folders `enters` lets it into; None: all) and the errors of the
    folders that could not be listed: `rglob` and `glob` skip those silently, so their documents would
    look deleted."""
    files: list[Path] = []
    unlisted: list[OSError] = []
    for folder, subfolders, names in os.walk(root, onerror=unlisted.append):
        files += [Path(folder, name) for name in names]
        if enters is not None:
            subfolders[:] = [name for name in subfolders if enters(Path(folder, name))]
    return files, unlisted


def _glob_enters(root: Path, folder_parts: tuple[str, ...], folder: Path) -> bool:
    """Whether glob lists `folder` for a pattern whose folder parts below `root` are `folder_parts`: an
    unreadable folder the pattern never reaches (another user's, `lost+found`) must not stop deletions."""
    return _parts_match(folder.relative_to(root).parts, folder_parts)


def _parts_match(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether `path` matches a leading run of `pattern`'s parts as glob matches them (`**`: any number
    of folders; a hidden name only where the pattern's part starts with a dot too)."""
    if not path:
        return True
    if not pattern:
        return False
    hidden = path[0].startswith(".")
    if pattern[0] == "**":
        return _parts_match(path, pattern[1:]) or (not hidden and _parts_match(path[1:], pattern))
    return ((not hidden or pattern[0].startswith(".")) and fnmatch.fnmatchcase(path[0], pattern[0])
            and _parts_match(path[1:], pattern[1:]))


def _unlisted(errors: list[OSError]) -> Iterator[tuple[str, int, Rejected]]:
    """A quarantine row per folder that could not be listed; having no id, it keeps every known document."""
    for exc in errors:
        reason = f"{exc.filename}: folder unreadable ({exc.strerror}); its files were not read"
        yield exc.filename, 0, Rejected(exc.filename, 0, reason)


def _file_kind(path: Path) -> str | None:
    """jsonl, csv, parquet or text by the file's suffix; None for other files."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz")):
        return "jsonl"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    return "text" if name.endswith(TEXT_SUFFIXES) else None


def _read_file(path: Path, root: Path, fields: FieldMap) -> Iterator[tuple[str, int, dict | Rejected]]:
    kind = _file_kind(path)
    if kind == "jsonl":
        return _whole_or_refused(path, _read_jsonl(path))
    if kind == "csv":
        return _whole_or_refused(path, _read_csv(path, fields.max_chars))
    if kind == "parquet":
        return _whole_or_refused(path, _read_parquet(path))
    if kind == "text":
        return _read_text_files([path], root, fields)
    raise BadInput(
        f"{path}: unknown source type; use .jsonl[.gz], .csv, .parquet, a folder or a glob pattern"
    )


def _whole_or_refused(path: Path, records: Iterator) -> Iterator:
    """`records`, or `BadInput` when the file cannot be read to its end (a truncated .gz or Parquet file, a
    corrupt block): a run that did not read the whole source must not decide what was deleted."""
    import zlib

    import pyarrow as pa

    try:
        yield from records
    except (EOFError, OSError, zlib.error, pa.ArrowException) as exc:
        raise BadInput(f"{path}: unreadable past some point ({type(exc).__name__}: {exc}); "
                       "the file looks truncated or corrupt: copy it again") from exc


def _is_pattern(source: str) -> bool:
    return any(c in source for c in "*?[")


def _glob_files(pattern: str) -> list[Path]:
    """Files of supported types matching `pattern` (`**` spans folders), sorted; none is bad input."""
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    files = [p for p in matches if p.is_file() and _file_kind(p) is not None]
    if not files:
        raise BadInput(f"{pattern} matches no .jsonl[.gz], .csv, .parquet, {', '.join(TEXT_SUFFIXES)} file: "
                       "check the pattern")
    return files


def _pattern_root(pattern: str) -> Path:
    """The folder a pattern starts from (its parts before the first wildcard): text files' ids are
    their paths under it, as for a folder source."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if _is_pattern(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path(".")


def _read_files(
    files: list[Path], root: Path, fields: FieldMap
) -> Iterator[tuple[str, int, dict | Rejected]]:
    for file in files:
        yield from _read_file(file, root, fields)


def canonical_source(source: str) -> str:
    """The form recorded in the catalog: an absolute path (so a backfill can re-read it), or the query."""
    return source if source.startswith(QUERY_PREFIX) else str(Path(source).expanduser().resolve())


def to_documents(
    records: Iterator[tuple[str, int, dict | Rejected]], fields: FieldMap
) -> Iterator[Document | Rejected]:
    """Map raw records to documents, rejecting missing ids, empty or huge texts, duplicate ids."""
    seen: set[str] = set()
    for source, position, record in records:
        if isinstance(record, Rejected):
            yield record
            continue
        doc_or_reason = _to_document(record, fields, source, position)
        if isinstance(doc_or_reason, str):
            yield Rejected(source, position, doc_or_reason, _raw(record), _maybe_id(record, fields))
        elif doc_or_reason.doc_id in seen:
            yield Rejected(source, position, f"duplicate id {doc_or_reason.doc_id!r} (first occurrence kept)",
                           _raw(record), doc_or_reason.doc_id)
        else:
            seen.add(doc_or_reason.doc_id)
            yield doc_or_reason


def _to_document(record: dict, fields: FieldMap, source: str, position: int) -> Document | str:
    doc_id = record.get(fields.id_field)
    if doc_id is None or str(doc_id).strip() == "":
        return f"missing id field {fields.id_field!r}"
    text = record.get(fields.text_field)
    if not isinstance(text, str) or not text.strip():
        return f"empty or missing text field {fields.text_field!r}"
    if len(text) > fields.max_chars:
        return f"text has {len(text):,} characters, over the limit of {fields.max_chars:,}"
    title = record.get(fields.title_field) or ""
    skip = {fields.id_field, fields.text_field, fields.title_field}
    metadata = {k: v for k, v in record.items() if k not in skip and v is not None}
    return Document(str(doc_id), text, str(title), metadata, source, position)


def _raw(record: dict) -> str:
    return json.dumps(record, default=str, ensure_ascii=False)


def _maybe_id(record: dict, fields: FieldMap) -> str | None:
    """The record's id, or None where it has none (missing, or blank as an empty CSV cell): a run with
    such a record cannot tell which known documents are absent, so it deletes none."""
    value = record.get(fields.id_field)
    return None if value is None or str(value).strip() == "" else str(value)


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


def _rejected(src: str, number: int, reason: str, text: str) -> tuple[str, int, Rejected]:
    return src, number, Rejected(src, number, f"{src}:{number}: {reason}", text)


def _read_jsonl(path: Path) -> Iterator[tuple[str, int, dict | Rejected]]:
    src = str(path)
    with _open_bytes(path) as fh:
        for number, raw in enumerate(fh, start=1):
            rejected = partial(_rejected, src, number)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield rejected(f"undecodable bytes ({exc.reason} at byte {exc.start})",
                               raw.decode("utf-8", "backslashreplace"))  # every byte kept, readable
                continue
            if not line.strip():
                continue
            line = line.rstrip("\r\n")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield rejected(f"invalid JSON ({exc.msg} at column {exc.colno})", line)
                continue
            if not isinstance(record, dict):
                yield rejected(f"expected a JSON object, got {type(record).__name__}", line)
                continue
            yield src, number, record


def _read_csv(path: Path, max_chars: int) -> Iterator[tuple[str, int, dict | Rejected]]:
    """Rows of a CSV file. The csv module refuses fields over 128 KB by default: the limit is raised to
    twice `max_chars`, so a text up to `max_chars` is read and a longer one quarantined, not a crash."""
    src = str(path)
    csv.field_size_limit(max(csv.field_size_limit(), 2 * max_chars))  # process-wide: only ever raised
    with _open_bytes(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="") as fh:
        reader = csv.DictReader(fh, strict=True)  # an unbalanced quote is an error, not a swallowed file
        try:
            for record in reader:
                if None in record or None in record.values():  # more or fewer fields than the header
                    yield src, reader.line_num, Rejected(
                        src, reader.line_num, f"{src}:{reader.line_num}: a row with another number of fields "
                        f"than the header's {len(reader.fieldnames)}", json.dumps(record, default=str))
                    continue
                yield src, reader.line_num, record
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"{src}: not UTF-8 near row {reader.line_num + 1} ({exc.reason}); re-encode the file"
            ) from exc
        except csv.Error as exc:
            if "field limit" not in str(exc):
                raise BadInput(f"{src}: malformed CSV near row {reader.line_num + 1} ({exc}); fix the file") \
                    from exc
            raise BadInput(
                f"{src}: a field near row {reader.line_num + 1} is over {csv.field_size_limit():,} "
                "characters; check the file's quoting, or raise max_chars"
            ) from exc


def _read_parquet(path: Path) -> Iterator[tuple[str, int, dict | Rejected]]:
    import pyarrow.parquet as pq

    src, position = str(path), 0
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise BadInput(f"{src}: unreadable Parquet file ({exc})") from exc
    for batch in parquet.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            position += 1
            yield src, position, record


def _read_query(query: str) -> Iterator[tuple[str, int, dict | Rejected]]:
    from embedline.storage.query_source import iter_query_rows

    for position, record in enumerate(iter_query_rows(query), start=1):
        yield "query", position, record


def _folder_files(root: Path) -> tuple[list[Path], list[OSError]]:
    """The folder's text files, sorted, and the errors of its subfolders that could not be listed."""
    found, unlisted = _walk(root)
    files = sorted(p for p in found if p.suffix.lower() in TEXT_SUFFIXES and p.is_file())
    if not files and not unlisted:
        raise BadInput(f"{root}: no {', '.join(TEXT_SUFFIXES)} files found")
    return files, unlisted


def _read_text_files(files: list[Path], root: Path,
                     fields: FieldMap) -> Iterator[tuple[str, int, dict | Rejected]]:
    """One record per file: its path under `root` is its id (and `path` metadata), HTML gives its title."""
    for file in files:
        rel = file.relative_to(root).as_posix()
        try:
            data = file.read_bytes()
            body = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"{file}: undecodable bytes ({exc.reason} at byte {exc.start})"
            yield str(file), 1, Rejected(str(file), 1, reason, data.decode("utf-8", "backslashreplace"), rel)
            continue
        except OSError as exc:
            yield str(file), 1, Rejected(str(file), 1, f"{file}: unreadable ({exc.strerror})", doc_id=rel)
            continue
        title, text = _html_to_text(body) if file.suffix.lower() in (".html", ".htm") else (file.stem, body)
        record = {fields.id_field: rel, fields.title_field: title, fields.text_field: text, "path": rel}
        yield str(file), 1, record


def _html_to_text(html: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    return title, soup.get_text("\n", strip=True)
