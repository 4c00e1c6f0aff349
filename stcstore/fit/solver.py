"""L1-regularised logistic regression along a regularisation path (binary and multinomial).

Objective, on standardised features X [n, d] and labels y [n]::

    F(W, b) = mean_i loss(x_i W + b, y_i) + lam * sum_jk |W_jk|

with the logistic loss for two classes (W: [d, 1]) and the multinomial (softmax) loss otherwise
(W: [d, K], element-wise L1, as scikit-learn's saga with penalty="l1"). The intercept b is not
penalised. scikit-learn's C is 1 / (n * lam).

The solver follows glmnet's outer recipe, because n (texts) is large and the solution is sparse:

* a path of lam values from lam_max (all weights zero) downwards, each warm-started from the last;
* an active set per lam: the previous support plus the sequential strong rule, then a KKT check
  over all features (one pass of X^T R), adding the violators and re-solving until none are left;
* on the active set, OWL-QN (orthant-wise limited-memory quasi-Newton, Andrew & Gao 2007) over all
  classes jointly: an L-BFGS direction from the pseudo-gradient, kept in the orthant of the current
  signs, and a backtracking line search on the true objective. The smooth part of the objective is
  the same at every lam, so the curvature pairs are carried along the path.

Each iteration costs two float32 matrix products with the active columns (torch, every intra-op
thread); the L-BFGS algebra on the [k+1, K] parameters is float64. An earlier proximal-Newton inner
loop (exact Hessian blocks, Cholesky, coordinate descent) reached the same optima but spent 9x
longer on the dense end of the path, where the active set nears the number of texts: its cost per
step grew as n k^2 + k^3, OWL-QN's grows as n k.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..classifier.linear import decision
from .target import TargetScale


class DenseDesign:
    """The training matrix in memory: X [n, d] float32 (standardised) on the solver's device.

    The solver touches its matrix only through `select` (the active columns), `linear` (X W^T + b) and
    `rtx` ((R^T X)^T), so a matrix too large for memory can stand in for it (`fit.spill.ChunkedDesign`,
    the same products over row chunks read from disk)."""

    def __init__(self, X: torch.Tensor) -> None:
        if X.dtype != torch.float32 or X.dim() != 2:
            raise ValueError("X must be a 2-d float32 tensor")
        self.X = X
        self.n, self.d = X.shape
        self.device = X.device

    def select(self, A: torch.Tensor) -> "DenseDesign":
        return self if A.numel() == self.d else DenseDesign(self.X.index_select(1, A))

    def linear(self, Wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Wt: [K, d] float32, b: [K] -> X Wt^T + b, [n, K]."""
        # F.linear and R^T X run 3-5x faster than X @ W and X^T R for a handful of classes (measured)
        return F.linear(self.X, Wt, b)

    def rtx(self, R: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
        """R: [n, K] float32 -> (R^T X)^T, [d, K]. (`contiguous=False`: the product as the full-matrix
        checks have always computed it, which fit ids and the 0.1.0 fixture depend on bit for bit.)"""
        return (R.T.contiguous() @ self.X).T if contiguous else (R.T @ self.X).T

    def decision(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        """Linear scores [n, K] float64 for coef [K, d], intercept [K] (as the classifier computes them)."""
        return decision(self.X, coef, intercept)


class ColumnDesign(DenseDesign):
    """Columns `cols` of a wider in-memory matrix X [n, D], without copying them: the aggregates' neuron
    subsets of one gathered (kind, pooling) block. `cols` falls into a few runs of consecutive columns (each
    block's kept neurons are a prefix of its columns), and every product runs over the runs, each a strided
    view of X that BLAS reads in place: the same work as on a copy, and the block is held once, not once
    more per aggregate. `select` copies the active columns, as `DenseDesign.select` does."""

    def __init__(self, X: torch.Tensor, cols: np.ndarray) -> None:
        if X.dtype != torch.float32 or X.dim() != 2:
            raise ValueError("X must be a 2-d float32 tensor")
        cols = np.asarray(cols, dtype=np.int64)
        self.X_all = X
        self.cols = torch.as_tensor(cols, device=X.device)
        breaks = np.flatnonzero(np.diff(cols) != 1) + 1
        starts = np.concatenate([[0], breaks]).astype(int) if len(cols) else np.zeros(0, int)
        stops = np.concatenate([breaks, [len(cols)]]).astype(int) if len(cols) else np.zeros(0, int)
        # (first position in cols, view of X's columns)
        self.runs = [(int(a), X[:, int(cols[a]):int(cols[a]) + int(b - a)]) for a, b in zip(starts, stops)]
        self.n, self.d = X.shape[0], len(cols)
        self.device = X.device

    def select(self, A: torch.Tensor) -> "DenseDesign":
        return self if A.numel() == self.d else DenseDesign(self.X_all.index_select(1, self.cols[A]))

    def linear(self, Wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = b.expand(self.n, -1).clone()
        for a, Xr in self.runs:
            out.addmm_(Xr, Wt[:, a:a + Xr.shape[1]].T)
        return out

    def rtx(self, R: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
        Rt = R.T.contiguous()
        return torch.cat([(Rt @ Xr).T for _, Xr in self.runs]) if self.runs else \
            torch.zeros(0, R.shape[1], dtype=R.dtype, device=R.device)

    def decision(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        Wt = torch.as_tensor(coef, dtype=torch.float32, device=self.device)
        b = torch.as_tensor(intercept, dtype=torch.float32, device=self.device)
        return self.linear(Wt, b).cpu().numpy().astype(np.float64)


@dataclass
class PathPoint:
    """One solved point of the path. coef: [K, d] (K = 1 for two classes), intercept: [K]."""

    lam: float
    C: float  # scikit-learn's equivalent C = 1 / (n * lam)
    coef: np.ndarray
    intercept: np.ndarray
    objective: float
    n_nonzero: int  # features with a non-zero weight for any class
    iterations: int  # OWL-QN iterations, summed over the KKT passes
    kkt_passes: int


class L1Logistic:
    """Solver state for one training matrix. X: [n, d] float32 (standardised) or a design with the same
    products (`DenseDesign`); y: [n] class indices, or values when n_classes is 0: a regression target,
    fitted with the squared loss (the lasso, F = mean (x_i w + b - y_i)^2 / 2 + lam |w|_1) by the same
    path, active sets and OWL-QN steps."""

    def __init__(self, X: "torch.Tensor | DenseDesign", y: np.ndarray, n_classes: int, *, tol: float = 1e-6,
                 max_iter: int = 2000, memory: int = 10, window: int = 5) -> None:
        if n_classes == 1 or n_classes < 0:
            raise ValueError("need at least two classes (or n_classes 0: a regression target)")
        self.design = DenseDesign(X) if isinstance(X, torch.Tensor) else X
        self.device = self.design.device  # everything the solver creates lives beside X (a GPU with --device)
        self.n, self.d = self.design.n, self.design.d
        self.regression = n_classes == 0
        self.K = 1 if n_classes in (0, 2) else n_classes
        self.n_classes = n_classes
        self.tol = tol  # converged when the objective fell by less than tol (relative) per iteration ...
        self.window = window  # ... on average over this many iterations
        self.max_iter = max_iter
        self.memory = memory  # L-BFGS curvature pairs
        self._memory: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.target = TargetScale.of(y) if self.regression else TargetScale()  # weights in and out: target units
        if self.regression:
            self.Y = torch.as_tensor(np.asarray(self.target.forward(y), dtype=np.float32), device=self.device)[:, None]
            self.Y64 = self.Y.double()
            self.b0 = self.Y.double().mean(0)
            return
        yi = torch.as_tensor(np.asarray(y), dtype=torch.long, device=self.device)
        self.yi = yi
        if self.K == 1:
            self.Y = yi.to(torch.float32)[:, None]
        else:
            self.Y = F.one_hot(yi, n_classes).to(torch.float32)
        self.Y64 = self.Y.double()
        prior = self.Y.double().mean(0).clamp(1e-12, 1 - 1e-12)
        self.b0 = torch.log(prior / (1 - prior)) if self.K == 1 else torch.log(prior) - torch.log(prior).mean()

    # ------------------------------------------------------------------ loss pieces
    def _terms(self, eta: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """eta: [n, K] -> (mean loss, P [n, K] probabilities, R = P - Y [n, K]); for a regression target
        (half the mean squared error, eta, R = eta - Y).

        The element-wise functions and sums run in float64 (P and R are handed back in eta's float32): ATen
        vectorises them differently per CPU (ATEN_CPU_CAPABILITY: scalar, AVX2, AVX-512), and in float32 those
        last-bit differences steered the line search and the stopping test apart, so that one CPU chose
        another regularisation strength than the next (issue 22). In float64 they stay ~1e-16 and vanish in
        the float32 rounding of R; the matrix products themselves are BLAS's, the same on every kernel. The
        cost is O(n K) per iteration beside the O(n k K) products."""
        e64 = eta.double()
        if self.regression:
            R = e64 - self.Y64
            return 0.5 * R.pow(2).sum().item() / self.n, eta, R.to(eta.dtype)
        if self.K == 1:
            e = e64[:, 0]
            loss = (F.softplus(e) - self.Y64[:, 0] * e).sum().item() / self.n
            P = torch.sigmoid(e64)
        else:
            lse = torch.logsumexp(e64, dim=1)
            loss = (lse - e64.gather(1, self.yi[:, None])[:, 0]).sum().item() / self.n
            P = torch.softmax(e64, dim=1)
        return loss, P.to(eta.dtype), (P - self.Y64).to(eta.dtype)

    def lambda_max(self) -> float:
        """The smallest lam at which every weight is zero (intercept at the class prior)."""
        eta = self.b0.to(torch.float32).expand(self.n, self.K)
        _, _, R = self._terms(eta)
        return float(self.design.rtx(R, contiguous=False).abs().max()) / self.n * self.target.scale

    # ------------------------------------------------------------------ restricted problem
    def _loss(self, XA: DenseDesign, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """theta: [k+1, K] float64 (active weights, then the intercept row) -> (mean loss, R = P - Y)."""
        eta = XA.linear(theta[:-1].T.to(torch.float32).contiguous(), theta[-1].to(torch.float32))
        loss, _, R = self._terms(eta)
        return loss, R

    def _grad(self, XA: DenseDesign, R: torch.Tensor) -> torch.Tensor:
        """Gradient of the mean loss w.r.t. theta [k+1, K], float64."""
        return torch.cat([XA.rtx(R).double(), R.double().sum(0, keepdim=True)]) / self.n

    @staticmethod
    def _pseudo_gradient(theta: torch.Tensor, G: torch.Tensor, lam: float) -> torch.Tensor:
        """The minimum-norm subgradient of loss + lam |W|_1 (the intercept row is not penalised)."""
        W, GW = theta[:-1], G[:-1]
        at_zero = torch.where(GW + lam < 0, GW + lam, torch.where(GW - lam > 0, GW - lam, torch.zeros_like(GW)))
        PW = torch.where(W != 0, GW + lam * torch.sign(W), at_zero)
        return torch.cat([PW, G[-1:]])

    def _direction(self, PG: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
        """-H^-1 PG for the L-BFGS inverse Hessian of the (s, y, 1/s.y) pairs, in the compact form (Byrd,
        Nocedal & Schnabel 1994): a few products with the stacked pairs instead of the two-loop recursion's
        four small operations per pair (the same matrix; on small active sets the loop's overhead dominated).

        Always on one CPU thread: MKL splits these small float64 products (m pairs x (k+1)K) by thread
        count, and their last bits then steered the path apart, so that `--threads 1` and `--threads 2`
        chose other probe strengths on real blocks (issue 22). They cost O(m k K) beside the O(n k K)
        products with the data, which keep every thread."""
        if self.device.type != "cpu":
            return self._direction_compact(PG, pairs)
        threads = torch.get_num_threads()
        if threads == 1:
            return self._direction_compact(PG, pairs)
        torch.set_num_threads(1)
        try:
            return self._direction_compact(PG, pairs)
        finally:
            torch.set_num_threads(threads)

    def _direction_compact(self, PG: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]
                           ) -> torch.Tensor:
        if not pairs:  # no curvature yet: a step of unit length
            return -PG / max(float(PG.norm()), 1e-12)
        g = PG.reshape(-1)
        S = torch.stack([p[0].reshape(-1) for p in pairs])  # [p, m]
        Y = torch.stack([p[1].reshape(-1) for p in pairs])
        SY = S @ Y.T
        R = torch.triu(SY)
        gamma = float(SY[-1, -1]) / float(Y[-1] @ Y[-1])
        u = torch.linalg.solve_triangular(R, (S @ g)[:, None], upper=True)[:, 0]
        w = torch.diagonal(SY) * u + gamma * (Y @ (Y.T @ u)) - gamma * (Y @ g)
        v = torch.linalg.solve_triangular(R.T, w[:, None], upper=False)[:, 0]
        return -(gamma * g + S.T @ v - gamma * (Y.T @ u)).reshape(PG.shape)

    def _direction_two_loop(self, PG: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]
                            ) -> torch.Tensor:
        """The same direction by the two-loop recursion (kept as the reference the tests compare with)."""
        q = PG.clone()
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * float((s * q).sum())
            alphas.append(a)
            q -= a * y
        if pairs:
            s, y, _ = pairs[-1]
            q *= float((s * y).sum()) / float((y * y).sum())
        else:  # no curvature yet: a step of unit length
            q /= max(float(q.norm()), 1e-12)
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            q += (a - rho * float((y * q).sum())) * s
        return -q

    def _solve_active(self, A: torch.Tensor, W: torch.Tensor, b: torch.Tensor, lam: float
                      ) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, int]:
        """OWL-QN (orthant-wise L-BFGS, Andrew & Gao 2007) on the active columns A, all classes jointly.

        W: [k, K] float64, b: [K] float64. The curvature pairs live in the full coordinate space and are
        kept across calls: the smooth loss is the same at every lam, so they stay valid along the path.
        Returns (W, b, objective, R [n, K] at the solution, iterations)."""
        XA = self.design.select(A)
        rows = torch.cat([A, torch.tensor([self.d], device=self.device)])
        pairs = []
        for s_full, y_full in self._memory:
            s, y = s_full[rows], y_full[rows]
            sy = float((s * y).sum())
            if sy > 1e-12 * float(s.norm()) * float(y.norm()):
                pairs.append((s, y, 1.0 / sy))
        theta = torch.cat([W, b[None]])
        loss, R = self._loss(XA, theta)
        G = self._grad(XA, R)
        obj = loss + lam * float(theta[:-1].abs().sum())
        history = [obj]
        it = 0
        while it < self.max_iter:
            it += 1
            PG = self._pseudo_gradient(theta, G, lam)
            D = self._direction(PG, pairs)
            D[:-1] = torch.where(D[:-1] * PG[:-1] < 0, D[:-1], torch.zeros_like(D[:-1]))  # same orthant as -PG
            if self.K > 1:  # softmax ignores a shift of every intercept: stay off that flat direction, where
                D[-1] -= D[-1].mean()  # float32 noise over a tiny curvature pair would let them drift away
            slope = float((PG * D).sum())
            if slope >= 0:
                if not pairs:
                    break  # PG = 0: optimal
                pairs = []  # the curvature model went bad: restart from steepest descent
                continue
            orthant = torch.where(theta[:-1] != 0, torch.sign(theta[:-1]), -torch.sign(PG[:-1]))
            t = 1.0
            while True:  # backtracking on the true objective, projected onto the orthant
                new = theta + t * D
                new[:-1] = torch.where(torch.sign(new[:-1]) == orthant, new[:-1], torch.zeros_like(new[:-1]))
                loss_n, R_n = self._loss(XA, new)
                obj_n = loss_n + lam * float(new[:-1].abs().sum())
                if obj_n <= obj + 1e-4 * float((PG * (new - theta)).sum()) or t < 1e-10:
                    break
                t *= 0.5
            if obj_n > obj:  # no descent left at float32 resolution
                break
            G_n = self._grad(XA, R_n)
            s, y = new - theta, G_n - G
            sy = float((s * y).sum())
            if sy > 1e-12 * float(s.norm()) * float(y.norm()):
                pairs.append((s, y, 1.0 / sy))
                s_full = torch.zeros(self.d + 1, self.K, dtype=torch.float64, device=self.device)
                y_full = torch.zeros(self.d + 1, self.K, dtype=torch.float64, device=self.device)
                s_full[rows], y_full[rows] = s, y
                self._memory.append((s_full, y_full))
                if len(pairs) > self.memory:
                    pairs.pop(0)
                if len(self._memory) > self.memory:
                    self._memory.pop(0)
            theta, G, R, obj = new, G_n, R_n, obj_n
            history.append(obj)
            if len(history) > self.window and history[-1 - self.window] - obj <= \
                    self.window * self.tol * max(abs(obj), 1e-3):
                break
        return theta[:-1], theta[-1], obj, R, it

    # ------------------------------------------------------------------ one lam
    def fit(self, lam: float, warm: PathPoint | None = None, lam_prev: float | None = None) -> PathPoint:
        """Solve at `lam`, warm-started from `warm` (a point of this path) when given. The strengths and the
        points in and out are in the target's units; the solve runs on its working scale (fit.target): the
        lasso's solution scales with the target, its strength with it."""
        t = self.target
        if t.identity:
            return self._fit(lam, warm, lam_prev)
        if warm is not None:
            warm = replace(warm, lam=warm.lam / t.scale, coef=warm.coef / t.scale,
                           intercept=(warm.intercept - t.center) / t.scale)
        pt = self._fit(lam / t.scale, warm, None if lam_prev is None else lam_prev / t.scale)
        return replace(pt, lam=lam, C=1.0 / (self.n * lam), coef=pt.coef * t.scale,
                       intercept=pt.intercept * t.scale + t.center, objective=pt.objective * t.scale ** 2)

    def _fit(self, lam: float, warm: PathPoint | None, lam_prev: float | None) -> PathPoint:
        K, d = self.K, self.d
        if warm is None:
            Wfull = torch.zeros(d, K, dtype=torch.float64, device=self.device)
            b = self.b0.clone()
        else:
            Wfull = torch.as_tensor(warm.coef.T, dtype=torch.float64, device=self.device).clone()
            b = torch.as_tensor(warm.intercept, dtype=torch.float64, device=self.device).clone()
        # gradient at the warm start, for the strong rule
        _, _, R = self._terms(self.design.linear(Wfull.T.to(torch.float32).contiguous(), b.to(torch.float32)))
        G = self.design.rtx(R, contiguous=False).abs().amax(dim=1) / self.n  # [d]
        lp = lam_prev if lam_prev is not None else (warm.lam if warm is not None else
                                                     self.lambda_max() / self.target.scale)
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
            Wfull = torch.zeros(d, K, dtype=torch.float64, device=self.device)
            Wfull[A] = W
            G = self.design.rtx(R, contiguous=False).abs().amax(dim=1) / self.n
            violators = (~active) & (G > lam * (1 + 1e-3))
            if not bool(violators.any()):
                break
            active |= violators
        coef = Wfull.T.cpu().numpy().astype(np.float64)
        return PathPoint(lam=lam, C=1.0 / (self.n * lam), coef=coef, intercept=b.cpu().numpy().copy(), objective=obj,
                         n_nonzero=int((np.abs(coef).max(axis=0) > 0).sum()), iterations=steps,
                         kkt_passes=passes)
