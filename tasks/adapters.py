"""Adapters between two models' spaces, fitted on paired embeddings of the same texts.

During a model upgrade, queries embedded by the new model are mapped into the old model's space
(new→old) so the old index keeps serving them; after the swap, an old→new adapter serves clients
still sending old-model vectors. Three families, chosen by cross-validated retention:
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
    return Adapter(
        "procrustes", weight, np.zeros(y.shape[1], np.float32), fit_seconds=time.perf_counter() - started
    )


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 0.1) -> Adapter:
    """Affine least squares with an L2 penalty on W: [x 1] @ [W; b] ≈ y."""
    started = time.perf_counter()
    xa = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    penalty = alpha * np.eye(xa.shape[1])
    penalty[-1, -1] = 0.0  # no penalty on the bias
    solution = np.linalg.solve(xa.T @ xa + penalty, xa.T @ y.astype(np.float64))
    return Adapter("ridge", solution[:-1].astype(np.float32), solution[-1].astype(np.float32),
                   fit_seconds=time.perf_counter() - started)


def fit_residual_mlp(x: np.ndarray, y: np.ndarray, hidden: int = 256, epochs: int = 60, lr: float = 3e-3,
                     seed: int = 0, base: Adapter | None = None) -> Adapter:
    """Ridge map (`base` when the caller has fitted it on the same rows) plus a one-hidden-layer
    residual MLP, trained full-batch with a cosine loss.

    60 epochs at lr 3e-3 reach the held-out retention of 200 at 1e-3 within 0.5 point at a third of the
    time (MiniLM→MPNet, 1,000 Debian documents + 1,000 titles). It costs far more than the linear
    families (a fit on 4,000 pairs 768→384: ~60x a ridge fit), so `choose_adapter` races it.
    """
    import torch

    started = time.perf_counter()
    base = base or fit_ridge(x, y)
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    linear = torch.from_numpy(x.astype(np.float32) @ base.weight + base.bias)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, y.shape[1])
    )
    torch.nn.init.zeros_(net[2].weight)
    torch.nn.init.zeros_(net[2].bias)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = 1 - torch.nn.functional.cosine_similarity(linear + net(xt), yt).mean()
        loss.backward()
        optimizer.step()
    mlp = {"w1": net[0].weight.detach().numpy().T.copy(), "b1": net[0].bias.detach().numpy().copy(),
           "w2": net[2].weight.detach().numpy().T.copy(), "b2": net[2].bias.detach().numpy().copy()}
    return Adapter("residual_mlp", base.weight, base.bias, mlp, time.perf_counter() - started)


FITTERS = {"procrustes": fit_procrustes, "ridge": fit_ridge, "residual_mlp": fit_residual_mlp}
LINEAR = ("procrustes", "ridge")  # cheap closed forms; the residual MLP races against the best of them


def recall_at_k(queries: np.ndarray, index: np.ndarray, relevant: np.ndarray, k: int = 10) -> float:
    """Share of queries whose relevant row (an index into `index`) is among the top-k by cosine."""
    scores = _unit(queries) @ _unit(index).T
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    return float(np.mean([relevant[i] in top[i] for i in range(len(queries))]))


@dataclass
class Pairs:
    """The same texts embedded in a source and a target space.

    Row i of `docs_*` and of `queries_*` are sample document i and its query (a title or its opening
    words); `extra_*` are query-like texts of documents outside the sample (or general text), which only
    ever enter fits; `passages_*` are sentences cut from chunks, `passage_owner` the sample document each
    was cut from (-1: a document outside the sample), so a fold that holds a document out drops them too.
    """
    docs_x: np.ndarray
    docs_y: np.ndarray
    queries_x: np.ndarray
    queries_y: np.ndarray
    extra_x: np.ndarray
    extra_y: np.ndarray
    passages_x: np.ndarray | None = None
    passages_y: np.ndarray | None = None
    passage_owner: np.ndarray | None = None

    def __post_init__(self):
        if self.passages_x is None:
            self.passages_x = np.zeros((0, self.docs_x.shape[1]), np.float32)
            self.passages_y = np.zeros((0, self.docs_y.shape[1]), np.float32)
        if self.passage_owner is None:
            self.passage_owner = np.full(len(self.passages_x), -1)
        if not len(self.passages_x) == len(self.passages_y) == len(self.passage_owner):
            raise ValueError("passages_x, passages_y and passage_owner differ in length")

    def reversed(self) -> "Pairs":
        return Pairs(self.docs_y, self.docs_x, self.queries_y, self.queries_x, self.extra_y, self.extra_x,
                     self.passages_y, self.passages_x, self.passage_owner)

    def fit_rows(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows to fit on: the kept documents, their queries and passages, every other text."""
        owned = self.passage_owner >= 0
        passages = ~owned
        passages[owned] = keep[self.passage_owner[owned]]
        return (np.vstack([self.docs_x[keep], self.queries_x[keep], self.extra_x, self.passages_x[passages]]),
                np.vstack([self.docs_y[keep], self.queries_y[keep], self.extra_y, self.passages_y[passages]]))

    def counts(self) -> dict:
        """How many pairs of each kind a fit on every row uses (recorded with the adapter)."""
        return {"documents": len(self.docs_x), "queries": len(self.queries_x), "extra": len(self.extra_x),
                "passages": len(self.passages_x)}


@dataclass
class AdapterChoice:
    adapter: Adapter
    retention: float  # Recall@k(adapted query → target index) / Recall@k(source query → source index)
    recalls: dict  # every candidate's figures, for the note and the catalog


def choose_adapter(pairs: Pairs, folds: int = 5, k: int = 10, margin: float = 0.01,
                   families: tuple[str, ...] | None = None) -> AdapterChoice:
    """Score every family (or only `families`) by cross-validated retention, then refit the best on all pairs.

    In each of `folds` folds, a fifth of the sample documents is held out: their queries, mapped by an
    adapter fitted on the rest, must retrieve them among all sample documents in the target space,
    against the ceiling of the same queries in the source space (a full re-embed). Every document is a
    held-out query once, so the figure rests on the whole sample, not one fifth of it. Passages cut from a
    held-out document leave the fold's fit with it, so no fold fits on text of the documents it scores.

    The residual MLP is raced: it costs most of the choice's time, so after each fold it stays only while
    its recall on the folds so far is within `margin` of the best linear family's. A dropped family is
    reported on the folds it ran (`<kind>_folds`) and cannot be chosen; the chosen one always ran every
    fold, so its retention is the full cross-validated figure.
    """
    n = len(pairs.docs_x)
    same_dim = pairs.queries_x.shape[1] == pairs.docs_y.shape[1]
    fitters = {name: FITTERS[name] for name in families or FITTERS}
    hits = {"full_reembed": 0.0, "raw_mismatch": 0.0, **{name: 0.0 for name in fitters}}
    seconds = {name: 0.0 for name in fitters}
    scored = {name: 0 for name in fitters}  # held-out queries each family was scored on
    runs = {name: 0 for name in fitters}  # folds each family ran
    racing = list(fitters)
    for fold in range(folds):
        held = np.arange(n) % folds == fold
        relevant, queries = np.flatnonzero(held), pairs.queries_x[held]
        weight = held.sum()
        hits["full_reembed"] += weight * recall_at_k(queries, pairs.docs_x, relevant, k)
        if same_dim:
            hits["raw_mismatch"] += weight * recall_at_k(queries, pairs.docs_y, relevant, k)
        fit_x, fit_y = pairs.fit_rows(~held)
        fitted = {}
        for name in racing:
            extra = {"base": fitted["ridge"]} if name == "residual_mlp" else {}  # its ridge part, not twice
            fitted[name] = adapter = FITTERS[name](fit_x, fit_y, **extra)
            hits[name] += weight * recall_at_k(adapter(queries), pairs.docs_y, relevant, k)
            seconds[name] += adapter.fit_seconds
            scored[name] += weight
            runs[name] += 1
        best_linear = max(hits[name] for name in LINEAR)  # all ran the same folds so far: hits compare
        if "residual_mlp" in racing and hits["residual_mlp"] < best_linear - margin * scored["residual_mlp"]:
            racing.remove("residual_mlp")
    recalls = {name: round(total / (scored.get(name) or n), 4) for name, total in hits.items()}
    recalls.update({f"{name}_fit_seconds": round(seconds[name] / max(runs[name], 1), 3) for name in fitters})
    recalls.update({f"{name}_folds": runs[name] for name in fitters})
    recalls.update({"folds": folds, "k": k})
    recalls.update({f"pairs_{kind}": count for kind, count in pairs.counts().items()})
    best = max(racing, key=lambda name: recalls[name])
    adapter = FITTERS[best](*pairs.fit_rows(np.ones(n, bool)))
    full = recalls["full_reembed"]
    return AdapterChoice(adapter, round(recalls[best] / full, 4) if full > 0 else 0.0, recalls)
