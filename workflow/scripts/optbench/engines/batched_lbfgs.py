"""Batched L-BFGS: the runs of one cell take torch.optim.LBFGS's steps together,
each with its own state, so that no run's numbers steer another's.

``torch.optim.LBFGS`` couples everything it holds: one history of curvature
pairs, one step length, one line search and one stopping decision over all its
parameters. Stacking runs into one LBFGS would make them one run. This module
keeps every one of those per run, as tensors with a leading ``runs`` dimension:

- the flat weights, gradient and direction of each run (``[runs, numel]``, the
  order of LBFGS's own flattening: the model's parameters, each flattened);
- its history of ``(s, y, 1/y.s)`` pairs in a ring of its own capacity
  (``history_size``), with its own count and oldest slot, and its ``H_diag``;
- its step length, iteration and evaluation counts, and termination tests
  (``tolerance_grad``, ``tolerance_change``, ``max_iter``, ``max_eval``);
- with ``line_search_fn='strong_wolfe'``, its own bracketing and zoom state.

One L-BFGS iteration of all runs is one pass of the outer loop (within a step,
every run still iterating is at the same iteration number); the line search
evaluates all runs at once, and a run that has finished its search (or its
step) waits: it is evaluated at its own weights and the result is dropped.
Every decision is a mask over runs, never a branch on one run's values, so a
run that diverges (inf, NaN) or stops early changes no other run: the tests
plant both inside a batch.

Exactness against torch.optim.LBFGS run by run (tests/test_batched_lbfgs.py):
the first evaluation of every step is the loop's bit for bit where the
engine's forward is (batched.py), and the element-wise updates (``s = d t``,
the axpy of the two-loop recursion, ``x + t d``) round as the loop's do. The
dot products do not: torch.dot reaches BLAS (MKL's sdot), whose summation
order no stacked reduction reproduces, so the engine sums each run's products
with ATen's own reduction (the same bits on every host under portable
numerics). LBFGS's scalars mix Python floats and float32 tensors; here they are
all float32 tensors. From the first dot product on, a run therefore agrees
with its loop to float32 rounding, which the curvature updates can amplify
over iterations and a line-search test taken at a tie can turn into another
branch: the tests bound the difference in the losses (documented there), not
the bits. That is why ``engine: auto`` keeps L-BFGS in the per-run loop and
``engine: batched`` uses this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# The history one block of runs takes through the two-loop recursion, which
# reads it four times: about what a last-level cache keeps.
CACHE_BYTES = int(os.environ.get("OPTBENCH_LBFGS_BLOCK", 16 * 2**20))
C1, C2 = 1e-4, 0.9  # strong-Wolfe constants (torch's _strong_wolfe defaults)
LINE_SEARCH_TOLERANCE = 1e-9  # torch's _strong_wolfe tolerance_change (LBFGS does not pass its own)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each run's dot product: [runs, n] x [runs, n] -> [runs]."""
    return torch.linalg.vecdot(a, b)


def _cubic_minimum(x1, f1, g1, x2, f2, g2, low=None, high=None):
    """torch's _cubic_interpolate, run by run: the minimiser of the cubic through
    two points with their values and slopes, clamped to [low, high] (default:
    the two points), or the middle of that interval where the cubic has none."""
    if low is None:
        low, high = torch.minimum(x1, x2), torch.maximum(x1, x2)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    d2 = d2_square.clamp(min=0).sqrt()  # the other branch is taken where it is negative
    from_x2 = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    from_x1 = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    minimum = torch.where(x1 <= x2, from_x2, from_x1)
    clamped = torch.minimum(torch.maximum(minimum, low), high)
    return torch.where(d2_square >= 0, clamped, (low + high) / 2)


def _recursion(gradient, old_steps, old_dirs, slots, rho, valid, h_diag):
    """The two-loop recursion of some runs; ``slots[j]`` is where their j-th newest
    pair is, ``valid`` (None: all) which of them each run holds."""
    q = gradient.neg()
    alphas = [None] * len(slots)
    for j, slot in enumerate(slots):
        alpha = torch.linalg.vecdot(old_steps[:, slot], q) * rho[:, j]
        if valid is not None:  # an absent pair's stale values must not reach the run
            alpha = torch.where(valid[:, j], alpha, 0)
        alphas[j] = alpha
        q = torch.addcmul(q, old_dirs[:, slot], alpha[:, None], value=-1)
    r = q * h_diag[:, None]
    for j in range(len(slots) - 1, -1, -1):
        step = alphas[j] - torch.linalg.vecdot(old_dirs[:, slots[j]], r) * rho[:, j]
        if valid is not None:
            step = torch.where(valid[:, j], step, 0)
        r = torch.addcmul(r, old_steps[:, slots[j]], step[:, None])
    return r


@dataclass
class Settings:
    """One value per run of each LBFGS hyper-parameter (runs of different variants
    may differ); ``line_search`` is shared by the batch."""

    lr: torch.Tensor
    max_iter: torch.Tensor
    max_eval: torch.Tensor
    tolerance_grad: torch.Tensor
    tolerance_change: torch.Tensor
    history_size: torch.Tensor
    line_search: bool

    @classmethod
    def from_groups(cls, groups: list[dict], runs_of: list[int], dtype, device) -> Settings:
        """From each variant's LBFGS param group and its number of runs."""
        searches = {group["line_search_fn"] for group in groups}
        if searches - {None, "strong_wolfe"}:
            raise RuntimeError("only 'strong_wolfe' is supported")  # torch's own message
        if len(searches) != 1:
            raise ValueError("a batch of L-BFGS runs shares one line_search_fn")

        def per_run(key, kind):
            repeated = [
                float(group[key])
                for group, n in zip(groups, runs_of, strict=True)
                for _ in range(n)
            ]
            return torch.tensor(repeated, dtype=kind, device=device)

        return cls(
            lr=per_run("lr", dtype),
            max_iter=per_run("max_iter", torch.int64),
            max_eval=per_run("max_eval", torch.int64),
            # float64, as torch compares with the Python floats given.
            tolerance_grad=per_run("tolerance_grad", torch.float64),
            tolerance_change=per_run("tolerance_change", torch.float64),
            history_size=per_run("history_size", torch.int64),
            line_search=searches == {"strong_wolfe"},
        )


class BatchedLBFGS:
    """The state of ``runs`` L-BFGS runs over ``numel`` weights each.

    ``step(evaluate, weights)`` takes one LBFGS step of every run: ``weights`` is
    the flat ``[runs, numel]`` tensor of the runs' weights, which ``evaluate``
    reads (``evaluate()`` -> per-run losses ``[runs]`` and flat gradients) and
    ``step`` updates in place.
    """

    def __init__(self, settings: Settings, runs: int, numel: int, dtype, device):
        self.settings = settings
        self.runs = runs
        capacity = int(settings.history_size.max()) if runs else 0
        zeros = torch.zeros
        self.old_steps = zeros(runs, capacity, numel, dtype=dtype, device=device)  # s
        self.old_dirs = zeros(runs, capacity, numel, dtype=dtype, device=device)  # y
        self.rho = zeros(runs, capacity, dtype=dtype, device=device)  # 1 / (y.s)
        self.count = zeros(runs, dtype=torch.int64, device=device)
        self.write = zeros(runs, dtype=torch.int64, device=device)
        self.direction = zeros(runs, numel, dtype=dtype, device=device)
        self.length = zeros(runs, dtype=dtype, device=device)  # t
        self.h_diag = torch.ones(runs, dtype=dtype, device=device)
        self.previous_gradient = zeros(runs, numel, dtype=dtype, device=device)
        self.previous_loss = zeros(runs, dtype=torch.float64, device=device)
        self.iterations = zeros(runs, dtype=torch.int64, device=device)  # state["n_iter"]
        self.rows = torch.arange(runs, device=device)

    def state_bytes(self) -> int:
        tensors = (self.old_steps, self.old_dirs, self.direction, self.previous_gradient)
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------- history
    #
    # Each run's pairs sit in a ring of the largest history_size of the batch:
    # its newest pair just before its ``write`` slot, its j-th newest j slots
    # further back, ``count`` of them (at most its own history_size). A push
    # writes at ``write`` and moves it on, overwriting the oldest pair of a
    # full ring. Runs that push together keep equal write slots, so the i-th
    # pair of every run is one slice of the stacked history (a view); a run
    # that fell behind (it stopped early in an earlier step) is rotated once
    # to the others' slot when it iterates again.

    def _push(self, mask, s, y, rho) -> None:
        """Append (s, y, rho) to the history of the runs in ``mask``, dropping the
        oldest pair of a full history (torch's pop(0))."""
        rows = self.rows[mask]
        if not len(rows):
            return
        slot = self.write[rows]
        self.old_steps[rows, slot] = s[rows]
        self.old_dirs[rows, slot] = y[rows]
        self.rho[rows, slot] = rho[rows]
        self.write[rows] = (slot + 1) % self.old_steps.shape[1]
        self.count[rows] = torch.minimum(self.count[rows] + 1, self.settings.history_size[rows])

    def _align(self, active) -> int:
        """The write slot of the runs in ``active``, after rotating the rings of
        those that were elsewhere."""
        slots = self.write[active]
        target = int(slots[0])
        behind = active & (self.write != target)
        if bool(behind.any()):
            rows = self.rows[behind]
            ring = self.old_steps.shape[1]
            shift = (self.write[rows] - target) % ring
            index = (torch.arange(ring, device=shift.device)[None, :] + shift[:, None]) % ring
            wide = index[:, :, None].expand(-1, -1, self.old_steps.shape[2])
            self.old_steps[rows] = self.old_steps[rows].gather(1, wide)
            self.old_dirs[rows] = self.old_dirs[rows].gather(1, wide)
            self.rho[rows] = self.rho[rows].gather(1, index)
            self.write[rows] = target
        return target

    def _two_loop(self, gradient, active):
        """The L-BFGS direction -H g of the runs in ``active`` from their own
        histories (torch's two-loop recursion: newest pair first, then oldest
        first); other rows hold no meaning. Runs go through it a block at a
        time, so that the block's history, read four times, stays in cache."""
        write = self._align(active)
        ring = self.old_steps.shape[1]
        pairs = int(self.count[active].max())
        slots = [(write - 1 - j) % ring for j in range(pairs)]  # j-th newest
        valid = torch.arange(pairs, device=gradient.device) < self.count[:, None]
        rho = torch.where(valid, self.rho[:, slots], 0)
        ragged = not bool(valid[active].all())  # some runs hold fewer pairs than others
        block = max(1, CACHE_BYTES // max(1, 2 * pairs * self.old_steps[0, 0].nbytes))
        directions = []
        for start in range(0, self.runs, block):
            rows = slice(start, start + block)
            directions.append(
                _recursion(
                    gradient[rows],
                    self.old_steps[rows],
                    self.old_dirs[rows],
                    slots,
                    rho[rows],
                    valid[rows] if ragged else None,
                    self.h_diag[rows],
                )
            )
        return directions[0] if len(directions) == 1 else torch.cat(directions)

    # ---------------------------------------------------------------- step

    def step(self, evaluate, weights):
        """One LBFGS step of every run. Returns each run's loss at its weights before
        the step (torch's orig_loss) and its number of loss evaluations."""
        settings = self.settings
        loss, gradient = evaluate()
        first_loss = loss.clone()
        evaluations = torch.ones(self.runs, dtype=torch.int64, device=loss.device)
        active = ~(gradient.abs().amax(1) <= settings.tolerance_grad)
        n_iter = 0
        while bool(active.any()):
            n_iter += 1
            self.iterations += active
            first = active & (self.iterations == 1)
            later = active & ~first
            direction = -gradient
            if bool(later.any()):
                y = gradient - self.previous_gradient
                s = self.direction * self.length[:, None]
                ys = _dot(y, s)
                update = later & (ys > 1e-10)
                self._push(update, s, y, 1.0 / ys)
                self.h_diag = torch.where(update, ys / _dot(y, y), self.h_diag)
                direction = torch.where(later[:, None], self._two_loop(gradient, later), direction)
            self.h_diag = torch.where(first, 1.0, self.h_diag)
            self.direction = torch.where(active[:, None], direction, self.direction)
            self.previous_gradient = torch.where(active[:, None], gradient, self.previous_gradient)
            self.previous_loss = torch.where(active, loss.double(), self.previous_loss)
            initial = torch.clamp(1.0 / gradient.abs().sum(1), max=1.0) * settings.lr
            length = torch.where(first, initial, settings.lr)
            self.length = torch.where(active, length, self.length)
            slope = _dot(gradient, self.direction)  # gtd
            active &= ~(slope > -settings.tolerance_change)
            if not bool(active.any()):
                break
            if settings.line_search:
                start = weights.clone()
                found = self._strong_wolfe(
                    evaluate, weights, start, loss, gradient, slope, active, evaluations
                )
                loss, gradient, self.length = (
                    torch.where(active, found[0], loss),
                    torch.where(active[:, None], found[1], gradient),
                    torch.where(active, found[2], self.length),
                )
                weights.copy_(self._moved(start, active))
                optimal = gradient.abs().amax(1) <= settings.tolerance_grad
            else:
                weights.copy_(self._moved(weights, active))
                again = active & (n_iter != settings.max_iter)
                optimal = torch.zeros_like(active)
                if bool(again.any()):
                    new_loss, new_gradient = evaluate()
                    loss = torch.where(again, new_loss, loss)
                    gradient = torch.where(again[:, None], new_gradient, gradient)
                    optimal = again & (gradient.abs().amax(1) <= settings.tolerance_grad)
                    evaluations += again
            moved = (self.direction * self.length[:, None]).abs().amax(1)
            stop = (
                (n_iter == settings.max_iter)
                | (evaluations >= settings.max_eval)
                | optimal
                | (moved <= settings.tolerance_change)
                | ((loss.double() - self.previous_loss).abs() < settings.tolerance_change)
            )
            active &= ~stop
        return first_loss, evaluations

    def _moved(self, weights, mask):
        """The weights moved by t d where ``mask`` holds, unchanged elsewhere."""
        moved = torch.addcmul(weights, self.direction, self.length[:, None])
        return torch.where(mask[:, None], moved, weights)

    def _strong_wolfe(self, evaluate, weights, start, f, g, gtd, rows, evaluations):
        """torch's _strong_wolfe for the runs in ``rows``, each with its own bracket:
        (loss, gradient, step length) found per run; ``evaluations`` gains each
        run's evaluations."""
        d = self.direction
        max_ls = self.settings.max_eval - evaluations
        d_norm = d.abs().amax(1)
        t = self.length.clone()

        def at(lengths, mask):
            moved = torch.addcmul(start, d, lengths[:, None])
            weights.copy_(torch.where(mask[:, None], moved, start))
            return evaluate()

        f_new, g_new = at(t, rows)
        count = rows.long()
        gtd_new = _dot(g_new, d)
        t_prev, f_prev, g_prev, gtd_prev = torch.zeros_like(t), f.clone(), g.clone(), gtd.clone()
        ls_iter = torch.zeros_like(count)
        done = torch.zeros_like(rows)
        # The bracket: two points (0 and 1) with values, gradients and slopes;
        # ``low1`` marks runs whose low point is point 1.
        b0, b1 = torch.zeros_like(t), torch.zeros_like(t)
        bf0, bf1, bgtd0, bgtd1 = b0.clone(), b0.clone(), b0.clone(), b0.clone()
        bg0, bg1 = torch.zeros_like(g), torch.zeros_like(g)

        def put(mask, point, t_value, f_value, g_value, gtd_value, into1=None):
            """Set bracket point ``point`` (0, 1, or per run: 1 where ``into1``)."""
            nonlocal b0, b1, bf0, bf1, bg0, bg1, bgtd0, bgtd1
            one = mask & into1 if into1 is not None else (mask if point == 1 else mask & False)
            zero = mask & ~into1 if into1 is not None else (mask if point == 0 else mask & False)
            b0, b1 = torch.where(zero, t_value, b0), torch.where(one, t_value, b1)
            bf0, bf1 = torch.where(zero, f_value, bf0), torch.where(one, f_value, bf1)
            if gtd_value is not None:
                bgtd0 = torch.where(zero, gtd_value, bgtd0)
                bgtd1 = torch.where(one, gtd_value, bgtd1)
            bg0 = torch.where(zero[:, None], g_value, bg0)
            bg1 = torch.where(one[:, None], g_value, bg1)

        bracketing = rows.clone()
        while bool(bracketing.any()):
            exhausted = bracketing & (ls_iter >= max_ls)
            put(exhausted, 0, 0.0, f, g, None)
            put(exhausted, 1, t, f_new, g_new, None)
            bracketing &= ~exhausted
            armijo_fails = (f_new > f + C1 * t * gtd) | ((ls_iter > 1) & (f_new >= f_prev))
            wide = bracketing & armijo_fails
            wolfe = bracketing & ~armijo_fails & (gtd_new.abs() <= -C2 * gtd)
            wide |= bracketing & ~armijo_fails & ~wolfe & (gtd_new >= 0)
            put(wide, 0, t_prev, f_prev, g_prev, gtd_prev)
            put(wide, 1, t, f_new, g_new, gtd_new)
            put(wolfe, 0, t, f_new, g_new, gtd_new)
            done |= wolfe
            bracketing &= ~(wide | wolfe)
            if not bool(bracketing.any()):
                break
            low, high = t + 0.01 * (t - t_prev), t * 10
            t_next = _cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, low, high)
            t_prev = torch.where(bracketing, t, t_prev)
            f_prev = torch.where(bracketing, f_new, f_prev)
            g_prev = torch.where(bracketing[:, None], g_new, g_prev)
            gtd_prev = torch.where(bracketing, gtd_new, gtd_prev)
            t = torch.where(bracketing, t_next, t)
            f_e, g_e = at(t, bracketing)
            f_new = torch.where(bracketing, f_e, f_new)
            g_new = torch.where(bracketing[:, None], g_e, g_new)
            gtd_new = torch.where(bracketing, _dot(g_e, d), gtd_new)
            count += bracketing
            ls_iter += bracketing

        low1 = ~(bf0 <= bf1) & ~done  # a one-point bracket (Wolfe at once) is point 0
        insufficient = torch.zeros_like(rows)
        zooming = rows & ~done & (ls_iter < max_ls)
        while bool(zooming.any()):
            zooming &= ~((b1 - b0).abs() * d_norm < LINE_SEARCH_TOLERANCE)
            if not bool(zooming.any()):
                break
            t_z = _cubic_minimum(b0, bf0, bgtd0, b1, bf1, bgtd1)
            top, bottom = torch.maximum(b0, b1), torch.minimum(b0, b1)
            eps = 0.1 * (top - bottom)
            near = torch.minimum(top - t_z, t_z - bottom) < eps
            at_edge = near & (insufficient | (t_z >= top) | (t_z <= bottom))
            nudged = torch.where((t_z - top).abs() < (t_z - bottom).abs(), top - eps, bottom + eps)
            t_z = torch.where(at_edge, nudged, t_z)
            insufficient = torch.where(zooming, near & ~at_edge, insufficient)
            t = torch.where(zooming, t_z, t)
            f_e, g_e = at(t, zooming)
            gtd_e = _dot(g_e, d)
            count += zooming
            ls_iter += zooming
            f_low = torch.where(low1, bf1, bf0)
            worse = zooming & ((f_e > f + C1 * t * gtd) | (f_e >= f_low))
            put(worse, None, t, f_e, g_e, gtd_e, into1=~low1)
            low1 = torch.where(worse, ~(bf0 <= bf1), low1)
            better = zooming & ~worse
            wolfe = better & (gtd_e.abs() <= -C2 * gtd)
            done |= wolfe
            b_low, b_high = torch.where(low1, b1, b0), torch.where(low1, b0, b1)
            flip = better & ~wolfe & (gtd_e * (b_high - b_low) >= 0)
            put(
                flip,
                None,
                b_low,
                torch.where(low1, bf1, bf0),
                torch.where(low1[:, None], bg1, bg0),
                torch.where(low1, bgtd1, bgtd0),
                into1=~low1,
            )
            put(better, None, t, f_e, g_e, gtd_e, into1=low1)
            zooming &= ~done & (ls_iter < max_ls)

        evaluations += count
        return (
            torch.where(low1, bf1, bf0),
            torch.where(low1[:, None], bg1, bg0),
            torch.where(low1, b1, b0),
        )
