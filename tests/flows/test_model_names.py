"""A model name keeps the weights something was embedded with: `models add` of other files under it is
refused, the same files again are fine, and search refuses vectors its registration did not make."""

import shutil

import pytest

import embedline
from embedline.errors import BadInput, ModelConflict
from embedline.storage import catalog, sql
from embedline.tasks.models import add_model, read_model_dir, resolve_model
from embedline.tasks.refresh import query_vector
from embedline.tasks.search import make_embedder, make_query_embedder, search_corpus
from tests.conftest import build_tiny_model, ingest, run_cli


@pytest.fixture
def served(workspace, debian_case, tmp_path):
    """`tiny` serves debian; `other` is a folder of other weights of the same shape (same dim)."""
    ingest(workspace, debian_case)
    return workspace, build_tiny_model(tmp_path / "tiny-v2", seed=1)


def _doc_ids(ws) -> list[str]:
    return [hit["doc_id"] for hit in search_corpus(ws, "debian", "window manager", k=5)]


def test_models_add_refuses_other_weights_under_a_name_that_embedded_a_corpus(served):
    ws, other = served
    before, registered = _doc_ids(ws), resolve_model(ws, "tiny")

    with pytest.raises(embedline.ModelConflict) as refused:
        embedline.connect(ws.home).add_model("tiny", other)
    message = str(refused.value)
    assert "\n" not in message and "already embedded debian" in message
    assert (f"`embedline models add tiny_v2 {other}`, then `embedline refresh debian --model tiny_v2`"
            in message)

    result = run_cli("models", "add", "tiny", str(other), home=ws.home)
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.startswith("error: model 'tiny' already embedded debian")
    assert "embedline refresh debian --model tiny_v2" in result.stderr

    assert resolve_model(ws, "tiny").key() == registered.key()  # the catalog kept the spec
    assert _doc_ids(ws) == before


def test_the_same_files_again_only_move_the_path_and_an_unused_name_takes_any_files(served, tiny_model_dir,
                                                                                    tmp_path):
    from embedline.flows.refresh import refresh_model

    ws, other = served
    before, registered = _doc_ids(ws), resolve_model(ws, "tiny")
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved" / "tiny")

    spec = add_model(ws, "tiny", str(moved))  # the same weights elsewhere: no error
    assert spec.key() == registered.key() and resolve_model(ws, "tiny").path == str(moved)
    assert _doc_ids(ws) == before
    assert refresh_model("debian", "tiny", home=str(ws.home)) == (None, None)  # prod already serves it
    with pytest.raises(ModelConflict):  # registering the same files again did not loosen the name
        add_model(ws, "tiny", str(other))

    add_model(ws, "spare", str(tiny_model_dir))
    assert add_model(ws, "spare", str(other)).fingerprint != registered.fingerprint  # nothing embedded yet


def test_search_sql_and_query_vector_refuse_a_model_registered_over_the_vectors_prod_serves(served,
                                                                                          tiny_model_dir):
    ws, other = served
    before = _doc_ids(ws)
    # what `models add` did before names kept their weights: the spec replaced, the vectors stored stay
    catalog.register_model(ws, "tiny", read_model_dir("tiny", other).to_json())

    with pytest.raises(ModelConflict) as refused:
        search_corpus(ws, "debian", "window manager", k=5)
    assert "corpus 'debian' serves vectors of model 'tiny' made with other files" in str(refused.value)
    assert "embedline models add tiny PATH" in str(refused.value)
    with pytest.raises(ModelConflict):
        query_vector(ws, "debian", "window manager")
    with pytest.raises(ModelConflict):
        make_embedder(ws)("tiny", ["window manager"])
    session = sql.connect(ws, make_embedder(ws), query_embedder=make_query_embedder(ws))
    for call in ("embed('window manager')", "query_vector('debian', 'window manager')"):
        with pytest.raises(BadInput, match="ModelConflict: corpus 'debian' serves vectors of model 'tiny'"):
            sql.execute(session, f"SELECT {call}").fetchall()
    session.close()

    add_model(ws, "tiny", str(tiny_model_dir))  # the files debian was embedded with: taken back
    assert _doc_ids(ws) == before
