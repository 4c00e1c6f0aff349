"""L1-regularised logistic regression along a regularisation path (binary and multinomial).

Objective, on standardised features X [n, d] and labels y [n]::

    F(W, b) = mean_i loss(x_i W + b, y_i) + lam * sum_jk |W_jk|

with the logistic loss for two classes (W: [d, 1]) and the multinomial (softmax) loss otherwise
(W: [d, K], element-wise L1, as scikit-learn's saga with penalty="l1"). The intercept b is not
penalised. scikit-learn's C is 1 / (n * lam).

The solver is the glmnet recipe with a proximal Newton inner loop, because n (texts) is large and
the solution is sparse:

* a path of lam values from lam_max (all weights zero) downwards, each warm-started from the last;
* an active set per lam: the previous support plus the sequential strong rule, then a KKT check
  over all features (one pass of X^T R), adding the violators and re-solving until none are left;
* on the active set, proximal Newton: the Hessian of the active columns (from a fixed row subsample
  when n is large; the gradient and the line search always use every row), a FISTA solve of the
  quadratic model with the L1 term, and a backtracking line search on the true objective.

All passes over X are float32 matrix products (torch, so they use every intra-op thread); the small
Hessian and the quadratic model are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso


@dataclass
class PathPoint:
    """One solved point of the path. coef: [K, d] (K = 1 for two classes), intercept: [K]."""

    lam: float
    C: float  # scikit-learn's equivalent C = 1 / (n * lam)
    coef: np.ndarray
    intercept: np.ndarray
    objective: float
    n_nonzero: int  # features with a non-zero weight for any class
    newton_steps: int
    kkt_passes: int


class L1Logistic:
    """Solver state for one training matrix. X: [n, d] float32 (standardised), y: [n] class indices."""

    def __init__(self, X: torch.Tensor, y: np.ndarray, n_classes: int, *, tol: float = 1e-6,
                 hessian_rows: int = 16384, seed: int = 0, max_newton: int = 50) -> None:
        if X.dtype != torch.float32 or X.dim() != 2:
            raise ValueError("X must be a 2-d float32 tensor")
        if n_classes < 2:
            raise ValueError("need at least two classes")
        self.X = X
        self.n, self.d = X.shape
        self.K = 1 if n_classes == 2 else n_classes
        self.n_classes = n_classes
        yi = torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.yi = yi
        if self.K == 1:
            self.Y = yi.to(torch.float32)[:, None]
        else:
            self.Y = F.one_hot(yi, n_classes).to(torch.float32)
        self.tol = tol
        self.max_newton = max_newton
        # Hessian rows: a fixed, seeded subsample keeps each Newton step's cost independent of n
        if self.n > hessian_rows:
            gen = torch.Generator().manual_seed(seed)
            self.hrows: torch.Tensor | None = torch.randperm(self.n, generator=gen)[:hessian_rows].sort().values
        else:
            self.hrows = None
        prior = self.Y.double().mean(0).clamp(1e-12, 1 - 1e-12)
        self.b0 = torch.log(prior / (1 - prior)) if self.K == 1 else torch.log(prior) - torch.log(prior).mean()

    # ------------------------------------------------------------------ loss pieces
    def _terms(self, eta: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """eta: [n, K] -> (mean loss, P [n, K] probabilities, R = P - Y [n, K])."""
        if self.K == 1:
            e = eta[:, 0]
            loss = (F.softplus(e) - self.Y[:, 0] * e).double().sum().item() / self.n
            P = torch.sigmoid(eta)
        else:
            lse = torch.logsumexp(eta, dim=1)
            loss = (lse - eta.gather(1, self.yi[:, None])[:, 0]).double().sum().item() / self.n
            P = torch.softmax(eta, dim=1)
        return loss, P, P - self.Y

    def lambda_max(self) -> float:
        """The smallest lam at which every weight is zero (intercept at the class prior)."""
        eta = self.b0.to(torch.float32).expand(self.n, self.K)
        _, _, R = self._terms(eta)
        return float((self.X.T @ R).abs().max()) / self.n

    # ------------------------------------------------------------------ restricted problem
    @staticmethod
    def _hessian(Z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Z: [m, k+1] (active columns + ones), p: [m] one class's probabilities -> [(k+1), (k+1)] float64:
        the exact diagonal block of that class's logistic or softmax Hessian."""
        w = p * (1 - p)
        return ((Z * w[:, None]).T @ Z).double() / Z.shape[0]

    @staticmethod
    def _quadratic_prox(H: torch.Tensor, g: torch.Tensor, theta: torch.Tensor, lam: float) -> torch.Tensor:
        """argmin_u g.(u - theta) + 1/2 (u - theta)' H (u - theta) + lam * |u[:k]|_1, where the last entry
        of u (the intercept) is not penalised. H: [k+1, k+1] positive definite, all float64.

        The intercept is eliminated exactly (Schur complement); the remaining L1 quadratic is a lasso on
        a k x k design (H' = L L'), solved by scikit-learn's coordinate descent, warm-started at theta."""
        k = H.shape[0] - 1
        q = H @ theta - g  # the model is 1/2 u'Hu - q'u + lam |u_w|_1
        if k == 0:
            return q / H[0, 0]
        hbb = H[k, k]
        hwb = H[:k, k]
        Hs = H[:k, :k] - torch.outer(hwb, hwb) / hbb
        qs = q[:k] - hwb * (q[k] / hbb)
        # more active columns than rows (or collinear ones) leave Hs singular up to float32 noise: add
        # just enough ridge for a factorisation (the line search keeps every step a descent step)
        ridge = 1e-8 * float(Hs.diagonal().mean().abs()) + 1e-12
        while True:
            L, info = torch.linalg.cholesky_ex(Hs)
            if int(info) == 0:
                break
            Hs = Hs + ridge * torch.eye(k, dtype=Hs.dtype)
            ridge *= 100
        ytil = torch.linalg.solve_triangular(L, qs[:, None], upper=False)[:, 0]
        lasso = Lasso(alpha=lam / k, fit_intercept=False, precompute=False, max_iter=100, tol=1e-4,
                      warm_start=True, selection="cyclic")
        lasso.coef_ = theta[:k].numpy().copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lasso.fit(L.T.numpy(), ytil.numpy())
        uw = torch.as_tensor(lasso.coef_, dtype=torch.float64)
        ub = (q[k] - hwb @ uw) / hbb
        return torch.cat([uw, ub[None]])

    def _solve_active(self, A: torch.Tensor, W: torch.Tensor, b: torch.Tensor, lam: float
                      ) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, int]:
        """Proximal Newton on the active columns A. W: [k, K] float64, b: [K] float64.

        Two classes: one logistic block. More: glmnet's multinomial scheme, a cycle over classes, each a
        proximal Newton step on that class's weights with the exact diagonal Hessian block.
        Returns (W, b, objective, R [n, K] at the solution, Newton steps)."""
        XA = self.X.index_select(1, A) if A.numel() < self.d else self.X
        k, K = A.numel(), self.K
        ones = torch.ones(self.n if self.hrows is None else self.hrows.numel(), 1)
        ZS = torch.cat([XA if self.hrows is None else XA.index_select(0, self.hrows), ones], dim=1)
        eta = XA @ W.to(torch.float32) + b.to(torch.float32)
        loss, P, R = self._terms(eta)
        obj = loss + lam * float(W.abs().sum())
        steps = 0
        for _cycle in range(self.max_newton):
            obj_cycle = obj
            for a in range(K):
                steps += 1
                g = torch.cat([(XA.T @ R[:, a]).double(), R[:, a].double().sum()[None]]) / self.n  # [k+1]
                PS = P[:, a] if self.hrows is None else P[:, a].index_select(0, self.hrows)
                H = self._hessian(ZS, PS)
                H.diagonal().add_(1e-6 * float(H.diagonal().mean()) + 1e-10)
                theta = torch.cat([W[:, a], b[a:a + 1]])
                u = self._quadratic_prox(H, g, theta, lam)
                delta = u - theta
                l1_a = float(W[:, a].abs().sum())
                decrease = float(g @ delta) + lam * (float(u[:k].abs().sum()) - l1_a)
                if decrease > -1e-3 * self.tol * max(abs(obj), 1e-3):
                    continue
                d_eta = XA @ delta[:k].to(torch.float32) + float(delta[k])
                t = 1.0
                while True:  # backtracking (Armijo) on the true objective, moving only class a
                    eta_c = eta.clone()
                    eta_c[:, a] += t * d_eta
                    loss_c, P_c, R_c = self._terms(eta_c)
                    obj_c = obj + (loss_c - loss) + lam * (float((theta[:k] + t * delta[:k]).abs().sum()) - l1_a)
                    if obj_c <= obj + 0.25 * t * decrease or t < 1e-4:
                        break
                    t *= 0.5
                if obj_c >= obj:  # no progress possible at float32 resolution
                    continue
                new = theta + t * delta
                W[:, a], b[a] = new[:k], new[k]
                eta, loss, P, R, obj = eta_c, loss_c, P_c, R_c, obj_c
            if obj_cycle - obj <= self.tol * max(abs(obj), 1e-3):
                break
        return W, b, obj, R, steps

    # ------------------------------------------------------------------ one lam
    def fit(self, lam: float, warm: PathPoint | None = None, lam_prev: float | None = None) -> PathPoint:
        """Solve at `lam`, warm-started from `warm` (a point of this path) when given."""
        K, d = self.K, self.d
        if warm is None:
            Wfull = torch.zeros(d, K, dtype=torch.float64)
            b = self.b0.clone()
        else:
            Wfull = torch.as_tensor(warm.coef.T, dtype=torch.float64).clone()
            b = torch.as_tensor(warm.intercept, dtype=torch.float64).clone()
        # gradient at the warm start, for the strong rule
        _, _, R = self._terms(self.X @ Wfull.to(torch.float32) + b.to(torch.float32))
        G = (self.X.T @ R).abs().amax(dim=1) / self.n  # [d]
        lp = lam_prev if lam_prev is not None else (warm.lam if warm is not None else self.lambda_max())
        support = Wfull.abs().amax(dim=1) > 0
        active = support | (G >= 2 * lam - lp)
        if not bool(active.any()):
            active[int(G.argmax())] = True
        steps = passes = 0
        while True:
            A = torch.nonzero(active)[:, 0]
            W, b, obj, R, s = self._solve_active(A, Wfull[A].clone(), b, lam)
            steps += s
            passes += 1
            Wfull = torch.zeros(d, K, dtype=torch.float64)
            Wfull[A] = W
            G = (self.X.T @ R).abs().amax(dim=1) / self.n
            violators = (~active) & (G > lam * (1 + 1e-3))
            if not bool(violators.any()):
                break
            active |= violators
        coef = Wfull.T.numpy().astype(np.float64)
        return PathPoint(lam=lam, C=1.0 / (self.n * lam), coef=coef, intercept=b.numpy().copy(), objective=obj,
                         n_nonzero=int((np.abs(coef).max(axis=0) > 0).sum()), newton_steps=steps,
                         kkt_passes=passes)


def decision(X: np.ndarray | torch.Tensor, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Linear scores [n, K] of standardised X [n, d] for coef [K, d], intercept [K]."""
    Xt = torch.as_tensor(X)
    Wt = torch.as_tensor(coef.T, dtype=Xt.dtype)
    out = Xt @ Wt + torch.as_tensor(intercept, dtype=Xt.dtype)
    return out.numpy().astype(np.float64)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """[n, K] linear scores -> [n, n_classes] probabilities (K = 1: sigmoid, two columns)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-s[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def predict_index(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores)
    return (s[:, 0] > 0).astype(np.int64) if s.shape[1] == 1 else s.argmax(axis=1)
