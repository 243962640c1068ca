"""Shared fixtures: one Prefect harness per session, a tiny random BERT, a fresh workspace per test."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import create_database, running_postgres

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CASES = Path(__file__).parent / "cases"
DEBIAN_CASE = CASES / "debian-120.jsonl"


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """The session's Prefect server; its API URL, for subprocesses that should use it too."""
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield get_current_settings().api.url


@pytest.fixture
def prefect_api_url(prefect_harness) -> str:
    return prefect_harness


def build_tiny_model(target: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A random 2-layer BERT saved with the bundled MiniLM tokenizer and sentence-transformers files."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from embedline.tasks.models import default_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=tokenizer.vocab_size, max_position_embeddings=512)
    BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True}))
    (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def workspace(tmp_path, tiny_model_dir, monkeypatch):
    """A fresh workspace with the tiny model registered as `tiny` (and the default model for SQL)."""
    from embedline.workspace import Workspace
    from embedline.tasks.models import add_model

    ws = Workspace.from_env(tmp_path / "home").ensure()
    add_model(ws, "tiny", str(tiny_model_dir))
    monkeypatch.setenv("EMBEDLINE_HOME", str(ws.home))
    monkeypatch.setenv("EMBEDLINE_MODEL", "tiny")
    return ws


@pytest.fixture
def debian_case(tmp_path) -> Path:
    """A writable copy of the 120-document Debian slice."""
    target = tmp_path / "debian.jsonl"
    shutil.copy(DEBIAN_CASE, target)
    return target


def run_cli(*args: str, home: Path, check: bool = False, own_server: bool = False,
            local_server: str = "") -> subprocess.CompletedProcess:
    """The real `embedline` console script in a subprocess, as a user runs it against a Prefect server:
    the session's (a user's `make serve`), so each command does not start a temporary server of its own
    (seconds each, minutes over the suite); `own_server`: the one-shot path, without PREFECT_API_URL and
    reusing only `local_server`, not a developer's `make serve` (tests/flows/test_startup.py and the demo
    test cover it)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "EMBEDLINE_HOME": str(home)}
    if own_server:
        env.pop("PREFECT_API_URL", None)
        env["EMBEDLINE_LOCAL_PREFECT_URL"] = local_server
    elif PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    exe = Path(sys.executable).with_name("embedline")
    result = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"embedline {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def ingest(ws, source, corpus: str = "debian", model: str = "tiny", **kwargs):
    """Run the real ingest flow (through the session's Prefect harness)."""
    from embedline.flows.ingest import ingest_corpus

    return ingest_corpus(str(source), corpus, model, home=str(ws.home), **kwargs)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL on a free loopback port, for the session; its base URL (`make test` installs
    the `postgresql` package where initdb is missing)."""
    with running_postgres() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new, empty database on the session's server: one per test."""
    return create_database(postgres_server, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["duckdb", "postgres"])
def catalog_url(request) -> str | None:
    """Each catalog backend in turn: None (the local DuckDB file), then a fresh PostgreSQL database."""
    return request.getfixturevalue("postgres_url") if request.param == "postgres" else None
