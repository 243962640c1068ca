"""Precision is provenance, not identity: a corpus embedded at bf16 and refreshed at fp32 (a mixed pool of
bf16-capable and AVX2-only machines) re-embeds nothing for it, each run records what it ran under, and
rows of both precisions pass the same gates as one model's."""

import json

from embedline.storage import catalog
from tests.conftest import ingest


def test_a_bf16_run_then_an_fp32_run_re_embeds_nothing_and_each_run_records_its_precision(
        workspace, debian_case):
    first = ingest(workspace, debian_case, precision="bf16")
    second = ingest(workspace, debian_case, precision="fp32")
    assert first.chunks_embedded > 0 and first.promoted
    assert (second.docs_unchanged, second.docs_changed, second.chunks_embedded) == (120, 0, 0)

    records = [json.loads(line) for line in debian_case.read_text().splitlines()]
    records[0]["text"] += " Now with tiling support."
    debian_case.write_text("".join(json.dumps(r) + "\n" for r in records))
    third = ingest(workspace, debian_case, precision="fp32")  # fp32 rows join a bf16 version
    assert (third.docs_changed, third.status, third.promoted) == (1, "succeeded", True)

    with catalog.reading(workspace) as con:
        runs = con.execute("SELECT precision, model_key FROM runs ORDER BY run_id").fetchall()
        keys = con.execute("SELECT DISTINCT model_key FROM versions").fetchall()
    assert [r[0] for r in runs] == ["bf16", "fp32", "fp32"]
    assert len({r[1] for r in runs}) == 1 and len(keys) == 1  # one model, whatever the precision
