"""Corpus and model names become table names, SQL identifiers and path parts: check them once."""

import re

from embedline.errors import BadName

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Names the SQL session already uses: a corpus with one of them would shadow it.
RESERVED = {"corpora", "models", "runs", "versions", "aliases", "documents", "adapters", "quarantine",
            "schema_version", "alias_history", "space_heads", "metadata_columns", "space_storage", "catalog",
            "main", "temp", "memory", "system"}


def check_name(value: str, kind: str = "name") -> str:
    """Return `value` if it is a lowercase identifier, else raise `BadName`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or "__" in value:
        raise BadName(
            f"invalid {kind} {value!r}: use a lowercase identifier like 'debian' or 'docs_v2' "
            "(a-z, 0-9, single underscores, starting with a letter)"
        )
    if value in RESERVED:
        raise BadName(f"{kind} {value!r} is reserved by the SQL session; pick another name")
    return value


def is_name(value: str, check=None) -> bool:
    """Whether `check_name` (or `check`, e.g. `check_space`) takes `value`."""
    try:
        (check or check_name)(value)
    except BadName:
        return False
    return True


def space_name(corpus: str, model: str) -> str:
    """The LanceDB table of one (corpus, model) pair."""
    return f"{check_name(corpus, 'corpus name')}__{check_name(model, 'model name')}"


def check_space(value: str) -> str:
    """Return `value` if it is a space name (`<corpus>__<model>`, both valid names), else raise `BadName`:
    names read back from the catalog are checked again before they become identifiers or paths."""
    corpus, sep, model = value.partition("__") if isinstance(value, str) else ("", "", "")
    if not sep:
        raise BadName(f"invalid space name {value!r}: expected <corpus>__<model>")
    space_name(corpus, model)
    return value
