"""A model is known by name and fingerprint: a host whose copy of the files lives elsewhere than the path
registered on another host finds them; a host without them says so in one line."""

import shutil

import pytest

from embedline.errors import NotFound
from embedline.tasks.models import add_model, resolve_model
from embedline.workspace import Workspace
from tests.conftest import build_tiny_model


def test_a_host_finds_the_same_files_in_its_model_store_and_refuses_other_ones(tmp_path, tiny_model_dir):
    ws = Workspace.from_env(tmp_path / "home").ensure()
    registered = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / "tiny")
    spec = add_model(ws, "tiny", str(registered))
    shutil.rmtree(registered)  # the registering host's folder is not on this host

    with pytest.raises(NotFound) as missing:
        resolve_model(ws, "tiny")
    assert str(missing.value).count("\n") == 0 and spec.fingerprint in str(missing.value)
    assert str(ws.models_dir / "tiny") in str(missing.value)

    build_tiny_model(ws.models_dir / "tiny", seed=1)  # a folder under the name, of other weights
    with pytest.raises(NotFound):
        resolve_model(ws, "tiny")

    shutil.rmtree(ws.models_dir / "tiny")
    shutil.copytree(tiny_model_dir, ws.models_dir / "tiny")  # the same files, where this host keeps models
    found = resolve_model(ws, "tiny")
    assert found.path == str(ws.models_dir / "tiny") and found.key() == spec.key()


def test_the_bundled_default_is_found_in_this_hosts_package_whatever_path_was_registered(tmp_path):
    from dataclasses import replace

    from embedline.storage import catalog
    from embedline.tasks.models import DEFAULT_MODEL, default_model_path

    ws = Workspace.from_env(tmp_path / "home").ensure()
    spec = resolve_model(ws, DEFAULT_MODEL)  # registers itself from this host's package
    catalog.register_model(ws, DEFAULT_MODEL, replace(spec, path="/opt/other-host/venv/minilm").to_json())
    assert resolve_model(ws, DEFAULT_MODEL).path == default_model_path()
