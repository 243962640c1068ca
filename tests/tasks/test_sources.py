"""Every bad-input class becomes a `Rejected` with its position and reason; good records survive."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedline.errors import BadInput
from embedline.tasks.documents import Document, Rejected
from embedline.tasks.sources import FieldMap, read_source


def read(path, **fields):
    return list(read_source(str(path), FieldMap(**fields)))


def test_jsonl_bad_records_are_rejected_with_reasons(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": "a", "title": "A", "text": "fine", "section": "x"}),
        "not json",
        json.dumps([1, 2]),
        json.dumps({"title": "no id", "text": "t"}),
        json.dumps({"id": "b", "text": "   "}),
        json.dumps({"id": "a", "text": "duplicate"}),
        json.dumps({"id": "c", "text": "y" * 50}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "d", "text": "\xff\xfe"}\n')
    items = read(path, max_chars=40)
    docs = [i for i in items if isinstance(i, Document)]
    rejected = {i.position: i.reason for i in items if isinstance(i, Rejected)}
    assert [(d.doc_id, d.title, d.metadata) for d in docs] == [("a", "A", {"section": "x"})]
    assert "invalid JSON" in rejected[2] and rejected[2].startswith(f"{path}:2:")
    assert "expected a JSON object" in rejected[3]
    assert "missing id" in rejected[4]
    assert "empty or missing text" in rejected[5]
    assert "duplicate id 'a'" in rejected[6]
    assert "over the limit" in rejected[7]
    assert "undecodable bytes" in rejected[8]
    assert len(items) == 8  # read = documents + rejected: nothing is lost


def test_gzip_jsonl_and_field_mapping(tmp_path):
    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"pkg": "p1", "synopsis": "S", "body": "text one", "v": 3}) + "\n")
    (doc,) = read(path, id_field="pkg", text_field="body", title_field="synopsis")
    assert (doc.doc_id, doc.title, doc.text, doc.metadata, doc.position) == (
        "p1",
        "S",
        "text one",
        {"v": 3},
        1,
    )


def test_csv_and_parquet(tmp_path):
    csv_path = tmp_path / "in.csv"
    csv_path.write_text('id,title,text\n1,One,"first, with comma"\n2,Two,\n')
    items = read(csv_path)
    assert isinstance(items[0], Document) and items[0].text == "first, with comma"
    assert isinstance(items[1], Rejected) and "empty" in items[1].reason
    parquet_path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["alpha", "beta"], "n": [1, 2]}), parquet_path)
    assert [(d.doc_id, d.metadata) for d in read(parquet_path)] == [("x", {"n": 1}), ("y", {"n": 2})]


def test_folder_of_text_markdown_and_html(tmp_path):
    (tmp_path / "a.md").write_text("# Title\nSome markdown")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.html").write_text(
        "<html><title>Page</title><script>x()</script><p>Hello <b>web</b></p></html>"
    )
    (tmp_path / "c.bin").write_bytes(b"\x00")
    docs = read(tmp_path)
    assert [(d.doc_id, d.title) for d in docs] == [("a.md", "a"), ("sub/b.html", "Page")]
    assert "x()" not in docs[1].text and "Hello" in docs[1].text


def test_unusable_sources_fail_with_one_line_errors(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        read(tmp_path / "missing.jsonl")
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(BadInput, match="unknown source type"):
        read(tmp_path / "x.docx")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(BadInput, match="unreadable Parquet"):
        read(tmp_path / "broken.parquet")


def test_content_hash_changes_with_any_stored_field():
    base = Document("a", "text", "title", {"k": 1})
    assert base.content_hash() == Document("a", "text", "title", {"k": 1}).content_hash()
    assert base.content_hash() != Document("a", "text!", "title", {"k": 1}).content_hash()
    assert base.content_hash() != Document("a", "text", "title", {"k": 2}).content_hash()


def test_csv_field_longer_than_the_csv_module_default_is_read(tmp_path):
    path = tmp_path / "big.csv"
    body = "word " * 40_000  # 200 KB, over csv's default 128 KB field limit
    path.write_text(f'id,title,text\nbig,Big,"{body}"\nsmall,Small,tiny\n')
    docs = read(path)
    assert [(d.doc_id, len(d.text)) for d in docs] == [("big", len(body)), ("small", 4)]


def test_csv_field_far_over_max_chars_is_a_one_line_error(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text(f'id,text\nhuge,"{"y" * 2_100_000}"\n')  # over twice max_chars: not even quarantined
    with pytest.raises(BadInput, match=r"huge.csv: a field near row \d+ is over .* characters"):
        read(path)


def test_glob_source_reads_matching_files_in_sorted_order(tmp_path):
    docs_dir = tmp_path / "docs"
    (docs_dir / "sub").mkdir(parents=True)
    (docs_dir / "b.md").write_text("# B\nsecond")
    (docs_dir / "a.md").write_text("# A\nfirst")
    (docs_dir / "sub" / "c.md").write_text("third")
    (docs_dir / "notes.txt").write_text("not matched")
    assert [(d.doc_id, d.text) for d in read(f"{docs_dir}/*.md")] == [
        ("a.md", "# A\nfirst"),
        ("b.md", "# B\nsecond"),
    ]
    assert [d.doc_id for d in read(f"{docs_dir}/**/*.md")] == ["a.md", "b.md", "sub/c.md"]
    (tmp_path / "part-2.jsonl").write_text(json.dumps({"id": "y", "text": "two"}) + "\n")
    (tmp_path / "part-1.jsonl").write_text(json.dumps({"id": "x", "text": "one"}) + "\n")
    assert [d.doc_id for d in read(f"{tmp_path}/part-*.jsonl")] == ["x", "y"]


def test_glob_source_without_a_matching_file_is_bad_input(tmp_path):
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(BadInput, match=r"matches no .*\.md"):
        read(f"{tmp_path}/*.md")
    with pytest.raises(BadInput, match="matches no"):
        read(f"{tmp_path}/*.docx")


def test_a_csv_row_with_another_field_count_is_rejected_without_an_id(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,title,text\na,A,first\nb,B,second,extra\nc,C\nd,D,fourth\n")
    items = list(read_source(str(path), FieldMap()))
    assert [i.doc_id for i in items if isinstance(i, Document)] == ["a", "d"]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert [r.position for r in rejected] == [3, 4] and {r.doc_id for r in rejected} == {
        None
    }  # stops deletions
    assert "another number of fields" in rejected[0].reason


def test_an_unbalanced_quote_in_a_csv_is_a_one_line_error_not_a_swallowed_file(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('id,title,text\na,A,"an "unbalanced" quote\nb,B,second\nc,C,third\n')
    with pytest.raises(BadInput, match="malformed CSV near row"):
        list(read_source(str(path), FieldMap()))


@pytest.mark.parametrize("name", ["docs.jsonl.gz", "docs.csv.gz", "docs.parquet"])
def test_a_truncated_file_is_a_one_line_error_naming_it(tmp_path, name):
    rows = [{"id": f"d{i}", "title": f"t{i}", "text": f"text number {i} " * 40} for i in range(400)]
    whole = tmp_path / f"whole-{name}"
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), whole)
    else:
        lines = [json.dumps(r) for r in rows] if ".jsonl" in name else \
            ["id,title,text"] + [f"{r['id']},{r['title']},{r['text']}" for r in rows]
        whole.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    data = whole.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])  # a copy that stopped half-way
    with pytest.raises(BadInput, match=rf"{name}: (unreadable|not a valid)") as raised:
        read(path)
    assert "\n" not in str(raised.value)


def test_an_upper_case_gz_suffix_is_read_compressed(tmp_path):
    path = tmp_path / "DATA.JSONL.GZ"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"id": "a", "text": "tiling window manager"}) + "\n")
    assert [d.doc_id for d in read(path)] == ["a"]


def test_undecodable_records_keep_every_byte_in_quarantine(tmp_path):
    jsonl, folder = tmp_path / "in.jsonl", tmp_path / "docs"
    jsonl.write_bytes(b'{"id": "d", "text": "caf\xe9"}\n')
    folder.mkdir()
    (folder / "latin1.txt").write_bytes(b"na\xefve text")
    for source, raw in ((jsonl, '{"id": "d", "text": "caf\\xe9"}\n'), (folder, "na\\xefve text")):
        (rejected,) = read(source)
        assert "undecodable bytes" in rejected.reason and rejected.raw == raw


def test_a_glob_lists_only_the_folders_its_pattern_reaches(tmp_path):
    from embedline.tasks.sources import _glob_enters

    pattern = ("2024-*", "docs")  # /srv/exports/2024-*/docs/*.jsonl
    enters = [name for name in ("2024-01", "2024-01/docs", "lost+found", "2023-12", "2024-01/other",
                                ".2024-x", "2024-01/docs/deeper")
              if _glob_enters(tmp_path, pattern, tmp_path / name)]
    assert enters == ["2024-01", "2024-01/docs"]
    assert _glob_enters(tmp_path, ("a", "**"), tmp_path / "a/b/c/d")
    assert not _glob_enters(tmp_path, ("a", "**"), tmp_path / "b/c")
    assert not _glob_enters(tmp_path, ("a", "**"), tmp_path / "a/.git")
    assert _glob_enters(tmp_path, ("*", ".sub"), tmp_path / "x/.sub")
