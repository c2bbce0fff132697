"""Universal Logit Distillation (ULD) loss (Boizard et al., "Towards Cross-Tokenizer Distillation: the Universal Logit
Distillation Loss for LLMs", arXiv 2402.12030).

For every aligned answer token, ULD compares the student's and the teacher's next-token distributions after sorting each
in decreasing order (the shorter vocabulary zero-padded): `Σ_i |p_S,(i) − p_T,(i)|`, the closed-form Wasserstein-1
distance under a uniform cost. Only the *sorted values* matter, so student and teacher may use different tokenizers.

The implementation never materialises anything of size (answer tokens × vocabulary): it gathers the aligned positions,
processes them in chunks of rows, keeps from the forward pass only a run-length summary of the gradient signs of each
row, and recomputes the rest in the backward pass. On CPU, rows are sorted with numpy's SIMD sort (several times
faster than `torch.sort`) on a thread pool (numpy releases the GIL while sorting), and the student's permutation comes
from sorting (value bits, index) keys; on accelerators the same maths runs as batched torch ops per chunk.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

__all__ = ["SortedTeacherProbs", "aligned_token_counts", "sort_teacher_probs", "uld_loss"]

_REDUCTIONS = ("sample", "sum")
# Rows are processed in chunks of this many aligned tokens: extra memory is O(chunk × vocabulary).
_CHUNK_SIZE = 64
# A row whose sorted student/teacher differences change sign more often than this keeps nothing from the forward pass
# and is recomputed (teacher sort included) in the backward pass, so stored state stays O(answer tokens).
_MAX_STORED_RUNS = 1024
# Up to this many sign changes, the backward pass maps each student probability to its sign by comparing it with the
# values where the signs change (a few vector compares) instead of sorting the row again to recover its permutation.
_MAX_VALUE_THRESHOLDS = 64
# Devices whose rows are sorted with numpy on the host; elsewhere (accelerators) the same maths runs in batched torch.
_NUMPY_DEVICE_TYPES = ("cpu",)
# Below this many probabilities in total, starting threads costs more than it saves.
_PARALLEL_MIN_ELEMENTS = 1 << 18


@dataclass
class SortedTeacherProbs:
    """
    Teacher side of the ULD loss, precomputed: per answer token, the teacher's probabilities (temperature applied) sorted
    in decreasing order, truncated to the top `k`, plus the probability mass left out.

    Build it with [`sort_teacher_probs`] (or load it from a teacher cache) and pass it to [`uld_loss`] in place of
    `teacher_logits` (with `teacher_labels=None`).

    Args:
        values (`torch.Tensor` of shape `(batch_size, num_answer_tokens, k)`):
            Sorted (decreasing) teacher probabilities of each answer token, in answer order: `values[b, i]` belongs to
            the i-th answer token of sample `b`. Rows at `i >= num_tokens[b]` are padding and are never read.
        remaining_mass (`torch.Tensor` of shape `(batch_size, num_answer_tokens)`):
            Probability mass of the teacher's vocabulary entries beyond the top `k` (exactly 0 when `k` covers the whole
            vocabulary, which makes the loss exact).
        num_tokens (`torch.LongTensor` of shape `(batch_size,)`):
            Number of answer tokens of each sample. These are *all* the teacher's answer tokens: `uld_loss(...,
            skip_teacher_eos=True)` still drops the last of them, exactly as with live teacher logits.
    """

    values: torch.Tensor
    remaining_mass: torch.Tensor
    num_tokens: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("values", "remaining_mass", "num_tokens"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise ValueError(f"SortedTeacherProbs.{name} must be a torch.Tensor, got {type(getattr(self, name))}.")
        if self.values.dim() != 3 or not self.values.is_floating_point():
            raise ValueError(
                "SortedTeacherProbs.values must be a floating tensor of shape (batch_size, num_answer_tokens, k), got "
                f"{self.values.dtype} of shape {tuple(self.values.shape)}."
            )
        if self.values.shape[-1] < 1:
            raise ValueError("SortedTeacherProbs.values must keep at least one probability per token (k >= 1).")
        if (
            tuple(self.remaining_mass.shape) != tuple(self.values.shape[:2])
            or not self.remaining_mass.is_floating_point()
        ):
            raise ValueError(
                "SortedTeacherProbs.remaining_mass must be a floating tensor of shape (batch_size, num_answer_tokens) = "
                f"{tuple(self.values.shape[:2])}, got {self.remaining_mass.dtype} of shape "
                f"{tuple(self.remaining_mass.shape)}."
            )
        if tuple(self.num_tokens.shape) != (self.values.shape[0],) or self.num_tokens.is_floating_point():
            raise ValueError(
                f"SortedTeacherProbs.num_tokens must be an integer tensor of shape ({self.values.shape[0]},), got "
                f"{self.num_tokens.dtype} of shape {tuple(self.num_tokens.shape)}."
            )
        if self.num_tokens.numel() and (
            int(self.num_tokens.min()) < 0 or int(self.num_tokens.max()) > self.values.shape[1]
        ):
            raise ValueError(
                f"SortedTeacherProbs.num_tokens must lie in [0, {self.values.shape[1]}] (the second dimension of "
                f"values), got {self.num_tokens.tolist()}."
            )


def _check_sorted_probs(values: torch.Tensor, remaining: torch.Tensor) -> None:
    """Rows of a SortedTeacherProbs that are read: finite, non-negative, sorted in decreasing order."""
    if not (torch.isfinite(values).all() and torch.isfinite(remaining).all()):
        raise ValueError("SortedTeacherProbs holds NaN or inf probabilities for answer tokens.")
    if (values < 0).any() or (remaining < 0).any():
        raise ValueError("SortedTeacherProbs holds negative probabilities or remaining masses for answer tokens.")
    if (values[:, 1:] > values[:, :-1]).any():
        raise ValueError(
            "SortedTeacherProbs.values must be sorted in decreasing order along the last dimension (build it with "
            "sort_teacher_probs)."
        )


def _check_temperature(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def _check_top_k(top_k: int | None) -> None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None (exact, full sort) or an integer >= 1, got {top_k!r}.")


def _check_logits_and_labels(side: str, logits: Any, labels: Any) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.is_floating_point():
        got = (
            f"{logits.dtype} tensor of shape {tuple(logits.shape)}"
            if isinstance(logits, torch.Tensor)
            else type(logits)
        )
        raise ValueError(
            f"{side}_logits must be a floating tensor of shape (batch_size, seq_len, vocab_size), got {got}."
        )
    if logits.shape[-1] < 1:
        raise ValueError(f"{side}_logits has an empty vocabulary dimension.")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels)
        raise ValueError(f"{side}_labels must be an integer tensor of token ids (ignore_index on prompt), got {got}.")
    if labels.device != logits.device:
        raise ValueError(
            f"{side}_labels are on {labels.device} but {side}_logits on {logits.device}; move them together."
        )
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"{side}_labels must have shape (batch_size, seq_len) = {tuple(logits.shape[:2])} to match {side}_logits, "
            f"got {tuple(labels.shape)}."
        )


def _answer_counts(labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of the logit positions that predict an answer token (causal shift) and the count per sample."""
    predicts_answer = labels[:, 1:] != ignore_index
    return predicts_answer, predicts_answer.sum(dim=1)


def _first_positions(mask: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample, position) of the first `keep[b]` True entries of each row of `mask`, in row-major order."""
    ordinal = mask.cumsum(dim=1)
    selected = mask & (ordinal <= keep[:, None])
    sample_index, position = selected.nonzero(as_tuple=True)
    return sample_index, position


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _probabilities(logits: torch.Tensor, temperature: float, dtype: torch.dtype, side: str) -> torch.Tensor:
    """Softmax of `logits / temperature` in `dtype` (at least float32), finite for logits of any finite magnitude."""
    x = logits.to(dtype)
    row_max = x.amax(dim=-1, keepdim=True)
    # The maximum is NaN or +inf exactly when a row holds NaN or +inf, or is all -inf (-inf alone masks a token).
    if not torch.isfinite(row_max).all():
        raise ValueError(
            f"{side}_logits contain NaN or +inf (or a row of only -inf) at answer positions; ULD needs finite logits."
        )
    if temperature < 1.0:
        # Dividing could overflow; subtracting the row maximum first makes the largest entry exactly 0, and entries
        # more than the dtype's range below it become -inf (probability 0) instead of NaN.
        x = (x - row_max) / temperature
    elif temperature > 1.0:
        x = x / temperature
    return torch.softmax(x, dim=-1)


def _sorted_head(probs: np.ndarray, k: int | None) -> tuple[np.ndarray, float]:
    """The `k` largest entries of a probability row in increasing order, and the mass of the others (all if k=None)."""
    if k is None or k >= probs.size:
        return np.sort(probs), 0.0
    split = probs.size - k
    partitioned = np.partition(probs, split)
    return np.sort(partitioned[split:]), float(partitioned[:split].sum())


def _index_word() -> int:
    """Which 32-bit half of a native uint64 holds its low bits."""
    return 0 if sys.byteorder == "little" else 1


def _ranked_indices(probs: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """
    Indices of the `k` largest entries of a non-negative row in increasing order of value (ties by index), and the
    indices of the others (None when all are kept). Same value order as `_sorted_head`.
    """
    if probs.dtype != np.float32:
        order = np.argsort(probs, kind="stable")
        return (order, None) if k is None or k >= probs.size else (order[probs.size - k :], order[: probs.size - k])
    # Non-negative float32 values order like their bit patterns, so 64-bit keys (value bits high, index low) sort the
    # values and carry the permutation: a SIMD sort of these keys is several times faster than an argsort.
    keys = np.empty(probs.size, dtype=np.uint64)
    words = keys.view(np.uint32)
    words[_index_word() :: 2] = np.arange(probs.size, dtype=np.uint32)
    words[1 - _index_word() :: 2] = probs.view(np.uint32)
    if k is None or k >= probs.size:
        keys.sort()
        return words[_index_word() :: 2], None
    split = probs.size - k
    keys.partition(split)
    keys[split:].sort()
    return words[2 * split + _index_word() :: 2], words[_index_word() : 2 * split : 2]


@dataclass
class _RowState:
    """What the backward pass needs from a row's forward pass: the runs of equal signs of (sorted student − teacher)."""

    head_size: int
    tail_sign: float
    boundaries: np.ndarray | None = None  # start of every run after the first, over the student's sorted head
    run_signs: np.ndarray | None = None
    # With few runs: the student values where a run starts (increasing), and the sign below the first, between
    # consecutive ones, and above the last.
    thresholds: np.ndarray | None = None
    levels: np.ndarray | None = None


def _row_forward(
    probs: np.ndarray, teacher_head: np.ndarray, teacher_tail: float, top_k: int | None, max_runs: int | None
) -> tuple[float, _RowState]:
    """
    ULD term of one aligned token from the student's probabilities and the teacher's sorted (increasing) head and tail
    mass. The sign runs are kept only when they change fewer than `max_runs` times (always when None).
    """
    # Sorted positions are compared up to the narrowest head: the student's vocabulary, the teacher's known head, the
    # top_k cut. Everything beyond is compared as one remaining mass per side, which is exact as soon as one side has
    # none left: a zero-padded side's padding compares to the other side's tail sum.
    head_size = min(probs.size, teacher_head.size, top_k or probs.size)
    if teacher_head.size > head_size:
        teacher_tail = teacher_tail + float(teacher_head[:-head_size].sum())
        teacher_head = teacher_head[-head_size:]
    student_head, student_tail = _sorted_head(probs, head_size)
    diff = student_head - teacher_head
    tail_gap = student_tail - teacher_tail
    loss = float(np.abs(diff).sum()) + abs(tail_gap)

    state = _RowState(head_size, float(np.sign(tail_gap)))
    signs = np.sign(diff).astype(np.int8)
    boundaries = np.flatnonzero(signs[1:] != signs[:-1]) + 1
    if max_runs is None or boundaries.size < max_runs:
        state.boundaries = boundaries
        state.run_signs = signs[np.concatenate(([0], boundaries))]
        if boundaries.size < _MAX_VALUE_THRESHOLDS:
            # The student's tail (values below its head) is one more run, below the head's smallest value.
            has_tail = student_head.size < probs.size
            starts = np.concatenate(([0], boundaries)) if has_tail else boundaries
            state.thresholds = student_head[starts]
            state.levels = np.concatenate(([state.tail_sign] if has_tail else [], state.run_signs)).astype(probs.dtype)
    return loss, state


def _row_sign_gradient(probs: np.ndarray, state: _RowState) -> np.ndarray:
    """d(ULD term)/d(student probabilities): sign(sorted student − sorted teacher) scattered back through the sort."""
    if state.thresholds is not None:
        # Without ties, an entry's rank lies in the run whose value range holds it: count the run starts below it.
        level = np.zeros(probs.size, dtype=np.int16)
        for threshold in state.thresholds:
            level += probs >= threshold
        return state.levels[level]
    head, tail = _ranked_indices(probs, state.head_size)
    run_lengths = np.diff(np.concatenate(([0], state.boundaries, [head.size])))
    gradient = np.empty_like(probs)
    gradient[head] = np.repeat(state.run_signs, run_lengths)
    if tail is not None:
        gradient[tail] = state.tail_sign
    return gradient


def _teacher_head(row: np.ndarray, tail: float | None, top_k: int | None) -> tuple[np.ndarray, float]:
    """Teacher's sorted (increasing) head and tail mass from a probability row (tail None) or a cached sorted row."""
    return _sorted_head(row, top_k) if tail is None else (row, tail)


def _forward_row(
    probs: np.ndarray, teacher_row: np.ndarray, teacher_tail: float | None, *, top_k: int | None, max_runs: int | None
) -> tuple[float, _RowState]:
    # A live teacher is sorted only as far as it can be compared (see `_row_forward`): its values beyond the student's
    # vocabulary size count only through their sum.
    teacher_head_size = min(top_k or probs.size, probs.size)
    return _row_forward(probs, *_teacher_head(teacher_row, teacher_tail, teacher_head_size), top_k, max_runs)


def _backward_row(
    probs: np.ndarray, state: _RowState, teacher_row: np.ndarray | None, teacher_tail: float | None, top_k: int | None
) -> np.ndarray:
    if state.boundaries is None:
        # The forward pass kept no runs for this row (too many): recompute them, teacher sort included.
        state = _forward_row(probs, teacher_row, teacher_tail, top_k=top_k, max_runs=None)[1]
    return _row_sign_gradient(probs, state)


def _map(pool: ThreadPoolExecutor | None, function: Callable[..., Any], *iterables: Iterable) -> list:
    return list(pool.map(function, *iterables)) if pool is not None else list(map(function, *iterables))


def _thread_pool(num_rows: int, row_size: int) -> ThreadPoolExecutor | None:
    """Threads for the row work (numpy releases the GIL while sorting), unless the work is too small to gain."""
    workers = min(torch.get_num_threads(), num_rows)
    if workers < 2 or num_rows * row_size < _PARALLEL_MIN_ELEMENTS:
        return None
    return ThreadPoolExecutor(max_workers=workers)


def _torch_sorted_head(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched `_sorted_head` in torch: the k largest entries of each row (decreasing), their indices, the rest's sum."""
    if k >= x.shape[-1]:
        values, indices = x.sort(dim=-1, descending=True)
        return values, indices, x.new_zeros(x.shape[0])
    values, indices = x.topk(k, dim=-1)
    return values, indices, x.scatter(-1, indices, 0.0).sum(dim=-1)


def _torch_chunk(
    probs: torch.Tensor, teacher: torch.Tensor, teacher_tails: torch.Tensor | None, top_k: int | None, signs: bool
) -> torch.Tensor:
    """
    `_row_forward` for a whole chunk with torch ops (accelerators, where sorting is cheap and host copies are not):
    the ULD term of every row, or (`signs=True`) d(term)/d(probs) for every row.
    """
    vocab = probs.shape[-1]
    head_size = min(vocab, teacher.shape[-1], top_k or vocab)
    if teacher_tails is None:
        teacher_head, _, teacher_tail = _torch_sorted_head(teacher, head_size)
    else:
        teacher_head, teacher_tail = teacher[:, :head_size], teacher_tails + teacher[:, head_size:].sum(dim=-1)
    student_head, order, student_tail = _torch_sorted_head(probs, head_size)
    diff = student_head - teacher_head
    tail_gap = student_tail - teacher_tail
    if not signs:
        return diff.abs().sum(dim=-1) + tail_gap.abs()
    return tail_gap.sign()[:, None].expand_as(probs).contiguous().scatter_(-1, order, diff.sign())


class _ULDRows:
    """The aligned rows of one `uld_loss` call, and the student and teacher sides of any chunk of them."""

    def __init__(
        self,
        student_logits: torch.Tensor,
        teacher: torch.Tensor | SortedTeacherProbs,
        student_rows: tuple[torch.Tensor, torch.Tensor],
        teacher_rows: tuple[torch.Tensor, torch.Tensor],
        row_weights: torch.Tensor,
        student_temperature: float,
        teacher_temperature: float,
        top_k: int | None,
    ):
        self.teacher = teacher
        self.student_rows = student_rows
        self.teacher_rows = teacher_rows
        self.row_weights = row_weights.to(student_logits.device)
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.top_k = top_k
        teacher_tensor = teacher.values if isinstance(teacher, SortedTeacherProbs) else teacher
        self.dtype = _compute_dtype(student_logits, teacher_tensor)
        self.num_rows = row_weights.numel()
        self.on_numpy = student_logits.device.type in _NUMPY_DEVICE_TYPES
        self.states: list[_RowState] = []

    def chunks(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.num_rows, _CHUNK_SIZE):
            yield start, min(_CHUNK_SIZE, self.num_rows - start)

    def student_probs(self, student_logits: torch.Tensor, start: int, count: int) -> torch.Tensor:
        samples, positions = (index[start : start + count] for index in self.student_rows)
        return _probabilities(student_logits[samples, positions], self.student_temperature, self.dtype, "student")

    def teacher_chunk(self, start: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher rows of a chunk: probabilities (tails None), or cached decreasing sorted rows and remaining masses."""
        samples, positions = (index[start : start + count] for index in self.teacher_rows)
        if isinstance(self.teacher, SortedTeacherProbs):
            values = self.teacher.values[samples, positions].to(device, self.dtype)
            remaining = self.teacher.remaining_mass[samples, positions].to(device, self.dtype)
            _check_sorted_probs(values, remaining)
            return values, remaining
        logits = self.teacher[samples, positions]
        return _probabilities(logits, self.teacher_temperature, self.dtype, "teacher").to(device), None

    def numpy_teacher_rows(self, start: int, count: int) -> tuple[list[np.ndarray], list[float | None]]:
        """Teacher rows for the numpy kernels: probability rows (tail None) or increasing sorted rows and tails."""
        teacher, tails = self.teacher_chunk(start, count, torch.device("cpu"))
        if tails is None:
            return list(teacher.numpy()), [None] * count
        return list(teacher.numpy()[:, ::-1]), tails.double().tolist()

    def forward(self, student_logits: torch.Tensor, pool: ThreadPoolExecutor | None) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64, device=student_logits.device)
        row = partial(_forward_row, top_k=self.top_k, max_runs=_MAX_STORED_RUNS)
        for start, count in self.chunks():
            probs = self.student_probs(student_logits, start, count)
            if self.on_numpy:
                results = _map(pool, row, probs.cpu().numpy(), *self.numpy_teacher_rows(start, count))
                self.states.extend(state for _, state in results)
                losses = torch.tensor([loss for loss, _ in results], dtype=torch.float64, device=total.device)
            else:
                losses = _torch_chunk(probs, *self.teacher_chunk(start, count, probs.device), self.top_k, signs=False)
            total += (losses.double() * self.row_weights[start : start + count]).sum()
        return total

    def backward(
        self, student_logits: torch.Tensor, grad_output: torch.Tensor, pool: ThreadPoolExecutor | None
    ) -> torch.Tensor:
        grad = torch.zeros_like(student_logits)
        for start, count in self.chunks():
            probs = self.student_probs(student_logits, start, count)
            if self.on_numpy:
                states = self.states[start : start + count]
                if any(state.boundaries is None for state in states):
                    teacher_rows, teacher_tails = self.numpy_teacher_rows(start, count)
                else:
                    teacher_rows, teacher_tails = [None] * count, [None] * count
                probs_np = probs.cpu().numpy()
                signs = _map(pool, _backward_row, probs_np, states, teacher_rows, teacher_tails, [self.top_k] * count)
                signs = torch.from_numpy(np.stack(signs)).to(probs.device)
            else:
                signs = _torch_chunk(probs, *self.teacher_chunk(start, count, probs.device), self.top_k, signs=True)
            # Softmax Jacobian: dL/dz_j = p_j (g_j − Σ_i p_i g_i) / temperature.
            weights = self.row_weights[start : start + count].to(probs.dtype)[:, None]
            weights = weights * grad_output.to(probs.dtype) / self.student_temperature
            row_grad = probs * (signs - (probs * signs).sum(dim=-1, keepdim=True)) * weights
            samples, positions = (index[start : start + count] for index in self.student_rows)
            grad[samples, positions] = row_grad.to(grad.dtype)
        return grad


class _ULDFunction(torch.autograd.Function):
    """ULD term with a backward pass that recomputes the student's softmax and sort instead of storing them."""

    @staticmethod
    def forward(ctx: Any, student_logits: torch.Tensor, rows: _ULDRows) -> torch.Tensor:
        pool = _thread_pool(rows.num_rows, student_logits.shape[-1]) if rows.on_numpy else None
        try:
            value = rows.forward(student_logits, pool)
        finally:
            if pool is not None:
                pool.shutdown()
        ctx.rows = rows
        ctx.save_for_backward(student_logits)
        return value.to(rows.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (student_logits,) = ctx.saved_tensors
        pool = _thread_pool(ctx.rows.num_rows, student_logits.shape[-1]) if ctx.rows.on_numpy else None
        try:
            grad = ctx.rows.backward(student_logits, grad_output, pool)
        finally:
            if pool is not None:
                pool.shutdown()
        return grad, None


def _aligned_row_weights(aligned: torch.Tensor, reduction: str) -> torch.Tensor:
    """Weight of each aligned row (in sample order) in the reduced loss."""
    counts = aligned.cpu()
    if reduction == "sum":
        return torch.ones(int(counts.sum()), dtype=torch.float64)
    has_tokens = counts > 0
    per_sample = torch.zeros_like(counts, dtype=torch.float64)
    per_sample[has_tokens] = 1.0 / (counts[has_tokens].double() * int(has_tokens.sum()))
    return per_sample.repeat_interleave(counts)


def _cached_rows(teacher: SortedTeacherProbs, aligned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    slots = torch.arange(teacher.values.shape[1], device=aligned.device)
    return (slots[None, :] < aligned[:, None]).nonzero(as_tuple=True)


def _validate_common(
    student_temperature: float, teacher_temperature: float, ignore_index: int, reduction: str, top_k: int | None
) -> None:
    _check_temperature("student_temperature", student_temperature)
    _check_temperature("teacher_temperature", teacher_temperature)
    _check_top_k(top_k)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}.")


def aligned_token_counts(
    student_counts: torch.Tensor, teacher_counts: torch.Tensor, *, skip_student_eos: bool, skip_teacher_eos: bool
) -> torch.Tensor:
    """Number of answer tokens per sample that positional ULD pairs, from each side's number of predicted answer
    tokens: the skipped last tokens removed, the longer side truncated to the shorter."""
    return torch.minimum(
        (student_counts - int(skip_student_eos)).clamp(min=0), (teacher_counts - int(skip_teacher_eos)).clamp(min=0)
    )


def uld_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SortedTeacherProbs,
    student_labels: torch.Tensor,
    teacher_labels: torch.Tensor | None,
    *,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    skip_student_eos: bool = False,
    skip_teacher_eos: bool = False,
    ignore_index: int = -100,
    reduction: str = "sample",
    top_k: int | None = None,
) -> torch.Tensor:
    """
    Universal Logit Distillation term (unweighted; the trainer adds cross-entropy and the distillation weight).

    For every aligned answer token, `Σ_i |p_S,(i) − p_T,(i)|` over the student's and teacher's next-token probabilities
    (softmax of logits / temperature) sorted in decreasing order, the smaller vocabulary zero-padded. Labels are the usual
    *unshifted* causal-LM labels: the logits at position `t` predict the label at `t + 1`, and positions whose label is
    `ignore_index` are not answer tokens (the answer may be any mask, e.g. several assistant turns). The k-th student
    answer token is aligned with the k-th teacher answer token; the longer side of each sample is truncated.

    Softmax, sort and L1 run in float32 (float64 when an input is float64) whatever the logits' dtype, and stay finite
    for finite logits of any magnitude. Extra memory is O(chunk × vocabulary): only aligned positions are read, in
    chunks, and the backward pass recomputes the student's softmax (and, rarely, its sort). Gradients are exact:
    `sign(sorted p_S − sorted p_T)` scattered back through the student's sort, then the softmax Jacobian. Where equal
    student probabilities straddle a change of sign, the loss has no gradient and any order of the tie gives a valid
    subgradient: all tied entries then take the sign of the higher-ranked run. The teacher gets no gradient.

    Args:
        student_logits (`torch.Tensor` of shape `(batch_size, student_seq_len, student_vocab_size)`):
            Student logits, any floating dtype.
        teacher_logits (`torch.Tensor` of shape `(batch_size, teacher_seq_len, teacher_vocab_size)` or [`SortedTeacherProbs`]):
            Teacher logits (detached), or the teacher side precomputed by [`sort_teacher_probs`] / a teacher cache (then
            `teacher_labels` must be None and `teacher_temperature` is ignored: it was applied when sorting).
        student_labels (`torch.LongTensor` of shape `(batch_size, student_seq_len)`):
            Unshifted labels, `ignore_index` outside the answer.
        teacher_labels (`torch.LongTensor` of shape `(batch_size, teacher_seq_len)`, *optional*):
            Same for the teacher's tokenization; None with [`SortedTeacherProbs`].
        student_temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of the student (> 0).
        teacher_temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of the teacher (> 0).
        skip_student_eos (`bool`, *optional*, defaults to `False`):
            Drop each sample's last student answer token (its EOS) before aligning.
        skip_teacher_eos (`bool`, *optional*, defaults to `False`):
            Drop each sample's last teacher answer token (also applies to [`SortedTeacherProbs`]).
        ignore_index (`int`, *optional*, defaults to `-100`):
            Label value of non-answer positions.
        reduction (`str`, *optional*, defaults to `"sample"`):
            `"sample"`: the paper's reduction, mean over each sample's aligned tokens, then mean over the samples that
            have at least one. `"sum"`: plain sum over all aligned tokens (for normalising by a token count).
        top_k (`int`, *optional*):
            Sort only the `k` largest probabilities of each side and compare the remaining masses as one extra
            position: `Σ_{i≤k} |p_S,(i) − p_T,(i)| + |(1 − S_k) − (1 − T_k)|`, where `S_k`, `T_k` are the top-k masses.
            The exact tail term `Σ_{i>k} |p_S,(i) − p_T,(i)|` lies between `|S_k − T_k|` and `(1 − S_k) + (1 − T_k)`,
            so each token's value is a lower bound of the exact one with absolute error at most
            `(1 − S_k) + (1 − T_k)`, and it is exact when `k` covers a vocabulary. A [`SortedTeacherProbs`] holding
            fewer than `k` values with remaining mass > 0 limits `k` to its width for that token.

    Returns:
        `torch.Tensor`: scalar, float32 (float64 for float64 inputs). 0 (with a gradient path to `student_logits`)
        when no token is aligned.
    """
    _validate_common(student_temperature, teacher_temperature, ignore_index, reduction, top_k)
    _check_logits_and_labels("student", student_logits, student_labels)
    cached = isinstance(teacher_logits, SortedTeacherProbs)
    if cached:
        if teacher_labels is not None:
            raise ValueError("teacher_labels must be None when the teacher side is a SortedTeacherProbs.")
        batch_size = teacher_logits.values.shape[0]
    else:
        _check_logits_and_labels("teacher", teacher_logits, teacher_labels)
        batch_size = teacher_logits.shape[0]
    if batch_size != student_logits.shape[0]:
        raise ValueError(
            f"Student and teacher batch sizes differ ({student_logits.shape[0]} vs {batch_size}); ULD aligns sample b "
            "of the student with sample b of the teacher."
        )

    student_mask, student_counts = _answer_counts(student_labels, ignore_index)
    if cached:
        teacher_counts = teacher_logits.num_tokens.to(student_counts.device, torch.long)
    else:
        teacher_logits = teacher_logits.detach()
        teacher_mask, teacher_counts = _answer_counts(teacher_labels, ignore_index)
        teacher_counts = teacher_counts.to(student_counts.device)
    aligned = aligned_token_counts(
        student_counts, teacher_counts, skip_student_eos=skip_student_eos, skip_teacher_eos=skip_teacher_eos
    )
    if cached:
        teacher_rows = _cached_rows(teacher_logits, aligned.to(teacher_logits.values.device))
    else:
        teacher_rows = _first_positions(teacher_mask, aligned.to(teacher_mask.device))
    rows = _ULDRows(
        student_logits,
        teacher_logits,
        _first_positions(student_mask, aligned),
        teacher_rows,
        _aligned_row_weights(aligned, reduction),
        float(student_temperature),
        float(teacher_temperature),
        top_k,
    )
    return _ULDFunction.apply(student_logits, rows)


def sort_teacher_probs(
    teacher_logits: torch.Tensor,
    teacher_labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    ignore_index: int = -100,
) -> SortedTeacherProbs:
    """
    Precompute the teacher side of [`uld_loss`]: the teacher's probabilities at every answer token (causal shift applied,
    as in `uld_loss`), softmax with `temperature`, sorted in decreasing order and cut to the top `top_k` (all when None)
    plus the remaining mass. `uld_loss(student_logits, sort_teacher_probs(t_logits, t_labels, ...), s_labels, None)`
    equals `uld_loss(student_logits, t_logits, s_labels, t_labels)` exactly when `top_k` is None or covers the teacher's
    vocabulary. EOS skipping is left to `uld_loss(skip_teacher_eos=...)`.

    Args:
        teacher_logits (`torch.Tensor` of shape `(batch_size, seq_len, vocab_size)`):
            Teacher logits, any floating dtype (sorted in float32, float64 for float64 logits).
        teacher_labels (`torch.LongTensor` of shape `(batch_size, seq_len)`):
            Unshifted labels, `ignore_index` outside the answer.
        temperature (`float`, *optional*, defaults to `1.0`):
            Teacher softmax temperature (> 0).
        top_k (`int`, *optional*):
            Number of probabilities kept per token (>= 1); None keeps the whole vocabulary.
        ignore_index (`int`, *optional*, defaults to `-100`):
            Label value of non-answer positions.

    Returns:
        [`SortedTeacherProbs`] on the logits' device.
    """
    _validate_common(temperature, 1.0, ignore_index, "sample", top_k)
    _check_logits_and_labels("teacher", teacher_logits, teacher_labels)
    teacher_logits = teacher_logits.detach()
    mask, counts = _answer_counts(teacher_labels, ignore_index)
    samples, positions = _first_positions(mask, counts)
    slots = (mask.cumsum(dim=1) - 1)[samples, positions]
    batch_size, vocab_size = teacher_logits.shape[0], teacher_logits.shape[-1]
    width = vocab_size if top_k is None else min(top_k, vocab_size)
    max_tokens = int(counts.max()) if counts.numel() else 0
    dtype = _compute_dtype(teacher_logits)
    values = torch.zeros(batch_size, max_tokens, width, dtype=dtype)
    remaining = torch.zeros(batch_size, max_tokens, dtype=dtype)
    samples, positions, slots = samples.cpu(), positions.cpu(), slots.cpu()
    pool = _thread_pool(samples.numel(), vocab_size)
    try:
        for start in range(0, samples.numel(), _CHUNK_SIZE):
            chunk = slice(start, start + _CHUNK_SIZE)
            logits = teacher_logits[
                samples[chunk].to(teacher_logits.device), positions[chunk].to(teacher_logits.device)
            ]
            probs = _probabilities(logits, temperature, dtype, "teacher").cpu().numpy()
            heads = _map(pool, partial(_sorted_head, k=top_k), probs)
            values[samples[chunk], slots[chunk]] = torch.from_numpy(np.stack([head[::-1] for head, _ in heads]))
            remaining[samples[chunk], slots[chunk]] = torch.tensor([tail for _, tail in heads], dtype=dtype)
    finally:
        if pool is not None:
            pool.shutdown()
    device = teacher_logits.device
    return SortedTeacherProbs(values.to(device), remaining.to(device), counts.to(device))
