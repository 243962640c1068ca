"""The small records that travel between stages."""

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    title: str = ""
    metadata: dict = field(default_factory=dict)
    source: str = ""
    position: int = 0  # 1-based line or row in `source`

    def content_hash(self) -> str:
        """Changes whenever anything stored for the document changes."""
        blob = json.dumps([self.doc_id, self.title, self.text, self.metadata], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Rejected:
    """An input record that could not become a document, with why; it goes to quarantine."""

    source: str
    position: int
    reason: str
    raw: str = ""
    doc_id: str | None = None


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    chunk_index: int
    text: str
