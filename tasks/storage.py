"""Per-space storage choices: float16 or float32 vectors, and the kind of vector index.

A choice is kept in the catalog (`space_storage`) and applied by the next run that writes the space,
even one with nothing to embed: it converts the space, builds the chosen index, and is validated and
promoted like any run, so what serves is always a version that passed its gates. `maintain` keeps
the layout (compaction and index fold-in never change it). A space with no choice of its own keeps
the layout its clean head has; a new one takes the layout of the space its corpus's prod serves (a
model change keeps the corpus's layout, and a later move of prod never relays an existing space).
"""

from embedline.errors import NotFound
from embedline.names import check_name, space_name
from embedline.storage import catalog, embeddings
from embedline.storage.vectors import StorageChoice
from embedline.workspace import Workspace


def storage_choice(ws: Workspace, space: str) -> StorageChoice:
    """The space's choice, else its clean head's layout, else its corpus's prod space's choice, else
    float32 + IVF_HNSW_SQ."""
    row = catalog.get_storage(ws, space)
    clean = catalog.clean_version(ws, space) if row is None else None
    if clean is not None and embeddings.space_exists(ws, space):
        held = embeddings.layout(ws, space, clean)
        return StorageChoice(held["vectors"], held["index_type"] or StorageChoice().index_type)
    if row is None:
        prod = catalog.get_alias(ws, space.split("__")[0])
        row = catalog.get_storage(ws, prod["space"]) if prod else None
    return StorageChoice(row["vectors"], row["index_type"]) if row else StorageChoice()


def keep_inherited_choice(ws: Workspace, space: str, choice: StorageChoice) -> None:
    """Before a new space's first write, record the choice it inherited as its own: its small first
    versions carry no vector index, so their layout alone could not say which kind to build later (nor
    could prod's, once prod serves this space)."""
    corpus = space.split("__")[0]
    prod = catalog.get_alias(ws, corpus)
    if (prod is not None and prod["space"] != space and catalog.get_storage(ws, space) is None
            and catalog.clean_version(ws, space) is None):
        catalog.set_storage(ws, corpus, space, choice.vectors, choice.index_type, keep_existing=True)


def set_storage(ws: Workspace, corpus: str, model: str | None = None, vectors: str | None = None,
                index_type: str | None = None) -> dict:
    """Record (what is given of) the storage choice of `corpus`'s space for `model` (default: the model
    prod serves) and return it with the layout the space serves now, and whether a run must apply it."""
    check_name(corpus, "corpus name")
    model = model or catalog.serving_model(ws, corpus)
    if model is None:
        raise NotFound(f"corpus {corpus!r} has no prod version yet: pass --model (Python: model=...) to "
                       "choose the storage of the space it will start with")
    space = space_name(corpus, model)
    current = storage_choice(ws, space)
    if vectors is not None or index_type is not None:
        current = StorageChoice.checked(vectors or current.vectors, index_type or current.index_type)
        catalog.set_storage(ws, corpus, space, current.vectors, current.index_type)
    served = served_layout(ws, space)
    return {"corpus": corpus, "space": space, "vectors": current.vectors, "index": current.index_type,
            "serving_vectors": served["vectors"] if served else None,
            "serving_index": served["index_type"] if served else None,
            "pending": served is not None and current.differs_from(served)}


def served_layout(ws: Workspace, space: str) -> dict | None:
    """The layout of the newest version of `space` that passed (what prod serves when it serves this
    space); None before one has."""
    version = catalog.latest_passed_version(ws, space)
    return None if version is None else embeddings.layout(ws, space, version)


def storage_pending(ws: Workspace, space: str, choice: StorageChoice) -> bool:
    """Whether the space's clean head or the version it serves is laid out otherwise than `choice`."""
    versions = {catalog.clean_version(ws, space), catalog.latest_passed_version(ws, space)} - {None}
    return any(choice.differs_from(embeddings.layout(ws, space, v)) for v in versions)
