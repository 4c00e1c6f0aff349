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

Each iteration costs two float32 matrix products with the active columns (torch, beside X, every
intra-op thread); the L-BFGS algebra on the [k+1, K] parameters is float64 numpy on the host, on one BLAS
thread. An earlier proximal-Newton inner
loop (exact Hessian blocks, Cholesky, coordinate descent) reached the same optima but spent 9x
longer on the dense end of the path, where the active set nears the number of texts: its cost per
step grew as n k^2 + k^3, OWL-QN's grows as n k.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg.lapack import dtrtrs

from ..core.threads import blas_one_thread
from .design import DenseDesign
from .target import TargetScale


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
    """The path solver the fit runs (internal: one training matrix, then `fit(lam, warm)` point after point
    along a path; its public, scikit-learn-style face is `fit.estimator.L1LogisticRegression`). Solver state for
    one training matrix. X: [n, d] float32 (standardised) or a design with the same
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
        self.Y64t = self.Y64.T.contiguous()  # class-major, for the softmax (_terms)
        prior = self.Y.double().mean(0).clamp(1e-12, 1 - 1e-12)
        self.b0 = torch.log(prior / (1 - prior)) if self.K == 1 else torch.log(prior) - torch.log(prior).mean()

    # ------------------------------------------------------------------ loss pieces
    def _terms(self, eta: torch.Tensor) -> tuple[float, torch.Tensor]:
        """eta: [n, K] -> (mean loss, R = P - Y [n, K], P the probabilities); for a regression target (half the
        mean squared error, R = eta - Y). For several classes R is a transposed view of a class-major [K, n]
        tensor: the softmax's reductions run over K contiguous rows (over [n, K] rows of 4 they took 3x as long)
        and the products R^T X read it without a copy.

        The element-wise functions and sums run in float64 (R is handed back in eta's float32): ATen
        vectorises them differently per CPU (ATEN_CPU_CAPABILITY: scalar, AVX2, AVX-512), and in float32 those
        last-bit differences steered the line search and the stopping test apart, so that one CPU chose
        another regularisation strength than the next (issue 22). In float64 they stay ~1e-16 and vanish in
        the float32 rounding of R; the matrix products themselves are BLAS's, the same on every kernel. The
        cost is O(n K) per iteration beside the O(n k K) products."""
        if self.regression:
            R = eta.double() - self.Y64
            return 0.5 * R.pow(2).sum().item() / self.n, R.to(eta.dtype)
        if self.K == 1:
            e64 = eta.double()
            e = e64[:, 0]
            loss = (F.softplus(e) - self.Y64[:, 0] * e).sum().item() / self.n
            return loss, (torch.sigmoid(e64) - self.Y64).to(eta.dtype)
        e = torch.empty((self.K, self.n), dtype=torch.float64, device=eta.device).copy_(eta.T)  # class-major
        m = e.amax(dim=0)
        z = (e - m).exp_()  # log-sum-exp and softmax from one exp
        total = z.sum(dim=0)
        loss = (m + total.log() - e.gather(0, self.yi[None])[0]).sum().item() / self.n
        return loss, z.div_(total).sub_(self.Y64t).to(eta.dtype).T

    def lambda_max(self) -> float:
        """The smallest lam at which every weight is zero (intercept at the class prior)."""
        eta = self.b0.to(torch.float32).expand(self.n, self.K)
        _, R = self._terms(eta)
        return float(self.design.rtx(R, contiguous=False).abs().max()) / self.n * self.target.scale

    # ------------------------------------------------------------------ restricted problem
    # The parameters of the active problem, theta [k+1, K] (active weights, then the intercept row), and all
    # the algebra on them live in numpy float64 on the host; only the products with the data (and the
    # element-wise loss over its n rows) run in torch beside X. An iteration on a small active set is some
    # 60 operations on tiny arrays: torch spent 2-4 us on each (0.36 ms an iteration at k = 91), numpy a
    # fraction of that, and the aggregate searches are thousands of such solves.
    def _linear(self, X: DenseDesign, W: np.ndarray, b: np.ndarray) -> torch.Tensor:
        """X W + b for host float64 W [k, K] and b [K]: their float32 copies sent beside X."""
        Wt = torch.from_numpy(np.ascontiguousarray(W.T, dtype=np.float32)).to(self.device)
        return X.linear(Wt, torch.from_numpy(b.astype(np.float32)).to(self.device))

    def _loss(self, XA: DenseDesign, theta: np.ndarray) -> tuple[float, torch.Tensor]:
        """theta: [k+1, K] float64 -> (mean loss, R = P - Y [n, K] float32, beside X)."""
        return self._terms(self._linear(XA, theta[:-1], theta[-1]))

    @staticmethod
    def _curved(s: np.ndarray, y: np.ndarray) -> bool:
        """Whether a curvature pair (flattened) keeps the L-BFGS matrix positive definite, beyond rounding."""
        return float(s @ y) > 1e-12 * float(np.linalg.norm(s)) * float(np.linalg.norm(y))

    def _grad(self, XA: DenseDesign, R: torch.Tensor) -> np.ndarray:
        """Gradient of the mean loss w.r.t. theta, [k+1, K] float64."""
        G = np.empty((XA.d + 1, self.K))
        G[:-1] = XA.rtx(R).cpu().numpy()
        G[-1] = R.double().sum(0).cpu().numpy()
        G /= self.n
        return G

    @staticmethod
    def _pseudo_gradient(theta: np.ndarray, G: np.ndarray, lam: float) -> np.ndarray:
        """The minimum-norm subgradient of loss + lam |W|_1 (the intercept row is not penalised)."""
        W, GW = theta[:-1], G[:-1]
        at_zero = np.where(GW + lam < 0, GW + lam, np.where(GW - lam > 0, GW - lam, 0.0))
        PG = G.copy()
        PG[:-1] = np.where(W != 0, GW + lam * np.sign(W), at_zero)
        return PG

    @staticmethod
    def _direction(PG: np.ndarray, S: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """-H^-1 PG for the L-BFGS inverse Hessian of the curvature pairs S, Y [p, m] (oldest first; m =
        (k+1)K), in the compact form (Byrd, Nocedal & Schnabel 1994): a few products with the stacked pairs
        instead of the two-loop recursion's four small operations per pair (the same matrix).

        The products run on one BLAS thread (the caller's `blas_one_thread`): split by thread count, their
        last bits steered the path apart, so that `--threads 1` and `--threads 2` chose other probe
        strengths on real blocks (issue 22)."""
        g = PG.reshape(-1)
        if not len(S):  # no curvature yet: a step of unit length
            return -PG / max(float(np.linalg.norm(g)), 1e-12)
        SY = S @ Y.T
        gamma = SY[-1, -1] / float(Y[-1] @ Y[-1])
        # R = triu(SY), which trtrs reads from SY's upper triangle (LAPACK directly: scipy's wrapper took 20 us)
        u = dtrtrs(SY, S @ g)[0]
        w = np.diagonal(SY) * u + gamma * (Y @ (Y.T @ u)) - gamma * (Y @ g)
        v = dtrtrs(SY, w, trans=1)[0]  # R^T v = w
        return -(gamma * g + S.T @ v - gamma * (Y.T @ u)).reshape(PG.shape)

    @staticmethod
    def _direction_two_loop(PG: np.ndarray, S: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """The same direction by the two-loop recursion (the reference the tests compare with)."""
        q = PG.reshape(-1).copy()
        alphas = []
        for s, y in zip(S[::-1], Y[::-1]):
            a = float(s @ q) / float(s @ y)
            alphas.append(a)
            q -= a * y
        if len(S):
            q *= float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
        else:  # no curvature yet: a step of unit length
            q /= max(float(np.linalg.norm(q)), 1e-12)
        for s, y, a in zip(S, Y, reversed(alphas)):
            q += (a - float(y @ q) / float(s @ y)) * s
        return -q.reshape(PG.shape)

    def _solve_active(self, A: torch.Tensor, W: np.ndarray, b: np.ndarray, lam: float
                      ) -> tuple[np.ndarray, np.ndarray, float, torch.Tensor, int]:
        """OWL-QN (orthant-wise L-BFGS, Andrew & Gao 2007) on the active columns A, all classes jointly.

        W: [k, K] float64, b: [K] float64. The curvature pairs live in the full coordinate space and are
        kept across calls: the smooth loss is the same at every lam, so they stay valid along the path.
        Returns (W, b, objective, R [n, K] at the solution, iterations)."""
        XA = self.design.select(A)
        rows = np.append(A.cpu().numpy(), self.d)
        S_list, Y_list = [], []
        for s_full, y_full in self._memory:
            s, y = s_full[rows].reshape(-1), y_full[rows].reshape(-1)
            if self._curved(s, y):
                S_list.append(s)
                Y_list.append(y)
        m = (len(rows)) * self.K
        S = np.array(S_list).reshape(-1, m)
        Y = np.array(Y_list).reshape(-1, m)
        theta = np.concatenate([W, b[None]])
        loss, R = self._loss(XA, theta)
        G = self._grad(XA, R)
        obj = loss + lam * float(np.abs(theta[:-1]).sum())
        history = [obj]
        it = 0
        while it < self.max_iter:
            it += 1
            PG = self._pseudo_gradient(theta, G, lam)
            D = self._direction(PG, S, Y)
            D[:-1] = np.where(D[:-1] * PG[:-1] < 0, D[:-1], 0.0)  # same orthant as -PG
            if self.K > 1:  # softmax ignores a shift of every intercept: stay off that flat direction, where
                D[-1] -= D[-1].mean()  # float32 noise over a tiny curvature pair would let them drift away
            slope = float((PG * D).sum())
            if slope >= 0:
                if not len(S):
                    break  # PG = 0: optimal
                S, Y = S[:0], Y[:0]  # the curvature model went bad: restart from steepest descent
                continue
            orthant = np.where(theta[:-1] != 0, np.sign(theta[:-1]), -np.sign(PG[:-1]))
            t = 1.0
            while True:  # backtracking on the true objective, projected onto the orthant
                new = theta + t * D
                new[:-1] = np.where(np.sign(new[:-1]) == orthant, new[:-1], 0.0)
                loss_n, R_n = self._loss(XA, new)
                obj_n = loss_n + lam * float(np.abs(new[:-1]).sum())
                if obj_n <= obj + 1e-4 * float((PG * (new - theta)).sum()) or t < 1e-10:
                    break
                t *= 0.5
            if obj_n > obj:  # no descent left at float32 resolution
                break
            G_n = self._grad(XA, R_n)
            s, y = new - theta, G_n - G
            sv, yv = s.reshape(-1), y.reshape(-1)
            if self._curved(sv, yv):
                S = np.concatenate([S[-self.memory + 1:] if self.memory > 1 else S[:0], sv[None]])
                Y = np.concatenate([Y[-self.memory + 1:] if self.memory > 1 else Y[:0], yv[None]])
                s_full = np.zeros((self.d + 1, self.K))
                y_full = np.zeros((self.d + 1, self.K))
                s_full[rows], y_full[rows] = s, y
                self._memory.append((s_full, y_full))
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
        with blas_one_thread():
            return self._fit_points(lam, warm, lam_prev)

    def _fit_points(self, lam: float, warm: PathPoint | None, lam_prev: float | None) -> PathPoint:
        K, d = self.K, self.d
        if warm is None:
            Wfull = np.zeros((d, K))
            b = self.b0.cpu().numpy().astype(np.float64)
        else:
            Wfull = np.array(warm.coef.T, dtype=np.float64)
            b = np.array(warm.intercept, dtype=np.float64)
        # gradient at the warm start, for the strong rule
        _, R = self._terms(self._linear(self.design, Wfull, b))
        G = self.design.rtx(R, contiguous=False).abs().amax(dim=1) / self.n  # [d]
        lp = lam_prev if lam_prev is not None else (warm.lam if warm is not None else
                                                     self.lambda_max() / self.target.scale)
        support = torch.from_numpy(np.abs(Wfull).max(axis=1, initial=0.0) > 0).to(self.device)
        active = support | (G >= 2 * lam - lp)
        if not bool(active.any()):
            active[int(G.argmax())] = True
        steps = passes = 0
        while True:
            A = torch.nonzero(active)[:, 0]
            A_host = A.cpu().numpy()
            W, b, obj, R, s = self._solve_active(A, Wfull[A_host], b, lam)
            steps += s
            passes += 1
            Wfull = np.zeros((d, K))
            Wfull[A_host] = W
            G = self.design.rtx(R, contiguous=False).abs().amax(dim=1) / self.n
            violators = (~active) & (G > lam * (1 + 1e-3))
            if not bool(violators.any()):
                break
            active |= violators
        coef = np.ascontiguousarray(Wfull.T)
        return PathPoint(lam=lam, C=1.0 / (self.n * lam), coef=coef, intercept=b.copy(), objective=obj,
                         n_nonzero=int((np.abs(coef).max(axis=0, initial=0.0) > 0).sum()), iterations=steps,
                         kkt_passes=passes)
