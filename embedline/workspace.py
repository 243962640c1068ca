"""Where a workspace keeps its files: one `EMBEDLINE_HOME` folder (default `./.embedline`)."""

import os
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
    def golden_dir(self) -> Path:
        return self.home / "golden"

    def ensure(self) -> "Workspace":
        for path in (self.home, self.reports_dir, self.staging_dir, self.quarantine_dir, self.models_dir):
            path.mkdir(parents=True, exist_ok=True)
        if "://" not in self.lance_uri:
            Path(self.lance_uri).mkdir(parents=True, exist_ok=True)
        return self
