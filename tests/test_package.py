"""The wheel as a user installs it, outside the checkout: one top-level name, the CLI, the Python API
and the demo work from an empty folder, and nothing is written into site-packages."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import DEBIAN_CASE

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ("pyproject.toml", "README.md", "embedline", "flows", "tasks", "storage", "validation")

API_SCRIPT = """
import json, sys
import embedline
db = embedline.connect("home")
db.add_model("tiny", sys.argv[1])
run = db.ingest(sys.argv[2], corpus="docs", model="tiny")
hits = db.search("docs", "tiling window manager", k=3)
docs = db.sql("SELECT count(DISTINCT doc_id) FROM docs").fetchone()[0]
try:
    embedline.connect("home", precision="fp8")
except embedline.BadSetting as exc:
    refused = str(exc)
print(json.dumps({"file": embedline.__file__, "status": run.status, "new": run.docs_new, "hits": len(hits),
                  "keys": sorted(hits[0]), "docs": docs, "refused": refused}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the built wheel; the dependencies come from this venv's site-packages
    as a plain path entry (so the checkout's editable finder is not loaded)."""
    root = tmp_path_factory.mktemp("wheel")
    tree = root / "tree"  # built from a copy: no build/ or egg-info left in (or reused from) the checkout
    tree.mkdir()
    for name in PACKAGED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, tree / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(tree)], check=True, capture_output=True)
    wheel = next((root / "dist").glob("embedline-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    empty = root / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDLINE_")}
    return {"wheel": wheel, "bin": venv / "bin", "site": site, "cwd": empty, "env": env}


def run(installed, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        cwd=installed["cwd"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def site_files(site: Path) -> set[str]:
    return {str(p.relative_to(site)) for p in site.rglob("*") if "__pycache__" not in p.parts}


def test_wheel_holds_only_the_embedline_namespace(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert {n.split("/")[0] for n in names} == {
        "embedline",
        installed["wheel"].name.split("-py")[0] + ".dist-info",
    }
    for part in ("flows/cli.py", "tasks/sources.py", "storage/catalog.py", "validation/suite.py",
                 "data/debian-2k.jsonl.gz", "templates/corpora.yaml"):
        assert f"embedline/{part}" in names
    for generic in ("flows", "tasks", "storage", "validation"):
        missing = run(installed, installed["bin"] / "python", "-c", f"import {generic}")
        assert missing.returncode == 1 and "ModuleNotFoundError" in missing.stderr


def test_cli_and_api_work_from_an_empty_folder(installed, tiny_model_dir):
    from embedline import __version__

    version = run(installed, installed["bin"] / "embedline", "--version")
    assert version.stdout.strip() == f"embedline {__version__}"
    api = run(installed, installed["bin"] / "python", "-c", API_SCRIPT, tiny_model_dir, DEBIAN_CASE)
    assert api.returncode == 0, api.stderr[-3000:]
    out = json.loads(api.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(installed["site"]))  # the installed copy, not the checkout
    assert (out["status"], out["new"], out["hits"], out["docs"]) == ("succeeded", 120, 3, 120)
    assert {"doc_id", "chunk_id", "title", "text", "score"} <= set(out["keys"])
    assert out["refused"].startswith("EMBEDLINE_PRECISION='fp8'")

    rendered = run(installed, installed["bin"] / "embedline", "deployments", "--init")
    assert rendered.returncode == 0, rendered.stderr
    config = (installed["cwd"] / "deploy" / "corpora.yaml").read_text()
    source = next(line.split(":", 1)[1].strip() for line in config.splitlines() if "source:" in line)
    assert Path(source).is_file()  # the packaged demo slice
    assert (
        "entrypoint: embedline.flows.ingest:ingest_corpus" in (installed["cwd"] / "prefect.yaml").read_text()
    )


def test_demo_runs_from_the_wheel_and_writes_nothing_into_site_packages(installed):
    before = site_files(installed["site"])
    demo = run(installed, installed["bin"] / "embedline", "demo", "--home", "demo-home")
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert "validation passed" in demo.stdout and "== embedline search debian" in demo.stdout
    assert site_files(installed["site"]) == before
    assert (installed["cwd"] / "demo-home" / "catalog.duckdb").is_file()
