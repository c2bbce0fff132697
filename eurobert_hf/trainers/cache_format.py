"""Compact storage of a teacher's sorted probabilities: an exact head and a modelled tail.

ULD needs, per answer token, only the teacher's probabilities sorted in decreasing order. Their tails are heavy (for
Gemma-3-270M on the demo's data the top 256 keep 94% of the mass on average, 65% at worst), so truncation alone loses
too much; but a sorted tail is smooth and monotone, close to piecewise power laws in the rank. The compact format keeps
per answer token:

- the `head_size` largest probabilities, in float16 (2 bytes each);
- `log p` at `tail_knots` ranks log-spaced over `(head_size, vocab_size]`, in float16 (2 bytes each): the tail is
  rebuilt by linear interpolation of `log p` against `log rank` between them (a power law per segment);
- the exact mass beyond the head, in float32 (4 bytes): the rebuilt tail is rescaled to it, so every token's rebuilt
  distribution sums to 1.

That is `2 · head_size + 2 · tail_knots + 4` bytes per token (100 with the defaults 32 and 16). [`decode_compact`]
rebuilds the sorted vector up to any width on the tensors' device, the mass beyond that width summed in closed form, so
that a trainer materialises only what its loss compares (the student's vocabulary at most).
"""

from __future__ import annotations

import math

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
    knot_values = sorted_probs[:, (ranks - 1).clamp(max=vocab_size - 1)].double()
    knots = knot_values.clamp(min=math.exp(_LOG_FLOOR)).log().to(torch.float16)
    return head, knots, tail_mass


def _power_law_sum(
    start_rank: torch.Tensor, start_log: torch.Tensor, slope: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """Σ_{r=low..high} exp(start_log) (r / start_rank)^slope, by the midpoint rule (exact enough past a few ranks)."""

    def integral(upper: torch.Tensor) -> torch.Tensor:
        # ∫_{start_rank}^{upper} (r / start_rank)^slope dr = start_rank · t · exprel((slope + 1) · t), t = log(u / a).
        t = torch.log(upper / start_rank)
        x = (slope + 1.0) * t
        exprel = torch.where(x.abs() < 1e-8, 1.0 + x / 2.0, torch.expm1(x) / torch.where(x == 0, 1.0, x))
        return start_rank * t * exprel

    total = torch.exp(start_log) * (integral(high + 0.5) - integral(low - 0.5))
    return torch.where(high >= low, total, torch.zeros_like(total))


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
        slopes = torch.zeros(log_knots.shape[0], 0, dtype=torch.float64, device=device)
    else:
        slopes = (log_knots[:, 1:] - log_knots[:, :-1]) / (log_ranks[1:] - log_ranks[:-1])

    # The materialised tail: ranks head_size + 1 .. width, log p interpolated in log rank (float32: it is the big
    # tensor, tokens × width; its sums are float64).
    tail_ranks = torch.arange(head_size + 1, width + 1, device=device, dtype=torch.float64)
    segment = (torch.searchsorted(ranks, tail_ranks, right=True) - 1).clamp(0, max(ranks.numel() - 2, 0))
    if ranks.numel() == 1:
        log_tail = log_knots[:, :1].float().expand(-1, tail_ranks.numel())
    else:
        offsets = (tail_ranks.log() - log_ranks[segment]).float()
        log_tail = log_knots[:, segment].float() + slopes[:, segment].float() * offsets
    tail = log_tail.exp()

    # The rest, width + 1 .. vocab_size, summed per segment in closed form.
    beyond = torch.zeros_like(tail_mass)
    if width < vocab_size and ranks.numel() > 1:
        starts, ends = ranks[:-1], ranks[1:]
        low = torch.maximum(torch.cat([starts[:1], starts[1:] + 1]), torch.tensor(width + 1.0, device=device))
        beyond = _power_law_sum(starts, log_knots[:, :-1], slopes, low, ends).sum(dim=-1)
    scale = tail_mass / (tail.sum(dim=-1, dtype=torch.float64) + beyond).clamp(min=1e-300)
    # Rescaling may lift the tail's first value above the head's last: clip to keep the order (a negligible mass).
    tail = torch.minimum(tail * scale[:, None].float(), head[:, -1:])
    values = torch.cat([head, tail], dim=-1)
    remaining = (beyond * scale).float()
    return values.reshape(*batch_shape, width), remaining.reshape(batch_shape)
