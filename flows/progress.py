"""Progress of a long step, shown both as a Prefect progress artifact and a terminal bar."""

import sys
import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from tqdm import tqdm


class Progress:
    """Call with (docs_done, chunks_done); updates at most every `every` seconds."""

    def __init__(self, total_docs: int, key: str, description: str, every: float = 1.0):
        self.total = max(total_docs, 1)
        self.every = every
        self._last = 0.0
        self._artifact = create_progress_artifact(0.0, key=key, description=description)
        self._bar = tqdm(total=total_docs, unit="doc", desc=description, disable=not sys.stderr.isatty())

    def __call__(self, docs_done: int, chunks_done: int) -> None:
        self._bar.update(docs_done - self._bar.n)
        self._bar.set_postfix(chunks=chunks_done, refresh=False)
        now = time.monotonic()
        if now - self._last >= self.every or docs_done >= self.total:
            self._last = now
            update_progress_artifact(self._artifact, min(100.0, 100.0 * docs_done / self.total))

    def close(self) -> None:
        update_progress_artifact(self._artifact, 100.0)
        self._bar.close()
