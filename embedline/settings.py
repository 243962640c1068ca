"""Every `EMBEDLINE_*` setting in one typed place, read at run time and checked at once.

A bad value fails with one line naming the variable (`EMBEDLINE_PRECISION='fp8': ...`), before any
work starts. `embedline config` prints the resolved values with secrets masked.
"""

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from embedline.errors import BadSetting
from embedline.redaction import redact

PREFIX = "EMBEDLINE_"
# Keys whose values are secrets wherever they appear (storage options, URLs, key=value pairs).
SECRET_WORDS = ("password", "secret", "token", "key", "credential")


class Settings(BaseSettings):
    """What a process may be told through the environment (or keyword arguments to `load`)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", validate_default=True)

    home: Path = Field(Path(".embedline"), description="Workspace folder")
    lance_uri: str | None = Field(
        None, description="LanceDB location (default <home>/lance); may be s3://..."
    )
    lance_storage_options: dict[str, str] | None = Field(
        None, description='Object-store options for lance_uri, JSON: {"aws_endpoint": ..., "aws_region": ...}'
    )
    store_uri: str | None = Field(
        None, description="Files runs share (staging, quarantine, reports, adapters): unset = <home>, or "
        "<lance_uri>/_embedline when lance_uri is s3://...; may be s3://bucket/prefix (Lance's options)"
    )
    catalog_url: str | None = Field(
        None, description="Catalog: unset = <home>/catalog.duckdb; postgresql://user@host/db = PostgreSQL"
    )
    catalog_password: SecretStr | None = Field(
        None, description="Password of catalog_url's role where the URL has none: the catalog's connections "
        "only (libpq's PGPASSWORD is every connection's, a postgres_scan source's too)"
    )
    model: str | None = Field(None, description="Default model of SQL's embed(text)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="Embedding precision")
    runtime: Literal["auto", "torch", "openvino"] = Field(
        "auto",
        description="Forward pass: auto (OpenVINO on CPU where installed, else torch), torch, openvino",
    )
    shard_size: int = Field(
        50_000, ge=0, description="Documents to embed above which a run is split (0: never)"
    )
    shard_timeout: float = Field(3600, gt=0, description="Seconds a shard may run, and the gpu pool may go "
                                 "without starting or finishing a shard, before the run cancels its shards")
    index_min_rows: int = Field(20_000, ge=1, description="Rows from which a space gets a vector index")
    local_prefect_url: str = Field(
        "http://127.0.0.1:4200/api", description="A Prefect API a one-shot command without PREFECT_API_URL "
        "reuses when it answers there (`make serve`); empty: always Prefect's temporary server"
    )
    sql_read_paths: str = Field(
        "",
        description="Folders and files a read-only SQL session may read besides the "
        "working directory (separated by ':')",
    )

    @field_validator("home", mode="before")
    @classmethod
    def _home(cls, value):
        """An empty `EMBEDLINE_HOME=` is unset: as "." it made the working folder a workspace (and 0700)."""
        return Path(".embedline") if value is None or not str(value).strip() else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("catalog_url")
    @classmethod
    def _catalog_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"postgres(ql)?://", value):
            raise ValueError("use a postgresql://user[:password]@host[:port]/database URL, or leave it unset")
        return value

    @field_validator("catalog_password")
    @classmethod
    def _catalog_password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        url = info.data.get("catalog_url")
        if url is None:
            raise ValueError("a catalog password needs EMBEDLINE_CATALOG_URL=postgresql://user@host/database")
        parts = urlsplit(url)
        if parts.password or "password=" in parts.query:
            raise ValueError("EMBEDLINE_CATALOG_URL has a password too: keep one of them")
        return value

    @property
    def catalog_password_text(self) -> str | None:
        """The catalog password, for the catalog's own connections only (`storage.postgres`)."""
        return None if self.catalog_password is None else self.catalog_password.get_secret_value()

    @field_validator("store_uri")
    @classmethod
    def _store_uri(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if "://" in value and not re.match(r"(s3|s3a|file)://", value):
            raise ValueError("use s3://bucket/prefix or a local folder, or leave it unset")
        return value

    @field_validator("lance_storage_options", mode="before")
    @classmethod
    def _options(cls, value):
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else None
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        from embedline.names import check_name

        return None if value in (None, "") else check_name(value, "model name")

    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    def shown(self, derived: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
        """(variable, value with secrets masked, what it is) for every setting; an unset one shows its
        `derived` value (what the workspace resolves it to) where given."""
        rows = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value in (None, "") and name in (derived or {}):
                value = derived[name]
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, dict):
                value = json.dumps(mask_mapping(value))
            elif value and any(word in name for word in SECRET_WORDS):
                value = "***"
            elif isinstance(value, str) and value:  # any URL may carry a key (s3://KEY:SECRET@bucket)
                value = redact(value)
            rows.append((PREFIX + name.upper(), "" if value is None else str(value), info.description or ""))
        return rows


def mask_mapping(values: dict) -> dict:
    """The same mapping with the values of secret-looking keys replaced by ***."""
    return {k: ("***" if any(word in k.lower() for word in SECRET_WORDS) else v) for k, v in values.items()}


# Values the Python API was given (`embedline.connect(device="cpu")`), for the calls it makes:
# flows and tasks in the same context read them through `load()` like the environment.
_GIVEN: ContextVar[dict] = ContextVar("embedline_settings", default={})


@contextmanager
def overriding(values: dict) -> Iterator[None]:
    """Within the block, `load()` sees `values` over the environment."""
    token = _GIVEN.set({**_GIVEN.get(), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _GIVEN.reset(token)


def settings_environment() -> dict[str, str]:
    """The values `overriding` put in force, as `EMBEDLINE_*` variables for a child process."""
    return {PREFIX + name.upper(): json.dumps(value) if isinstance(value, dict) else str(value)
            for name, value in _GIVEN.get().items()}


def load(**overrides) -> Settings:
    """The settings from the environment, then `overriding` values, then `overrides` (None ignored);
    a bad value raises `BadSetting` naming the variable."""
    given = {**_GIVEN.get(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return Settings(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        raw = given.get(field, error.get("input"))
        if any(word in field for word in SECRET_WORDS):
            raw = "***"
        elif isinstance(raw, str):  # a URL may carry a key
            raw = redact(raw)
        raise BadSetting(
            f"{PREFIX}{field.upper()}={raw!r}: {error['msg'].removeprefix('Value error, ')}"
        ) from None
    except SettingsError as exc:
        match = re.search(r'field "(\w+)"', str(exc))
        field = match.group(1).upper() if match else "?"
        raise BadSetting(f"{PREFIX}{field}: {exc.__cause__ or exc} (expected JSON)") from None
