"""Defaults of a model refresh that the CLI, the Python API, the flows and the benches share: one place, so
a changed default cannot drift between them (and the CLI reads it without importing torch)."""

# Documents the new model embeds to fit and score the adapter: their first chunks are most of time to serve
# (MPNet on 2 CPU cores: ~4 s per 100); each of the 600 held-out titles is 0.17 points of recall, so the
# retention figure is good to a point or two, not to a tenth (raise `sample` for a tighter one).
SAMPLE = 600
QUERY_SAMPLE = 2000  # titles of further documents both models embed as query-like fit pairs
PASSAGE_SAMPLE = 3000  # sentences cut from the corpus's chunks; both models embed them
BATCH_DOCS = 5000  # documents a backfill embeds and commits per run (a crash loses one batch at most)
