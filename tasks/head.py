"""The sentence-embedding head: what sentence-transformers' Pooling and Dense modules do after the
Transformer, in plain torch on right-padded batches (the engine pads each batch to its longest row).

Each pooling mode mirrors `sentence_transformers` 6.2 `Pooling._forward_padded`, including
`include_prompt=False` (the prompt's tokens are masked out; weighted mean keeps the other tokens'
position weights), so a registered model gives the vectors its own `encode` gives.
"""

import json
from pathlib import Path

from embedline.tasks.model_stack import dense_weights


def pool(torch, hidden, mask, pooling: str, skip: int = 0):
    """Pool token states (batch, tokens, dim) over real tokens; `skip` leading tokens (the prompt)
    are left out. Several modes ("cls+mean") are concatenated in the order given."""
    if skip:
        mask = mask.clone()
        mask[:, :skip] = 0
    parts = [POOLERS[mode](torch, hidden, mask) for mode in pooling.split("+")]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _cls(torch, hidden, mask):
    """The first counted token: [CLS], or the first after a prompt that pooling leaves out."""
    first = mask.to(torch.int32).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


def _max(torch, hidden, mask):
    return hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values


def _token_sum(torch, hidden, mask):
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1), weights.sum(dim=1).clamp(min=1e-9)


def _mean(torch, hidden, mask):
    total, count = _token_sum(torch, hidden, mask)
    return total / count


def _mean_sqrt_len(torch, hidden, mask):
    total, count = _token_sum(torch, hidden, mask)
    return total / torch.sqrt(count)


def _weighted_mean(torch, hidden, mask):
    """Token i (from 1) weighs i: later tokens count more (SGPT-style decoders)."""
    positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
    weights = mask.unsqueeze(-1).to(hidden.dtype) * positions
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _last_token(torch, hidden, mask):
    """The last real token's state (causal models read the whole text there)."""
    found, from_end = mask.flip(1).max(dim=1)
    from_end = torch.where(found == 0, hidden.shape[1] - 1, from_end)
    last = hidden.shape[1] - 1 - from_end
    masked = hidden * mask.unsqueeze(-1).to(hidden.dtype)
    return masked[torch.arange(hidden.shape[0], device=hidden.device), last]


POOLERS = {"cls": _cls, "max": _max, "mean": _mean, "mean_sqrt_len_tokens": _mean_sqrt_len,
           "weightedmean": _weighted_mean, "lasttoken": _last_token}


def load_dense(torch, root: str | Path, folder: str, device: str):
    """One Dense module as a torch callable: linear, then its activation, plus its residual if any."""
    path = Path(root) / folder
    config = json.loads((path / "config.json").read_text())
    weights_file = dense_weights(path)
    if weights_file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights_file))
    else:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    linear = torch.nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
    linear.load_state_dict(
        {k.removeprefix("linear."): v for k, v in state.items() if k.startswith("linear.")}
    )
    activation_name = config.get("activation_function", "torch.nn.modules.activation.Tanh").rsplit(".", 1)[-1]
    activation = getattr(torch.nn, activation_name)()
    residual = None
    if config.get("use_residual"):
        residual = torch.nn.Identity()
        if config["in_features"] != config["out_features"]:
            residual = torch.nn.Linear(config["in_features"], config["out_features"], bias=False)
            residual.weight.data.copy_(state["residual.weight"])
    layers = torch.nn.ModuleList([linear, activation] + ([residual] if residual is not None else []))
    layers.to(device).eval()

    def apply(x):
        out = activation(linear(x))
        return out + residual(x) if residual is not None else out

    return apply
