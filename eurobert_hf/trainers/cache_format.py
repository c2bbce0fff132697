"""Compact storage of a teacher's sorted probabilities: an exact head and a modelled tail.

ULD needs, per answer token, only the teacher's probabilities sorted in decreasing order. Their tails are heavy (for
Gemma-3-270M on the demo's data the top 256 keep 94% of the mass on average, 65% at worst), so truncation alone loses
too much; but a sorted tail is smooth and monotone, close to piecewise power laws in the rank. The compact format keeps
per answer token:

- the `head_size` largest probabilities, in float16 (2 bytes each);
- `log p` at `tail_knots` ranks log-spaced over `(head_size, vocab_size]`, in float16 (2 bytes each): the tail is a
  power law per segment between them (`log p` linear in `log rank`), fitted to the sorted tail by least squares on
  `log p` weighted by `p`, so that it follows the mass (not the vocabulary's last, extreme values);
- the exact mass beyond the head, in float32 (4 bytes): the rebuilt tail is rescaled to it, so every token's rebuilt
  distribution sums to 1.

That is `2 · head_size + 2 · tail_knots + 4` bytes per token (100 with the defaults 32 and 16). [`decode_compact`]
rebuilds the sorted vector up to any width on the tensors' device, the mass beyond that width integrated
(Gauss-Legendre per segment), so that a trainer materialises only what its loss compares (the student's vocabulary at
most).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["compact_bytes_per_token", "decode_compact", "encode_compact", "knot_ranks"]

# Probabilities are floored here before their log is stored (float32 softmax underflows near 1e-45).
_LOG_FLOOR = math.log(1e-38)


def compact_bytes_per_token(head_size: int, tail_knots: int) -> int:
    """Bytes the compact format stores per answer token."""
    return 2 * head_size + 2 * tail_knots + 4


def knot_ranks(vocab_size: int, head_size: int, tail_knots: int) -> torch.Tensor:
    """
    The 1-based ranks of the tail knots: `tail_knots` increasing ranks log-spaced over `(head_size, vocab_size]`, the
    first right after the head and the last the vocabulary's end. A tail shorter than `tail_knots` gets a knot on every
    rank (the last repeated), which makes the format exact.
    """
    first, last = head_size + 1, vocab_size
    if last <= first:
        return torch.full((tail_knots,), max(last, 1), dtype=torch.long)
    if last - first + 1 <= tail_knots:
        ranks = torch.arange(first, last + 1)
        return torch.cat([ranks, ranks[-1:].expand(tail_knots - ranks.numel())])
    ranks = torch.logspace(math.log10(first), math.log10(last), tail_knots, dtype=torch.float64).round().long()
    ranks[0], ranks[-1] = first, last
    # Rounding can merge the closest (first) knots: push them apart, never past the room the later ones need.
    for index in range(1, tail_knots):
        ranks[index] = min(max(int(ranks[index]), int(ranks[index - 1]) + 1), last - (tail_knots - 1 - index))
    return ranks


def _segments(ranks: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment of each rank in `points` between the knot `ranks` (distinct, increasing) and its position `t` in
    [0, 1] along the segment in log rank."""
    log_ranks = ranks.log()
    segment = (torch.searchsorted(ranks, points, right=True) - 1).clamp(0, ranks.numel() - 2)
    t = (points.log() - log_ranks[segment]) / (log_ranks[segment + 1] - log_ranks[segment])
    return segment, t


def _fit_knots(tail: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """
    Log-probabilities at the knot `ranks` of the piecewise power law closest to the sorted `tail` (ranks `ranks[0]`
    onwards, one row per token): least squares on log p, weighted by p, so that the fit follows the mass rather than
    the far end of the vocabulary, whose last order statistics are extreme. Made non-increasing afterwards.
    """
    tokens, count = tail.shape
    knots = ranks.numel()
    segment, t = _segments(ranks, torch.arange(count, device=tail.device, dtype=torch.float64) + ranks[0])
    weights = tail + 1e-30
    log_p = tail.clamp(min=math.exp(_LOG_FLOOR)).log()
    normal = torch.zeros(tokens, knots * knots, dtype=torch.float64, device=tail.device)
    for row, column, basis in (
        (segment, segment, (1 - t) ** 2),
        (segment, segment + 1, t * (1 - t)),
        (segment + 1, segment, t * (1 - t)),
        (segment + 1, segment + 1, t**2),
    ):
        normal.index_add_(1, row * knots + column, weights * basis)
    target = torch.zeros(tokens, knots, dtype=torch.float64, device=tail.device)
    target.index_add_(1, segment, weights * (1 - t) * log_p)
    target.index_add_(1, segment + 1, weights * t * log_p)
    normal = normal.view(tokens, knots, knots)
    # A knot whose segments hold (almost) no mass is held near its neighbours rather than left undetermined.
    ridge = 1e-9 * normal.diagonal(dim1=-2, dim2=-1).amax(dim=-1, keepdim=True).clamp(min=1e-300)
    smooth = torch.zeros(knots, knots, dtype=torch.float64, device=tail.device)
    index = torch.arange(knots - 1, device=tail.device)
    smooth[index, index] += 1
    smooth[index + 1, index + 1] += 1
    smooth[index, index + 1] -= 1
    smooth[index + 1, index] -= 1
    fitted = torch.linalg.solve(
        normal + ridge[..., None] * (smooth + 1e-3 * torch.eye(knots, dtype=torch.float64)), target
    )
    return torch.cummin(fitted.clamp(min=_LOG_FLOOR, max=0.0), dim=-1).values


def encode_compact(
    sorted_probs: torch.Tensor, head_size: int, tail_knots: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Compact encoding of full sorted probability rows.

    Args:
        sorted_probs (`torch.Tensor` of shape `(tokens, vocab_size)`):
            Each token's probabilities over the whole vocabulary, sorted in decreasing order.
        head_size (`int`), tail_knots (`int`):
            See the module docstring.

    Returns:
        `(head, knots, tail_mass)`: `(tokens, head_size)` float16 (zero-padded past a smaller vocabulary),
        `(tokens, tail_knots)` float16 log-probabilities, `(tokens,)` float32 mass beyond the head.
    """
    tokens, vocab_size = sorted_probs.shape
    head = torch.zeros(tokens, head_size, dtype=torch.float16, device=sorted_probs.device)
    kept = min(head_size, vocab_size)
    head[:, :kept] = sorted_probs[:, :kept].to(torch.float16)
    tail_mass = sorted_probs[:, kept:].double().sum(dim=-1).float()
    ranks = knot_ranks(vocab_size, head_size, tail_knots).to(sorted_probs.device)
    if vocab_size - kept <= tail_knots:
        # A tail shorter than the knots: a knot on every rank, exact.
        log_knots = (
            sorted_probs[:, (ranks - 1).clamp(max=vocab_size - 1)].double().clamp(min=math.exp(_LOG_FLOOR)).log()
        )
    else:
        log_knots = _fit_knots(sorted_probs[:, kept:].double(), ranks.double())
    knots = log_knots.to(torch.float16)
    return head, knots, tail_mass


def _interpolate(log_ranks: torch.Tensor, log_knots: torch.Tensor, points: torch.Tensor, segment: torch.Tensor):
    """log p at the log ranks `points` (each in its `segment`), linear in log rank between the knots: a power law per
    segment."""
    t = (points - log_ranks[segment]) / (log_ranks[segment + 1] - log_ranks[segment])
    return log_knots[:, segment] + t * (log_knots[:, segment + 1] - log_knots[:, segment])


# Gauss–Legendre nodes and weights on [0, 1] for the closed-form-free sums beyond the materialised width.
_NODES, _WEIGHTS = (torch.from_numpy(array) for array in np.polynomial.legendre.leggauss(8))
_NODES, _WEIGHTS = (_NODES + 1) / 2, _WEIGHTS / 2


def _sum_beyond(x: torch.Tensor, y: torch.Tensor, ranks: torch.Tensor, width: int) -> torch.Tensor:
    """Σ over the ranks width + 1 .. vocabulary of the curve's probabilities, per row: per segment, the integral of
    p(r) over [low − ½, high + ½] (midpoint rule for the sum), by Gauss–Legendre quadrature in log r."""
    starts, ends = ranks[:-1], ranks[1:]
    low = torch.maximum(torch.cat([starts[:1], starts[1:] + 1]), torch.tensor(width + 1.0, device=ranks.device))
    valid = ends >= low
    u0, u1 = torch.log(torch.where(valid, low, ends) - 0.5), torch.log(ends + 0.5)
    nodes, weights = _NODES.to(x.device), _WEIGHTS.to(x.device)
    u = u0[:, None] + (u1 - u0)[:, None] * nodes  # (segments, nodes)
    segment = torch.arange(starts.numel(), device=x.device)[:, None].expand_as(u)
    # The half ranks outside the knots take the nearest knot's value.
    log_p = _interpolate(x, y, u.clamp(x[0], x[-1]).reshape(-1), segment.reshape(-1))
    integrand = (log_p + u.reshape(-1)).exp().reshape(y.shape[0], *u.shape)  # p(r) dr = p(e^u) e^u du
    per_segment = (integrand * weights).sum(dim=-1) * (u1 - u0)
    return torch.where(valid, per_segment, torch.zeros_like(per_segment)).sum(dim=-1)


def decode_compact(
    head: torch.Tensor, knots: torch.Tensor, tail_mass: torch.Tensor, vocab_size: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Rebuilds the sorted probabilities encoded by [`encode_compact`], up to `width` ranks.

    Args:
        head (`torch.Tensor` of shape `(..., head_size)`), knots (`torch.Tensor` of shape `(..., tail_knots)`),
        tail_mass (`torch.Tensor` of shape `(...)`):
            The encoding.
        vocab_size (`int`):
            The teacher's vocabulary size.
        width (`int`, *optional*):
            Number of leading sorted probabilities to rebuild (default: the whole vocabulary); the mass of the others
            is returned as the remaining mass.

    Returns:
        `(values, remaining_mass)`: `(..., min(width, vocab_size))` float32 probabilities, decreasing, and `(...)`
        float32 mass beyond them; together they sum to 1 up to the float16 rounding of the head.
    """
    head_size = head.shape[-1]
    width = vocab_size if width is None else min(width, vocab_size)
    batch_shape = head.shape[:-1]
    head = head.reshape(-1, head_size).float()
    log_knots = knots.reshape(-1, knots.shape[-1]).double()
    tail_mass = tail_mass.reshape(-1).double()
    if vocab_size <= head_size or width <= head_size:
        kept = min(width, head_size)
        remaining = tail_mass + head[:, kept:].double().sum(dim=-1)
        return head[:, :kept].reshape(*batch_shape, kept), remaining.float().reshape(batch_shape)

    device = head.device
    ranks = knot_ranks(vocab_size, head_size, knots.shape[-1]).to(device, torch.float64)
    # Repeated last knots (a tail shorter than the knots) add empty segments: keep the distinct ones.
    distinct = torch.cat([ranks[:1] < ranks[:1] + 1, ranks[1:] > ranks[:-1]])
    ranks, log_knots = ranks[distinct], log_knots[:, distinct]
    log_ranks = ranks.log()
    if ranks.numel() == 1:
        # A single distinct knot (the vocabulary's last rank): a flat tail.
        tail = log_knots[:, :1].exp().float().expand(-1, width - head_size)
        beyond = torch.zeros_like(tail_mass)
    else:
        # The materialised tail: ranks head_size + 1 .. width (float32: it is the big tensor, tokens × width).
        tail_ranks = torch.arange(head_size + 1, width + 1, device=device, dtype=torch.float64)
        segment, _ = _segments(ranks, tail_ranks)
        tail = _interpolate(log_ranks.float(), log_knots.float(), tail_ranks.log().float(), segment).exp()
        # The rest, width + 1 .. vocab_size, integrated.
        beyond = _sum_beyond(log_ranks, log_knots, ranks, width) if width < vocab_size else 0.0 * tail_mass
    scale = tail_mass / (tail.sum(dim=-1, dtype=torch.float64) + beyond).clamp(min=1e-300)
    # Rescaling may lift the tail's first value above the head's last: clip to keep the order (a negligible mass).
    tail = torch.minimum(tail * scale[:, None].float(), head[:, -1:])
    values = torch.cat([head, tail], dim=-1)
    remaining = (beyond * scale).float()
    return values.reshape(*batch_shape, width), remaining.reshape(batch_shape)
