"""Where a workspace keeps its files: one `EMBEDLINE_HOME` folder (default `./.embedline`)."""

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None) -> "Workspace":
        """The workspace named by `home`, else `$EMBEDLINE_HOME`, else `./.embedline`."""
        chosen = home or os.environ.get("EMBEDLINE_HOME") or ".embedline"
        return cls(Path(chosen).expanduser().resolve())

    @property
    def lance_uri(self) -> str:
        return os.environ.get("EMBEDLINE_LANCE_URI") or str(self.home / "lance")

    @property
    def lance_storage_options(self) -> dict[str, str] | None:
        """Object-store settings for an `s3://`-style lance_uri (`$EMBEDLINE_LANCE_STORAGE_OPTIONS`, JSON),
        e.g. {"aws_endpoint": "http://minio:9000", "aws_region": "us-east-1", "allow_http": "true"}."""
        raw = os.environ.get("EMBEDLINE_LANCE_STORAGE_OPTIONS")
        return {k: str(v) for k, v in json.loads(raw).items()} if raw else None

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

    def ensure(self) -> "Workspace":
        for path in (self.home, self.reports_dir, self.staging_dir, self.quarantine_dir, self.models_dir):
            path.mkdir(parents=True, exist_ok=True)
        if "://" not in self.lance_uri:
            Path(self.lance_uri).mkdir(parents=True, exist_ok=True)
        return self
