"""What a sentence-transformers folder says about its vectors: the module stack and the prompts.

The engine runs Transformer → Pooling → Dense* → Normalize? in plain torch. A folder whose
`modules.json` asks for anything else is refused when it is registered, naming the module, rather
than embedded with a stack that would silently give other vectors than the model's own.
Semantics follow sentence-transformers 6.2 (`Pooling`, `Dense`, `Normalize`, `encode_query/_document`).
"""

import json
from dataclasses import dataclass
from pathlib import Path

from embedline.errors import BadInput

# sentence-transformers' Pooling modes, in the order its legacy `pooling_mode_*` flags concatenate them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}
# Dense activations the engine builds from `torch.nn` with no arguments (as sentence-transformers does).
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU", "Mish", "ELU", "LeakyReLU", "Softplus",
               "Softsign", "Hardtanh", "Tanhshrink")
DOCUMENT_PROMPTS = ("document", "passage", "corpus")  # encode_document's candidates, in its order
SENTENCE_EMBEDDING = "sentence_embedding"


@dataclass(frozen=True)
class Stack:
    """The modules after the Transformer, as the spec keeps them."""

    pooling: str  # one mode, or several joined by "+" (concatenated, like sentence-transformers)
    include_prompt: bool
    dense: tuple[str, ...]  # Dense module folders, relative to the model folder, in order
    normalize: bool
    dim: int  # output dimension of the whole stack


def read_stack(root: Path, hidden: int) -> Stack:
    """The module stack of `modules.json`; a plain Hugging Face folder (none) means mean + normalize."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return Stack("mean", True, (), True, hidden)
    modules = sorted(json.loads(modules_file.read_text()), key=lambda m: int(m.get("idx", 0)))
    kinds = [_kind(m) for m in modules]
    if not kinds or kinds[0] != "Transformer" or modules[0].get("path", "") != "":
        _refuse(root, modules[0] if modules else {"type": "(none)"},
                "the first module must be a Transformer at the folder's top level")
    _check_transformer(root)
    if len(kinds) < 2 or kinds[1] != "Pooling":
        _refuse(root, modules[1] if len(modules) > 1 else {"type": "(none)"},
                "a Pooling module must follow the Transformer")
    pooling, include_prompt = read_pooling(root / modules[1]["path"] / "config.json")
    dim, dense, normalize = hidden * len(pooling.split("+")), [], False
    for module, kind in zip(modules[2:], kinds[2:]):
        if kind == "Dense" and not normalize:
            dim = _check_dense(root, module, dim)
            dense.append(module["path"])
        elif kind == "Normalize" and not normalize:
            _check_io_names(root, module)
            normalize = True
        else:
            _refuse(root, module, "after Pooling only Dense layers and one final Normalize are supported")
    return Stack(pooling, include_prompt, tuple(dense), normalize, dim)


def read_pooling(config_file: Path) -> tuple[str, bool]:
    """Pooling modes and `include_prompt` from a Pooling config (new `pooling_mode` or legacy flags)."""
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for flag, mode in LEGACY_POOLING_FLAGS.items() if config.get(flag)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    for mode in modes:
        if mode not in POOLING_MODES:
            raise BadInput(f"{config_file}: pooling mode {mode!r} is not supported: "
                           f"use one of {', '.join(POOLING_MODES)}")
    return "+".join(modes), bool(config.get("include_prompt", True))


def read_prompts(root: Path) -> tuple[str, str]:
    """(query prompt, document prompt) from `config_sentence_transformers.json`.

    Queries get the `query` prompt; documents the first non-empty of `document`, `passage`, `corpus`
    (sentence-transformers 6 saves an empty `document` next to a user's `passage`); either falls back
    to `default_prompt_name`'s prompt, which plain `encode` would apply to everything.
    """
    config_file = root / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    prompts = {k: v for k, v in (config.get("prompts") or {}).items() if isinstance(v, str)}
    default = prompts.get(config.get("default_prompt_name") or "", "")
    query = prompts.get("query") or default
    document = next((prompts[name] for name in DOCUMENT_PROMPTS if prompts.get(name)), default)
    return query, document


def read_max_tokens(root: Path, config: dict) -> int:
    """`max_seq_length` (sentence-transformers ≤5), else the tokenizer's `model_max_length` (6.x saves
    it there; never past the position embeddings), else the position embeddings, at most 512."""
    st_config = _json(root / "sentence_bert_config.json")
    if st_config.get("max_seq_length"):
        return int(st_config["max_seq_length"])
    positions = int(config.get("max_position_embeddings", 512))
    tokenizer_max = _json(root / "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
        return min(tokenizer_max, positions)
    return min(positions, 512)


def stack_files(root: Path) -> list[Path]:
    """Every module folder's config and weight files (for the fingerprint)."""
    modules = _json(root / "modules.json") or []
    return [f for m in modules if m.get("path") for f in sorted((root / m["path"]).glob("*")) if f.is_file()]


def dense_weights(folder: Path) -> Path | None:
    """A Dense module's weights: `model.safetensors` (sentence-transformers ≥3) or `pytorch_model.bin`."""
    return next(
        (f for f in (folder / "model.safetensors", folder / "pytorch_model.bin") if f.is_file()), None
    )


def _check_transformer(root: Path) -> None:
    """The Transformer must hand the last hidden state to Pooling (6.x configs may say otherwise)."""
    config = _json(root / "sentence_bert_config.json")
    task = config.get("transformer_task", "feature-extraction")
    output = (
        (config.get("modality_config") or {}).get("text", {}).get("method_output_name", "last_hidden_state")
    )
    if task != "feature-extraction" or output not in ("last_hidden_state", ["last_hidden_state"]):
        raise BadInput(
            f"{root}: Transformer module with task {task!r} and output {output!r} is not supported: "
            "embedline pools the last hidden state of a feature-extraction model"
        )


def _check_dense(root: Path, module: dict, in_dim: int) -> int:
    folder = root / module["path"]
    config = _json(folder / "config.json")
    _check_io_names(root, module, config)
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if not activation.startswith("torch.nn.") or activation.rsplit(".", 1)[-1] not in ACTIVATIONS:
        _refuse(root, module, f"its activation {activation!r} is not one of torch.nn's "
                f"{', '.join(ACTIVATIONS)}")
    if config.get("in_features") != in_dim:
        _refuse(root, module, f"it takes {config.get('in_features')} features where the stack gives {in_dim}")
    if dense_weights(folder) is None:
        _refuse(root, module, "its folder has no model.safetensors or pytorch_model.bin")
    return int(config["out_features"])


def _check_io_names(root: Path, module: dict, config: dict | None = None) -> None:
    config = _json(root / module["path"] / "config.json") if config is None else config
    names = {config.get("module_input_name", SENTENCE_EMBEDDING),
             config.get("module_output_name") or SENTENCE_EMBEDDING}
    if names != {SENTENCE_EMBEDDING}:
        _refuse(root, module, f"it reads or writes {sorted(names)}, not the sentence embedding")


def _kind(module: dict) -> str | None:
    """The class name of a sentence-transformers module type; None for any other package's."""
    kind = str(module.get("type", ""))
    return kind.rsplit(".", 1)[-1] if kind.startswith("sentence_transformers.") else None


def _refuse(root: Path, module: dict, why: str):
    name = str(module.get("type", "?")).rsplit(".", 1)[-1]
    where = f" ({module['path']})" if module.get("path") else ""
    raise BadInput(f"{root}: module {name}{where} is not supported: {why}; embedline runs Transformer → "
                   "Pooling → Dense → Normalize stacks only")


def _json(path: Path) -> dict | list:
    return json.loads(path.read_text()) if path.is_file() else {}
