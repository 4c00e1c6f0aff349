"""Single-layer-perceptron probes (STC paper, appendix A.2): `fit --probe slp`.

Per block, a network with one hidden layer of round(√width) ReLU units on the standardised pooled values,
trained with Adam on mini-batches (seeded) with the task's loss (logistic, softmax, or squared error for a
regression target); after every epoch it is scored on validation, and training stops after `patience`
epochs without a better validation score, keeping the best epoch's weights. Its validation scores go to
the `probes` table (one row per epoch, `probe` = "slp") beside what the LR probes write.

Sparsification needs one importance per input neuron: the L2 norm of its first-layer weights (the
tweet-analysis preprint's "overall importance" of an FFN neuron's connections). It stands where the LR
probe's weight vector stands, so the η rule reads the squared norms, and the aggregation that follows is
the paper's L1 logistic (or lasso) aggregate on the kept neurons.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .probe import PathResult, path_scores, validation_key
from .solver import PathPoint
from .target import TargetScale


@dataclass(frozen=True)
class SLPConfig:
    max_epochs: int = 200
    patience: int = 10  # epochs without a better validation score
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4


@dataclass
class SLP:
    """The trained network: W1 [h, d], b1 [h], W2 [K, h], b2 [K] (float32 arrays)."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    history: list[dict] = field(default_factory=list)

    def decision(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        """Output scores [n, K] (float64) of standardised X [n, d]."""
        Xt = torch.as_tensor(X, dtype=torch.float32)
        with torch.no_grad():
            W1, b1, W2, b2 = (torch.tensor(a) for a in (self.W1, self.b1, self.W2, self.b2))  # copies: may be read-only
            return F.linear(torch.relu(F.linear(Xt, W1, b1)), W2, b2).double().numpy()

    def importance(self) -> np.ndarray:
        """[d]: the L2 norm of each input's first-layer weights."""
        return np.sqrt((self.W1.astype(np.float64) ** 2).sum(axis=0))


def fit_slp(Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray, n_classes: int, metric: str,
            seed: int, cfg: SLPConfig = SLPConfig(), device: str = "cpu") -> tuple[SLP, PathResult]:
    """Train one SLP probe (n_classes 0: a regression target) and return it with its result, whose chosen
    point carries the importances as its [1, d] coefficient row (what sparsification reads)."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    n, d = Xtr.shape
    h = max(1, round(math.sqrt(d)))
    K = 1 if n_classes in (0, 2) else n_classes
    net = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, K))
    with torch.no_grad():  # seeded initialisation (PyTorch's default scheme, from our generator)
        for layer in (net[0], net[2]):
            bound = 1 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
    net = net.to(device)
    X = torch.from_numpy(Xtr).to(device)
    Xv = torch.from_numpy(Xva).to(device)
    target = TargetScale.of(ytr) if n_classes == 0 else TargetScale()  # trained on the working scale
    if K == 1:  # a value, or the positive class of two
        y = torch.as_tensor(target.forward(ytr), dtype=torch.float32, device=device)[:, None]
    else:
        y = torch.as_tensor(ytr, dtype=torch.long, device=device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, rows, since = None, None, [], 0
    for epoch in range(1, cfg.max_epochs + 1):
        t_epoch = time.perf_counter()
        net.train()
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            idx = idx.to(device)
            out = net(X[idx])
            if n_classes == 0:
                loss = F.mse_loss(out, y[idx])
            elif K == 1:
                loss = F.binary_cross_entropy_with_logits(out, y[idx])
            else:
                loss = F.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            s = path_scores(target.inverse(net(Xv).double().cpu().numpy()), yva, n_classes)
        rows.append({"step": epoch, "iterations": -(-n // cfg.batch_size), "n_nonzero": d,
                     **{f"val_{k}": v for k, v in s.items()}, "seconds": time.perf_counter() - t_epoch})
        key = validation_key(s, metric)
        if best is None or key > best[0]:
            best, since = (key, epoch, s), 0
            best_state = [p.detach().cpu().numpy().copy() for p in net.parameters()]
        else:
            since += 1
            if since >= cfg.patience:
                break
    W1, b1, W2, b2 = best_state  # type: ignore[misc]
    if not target.identity:  # the output layer in the target's units
        W2, b2 = W2.astype(np.float64) * target.scale, b2.astype(np.float64) * target.scale + target.center
    slp = SLP(*(a.astype(np.float32) for a in (W1, b1, W2, b2)), history=rows)
    _, epoch, s_val = best  # type: ignore[misc]
    for r in rows:
        r["chosen"] = r["step"] == epoch
    chosen = PathPoint(lam=float("nan"), C=float("nan"), coef=slp.importance()[None, :], intercept=np.zeros(1),
                       objective=float("nan"), n_nonzero=d, iterations=epoch, kkt_passes=0)
    train = path_scores(slp.decision(Xtr), ytr, n_classes)
    return slp, PathResult(chosen, s_val, train, rows, time.perf_counter() - t0, epoch, 0.0)
