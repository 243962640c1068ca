"""Where a workspace keeps its files: one `EMBEDLINE_HOME` folder (default `./.embedline`).

The workspace is its owner's alone: embeddings can be inverted back to much of their text, staging holds
full texts, quarantine raw records. The home is 0700 (fixed on every open), and what embedline creates
in it is made under umask 077 (0700 folders, 0600 files).
"""

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from embedline.settings import Settings, load


@dataclass(frozen=True)
class Workspace:
    home: Path
    settings: Settings = field(default_factory=load, compare=False, repr=False)

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None, settings: Settings | None = None) -> "Workspace":
        """The workspace named by `home`, else `$EMBEDLINE_HOME`, else `./.embedline`."""
        settings = settings or load(home=home)
        chosen = Path(home) if home else settings.home
        return cls(chosen.expanduser().resolve(), settings)

    @property
    def lance_uri(self) -> str:
        return self.settings.lance_uri or str(self.home / "lance")

    @property
    def lance_storage_options(self) -> dict[str, str] | None:
        """Object-store settings for an `s3://`-style lance_uri (`$EMBEDLINE_LANCE_STORAGE_OPTIONS`, JSON),
        e.g. {"aws_endpoint": "http://minio:9000", "aws_region": "us-east-1", "allow_http": "true"}."""
        return self.settings.lance_storage_options

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.duckdb"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def openvino_cache_dir(self) -> Path:
        """Models converted for OpenVINO, keyed by fingerprint + precision (see tasks/runtime_openvino)."""
        return self.home / "cache" / "openvino"

    @property
    def golden_dir(self) -> Path:
        return self.home / "golden"

    def ensure(self) -> "Workspace":
        with private_files():
            for path in (self.home, self.reports_dir, self.staging_dir, self.quarantine_dir, self.models_dir):
                path.mkdir(parents=True, exist_ok=True)
            if "://" not in self.lance_uri:
                Path(self.lance_uri).mkdir(parents=True, exist_ok=True)
        make_private(self.home)
        return self


PRIVATE_UMASK = 0o077


@contextmanager
def private_files() -> Iterator[None]:
    """Files and folders created in the block are the owner's alone (umask 077; process-wide while it
    lasts)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def make_private(home: Path) -> None:
    """Take group and other permissions off a home created before (or by another tool), if it is ours."""
    info = home.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        home.chmod(0o700)
