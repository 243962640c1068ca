"""Adapters between two models' spaces, fitted on paired embeddings of the same texts.

During a model upgrade, queries embedded by the new model are mapped into the old model's space
(new→old) so the old index keeps serving them; after the swap, an old→new adapter serves clients
still sending old-model vectors. Three families, chosen by held-out retention:
- orthogonal Procrustes (a rotation; a dimension change is handled as a semi-orthogonal map),
- ridge affine (W, b by closed form),
- a small residual MLP in torch on top of the ridge map, trained with a cosine loss.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


@dataclass
class Adapter:
    kind: str
    weight: np.ndarray  # (d_from, d_to)
    bias: np.ndarray  # (d_to,)
    mlp: dict = field(default_factory=dict)  # residual MLP weights, if any
    fit_seconds: float = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x.astype(np.float32) @ self.weight + self.bias
        if self.mlp:
            hidden = np.maximum(x.astype(np.float32) @ self.mlp["w1"] + self.mlp["b1"], 0.0)
            y = y + hidden @ self.mlp["w2"] + self.mlp["b2"]
        return _unit(y).astype(np.float32)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, kind=self.kind, weight=self.weight, bias=self.bias, fit_seconds=self.fit_seconds,
                 **{f"mlp_{k}": v for k, v in self.mlp.items()})
        return path

    @classmethod
    def load(cls, path: Path) -> "Adapter":
        data = np.load(path, allow_pickle=False)
        mlp = {k[4:]: data[k] for k in data.files if k.startswith("mlp_")}
        return cls(str(data["kind"]), data["weight"], data["bias"], mlp, float(data["fit_seconds"]))


def fit_procrustes(x: np.ndarray, y: np.ndarray) -> Adapter:
    """argmin ||xW - y|| over W with orthonormal rows or columns (SVD of xᵀy)."""
    started = time.perf_counter()
    u, _, vt = np.linalg.svd(x.T.astype(np.float64) @ y.astype(np.float64), full_matrices=False)
    weight = (u @ vt).astype(np.float32)
    return Adapter("procrustes", weight, np.zeros(y.shape[1], np.float32), fit_seconds=time.perf_counter() - started)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 0.1) -> Adapter:
    """Affine least squares with an L2 penalty on W: [x 1] @ [W; b] ≈ y."""
    started = time.perf_counter()
    xa = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    penalty = alpha * np.eye(xa.shape[1])
    penalty[-1, -1] = 0.0  # no penalty on the bias
    solution = np.linalg.solve(xa.T @ xa + penalty, xa.T @ y.astype(np.float64))
    return Adapter("ridge", solution[:-1].astype(np.float32), solution[-1].astype(np.float32),
                   fit_seconds=time.perf_counter() - started)


def fit_residual_mlp(x: np.ndarray, y: np.ndarray, hidden: int = 256, epochs: int = 200, seed: int = 0) -> Adapter:
    """Ridge map plus a one-hidden-layer residual MLP, trained full-batch with a cosine loss."""
    import torch

    started = time.perf_counter()
    base = fit_ridge(x, y)
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    linear = torch.from_numpy(x.astype(np.float32) @ base.weight + base.bias)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, y.shape[1]))
    torch.nn.init.zeros_(net[2].weight)
    torch.nn.init.zeros_(net[2].bias)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = 1 - torch.nn.functional.cosine_similarity(linear + net(xt), yt).mean()
        loss.backward()
        optimizer.step()
    mlp = {"w1": net[0].weight.detach().numpy().T.copy(), "b1": net[0].bias.detach().numpy().copy(),
           "w2": net[2].weight.detach().numpy().T.copy(), "b2": net[2].bias.detach().numpy().copy()}
    return Adapter("residual_mlp", base.weight, base.bias, mlp, time.perf_counter() - started)


FITTERS = {"procrustes": fit_procrustes, "ridge": fit_ridge, "residual_mlp": fit_residual_mlp}


def recall_at_k(queries: np.ndarray, index: np.ndarray, relevant: np.ndarray, k: int = 10) -> float:
    """Share of queries whose relevant row (an index into `index`) is among the top-k by cosine."""
    scores = _unit(queries) @ _unit(index).T
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    return float(np.mean([relevant[i] in top[i] for i in range(len(queries))]))


@dataclass
class AdapterChoice:
    adapter: Adapter
    retention: float  # Recall@k(adapted new query → old index) / Recall@k(new query → new index)
    recalls: dict  # every candidate's figures, for the note and the catalog


def choose_adapter(fit_x: np.ndarray, fit_y: np.ndarray, query_x: np.ndarray, index_y: np.ndarray,
                   index_x: np.ndarray, relevant: np.ndarray, k: int = 10) -> AdapterChoice:
    """Fit every family on (fit_x → fit_y) and keep the best by held-out retention.

    `query_x`: held-out queries in the source space; `index_y` / `index_x`: the same documents in the
    target / source space; `relevant[i]`: the row of query i's document.
    """
    full = recall_at_k(query_x, index_x, relevant, k)  # the ceiling: a full re-embed with the new model
    raw = recall_at_k(query_x[:, : index_y.shape[1]], index_y, relevant, k) if query_x.shape[1] == index_y.shape[1] else 0.0
    recalls = {"full_reembed": full, "raw_mismatch": raw}
    best = None
    for name, fit in FITTERS.items():
        adapter = fit(fit_x, fit_y)
        recalls[name] = recall_at_k(adapter(query_x), index_y, relevant, k)
        recalls[f"{name}_fit_seconds"] = round(adapter.fit_seconds, 3)
        if best is None or recalls[name] > recalls[best.kind]:
            best = adapter
    retention = recalls[best.kind] / full if full > 0 else 0.0
    return AdapterChoice(best, round(retention, 4), recalls)
