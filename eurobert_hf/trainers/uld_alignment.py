"""Offsets alignment for ULD (`uld_alignment="offsets"`): pair student and teacher answer tokens by the characters of
the completion they cover, instead of by position.

Positional ULD (the paper) pairs the k-th student answer token with the k-th teacher answer token. As soon as the two
tokenizers split a word differently ("Grüße" is 3 tokens for one, 4 for another), every later pair compares the
distributions of different text. Offsets alignment fixes this in two steps.

**1. Groups (at data-preparation time, no model involved).** Each answer token carries the character span of the
completion it covers (fast tokenizers' `return_offsets_mapping`). A *cut* of one side is a character position where
one of its tokens starts. The completion is split at the cuts that **both** sides have (the minimal common
segmentation); each piece is a *group* holding one or more consecutive tokens of each side that cover exactly the
same text. Tokenizer conventions are normalised so that equal text gives equal cuts:

- whitespace is never a cut position: a token's cut is its first non-whitespace character, so SentencePiece's "▁"
  prefix (whose offsets may or may not include the space), GPT-2's leading "Ġ" and WordPiece's dropped spaces all
  agree, and whitespace-only tokens join the group of the text before them;
- byte-level tokens that split one multi-byte character (emoji, CJK) all report that character's span, so they
  start at the same position and are never cut apart; a byte-level token may also end inside the next character
  (GPT-2 has one token for "の" plus the first byte of "首"), so a position is a cut only if no earlier token of that
  side reaches past it;
- tokens that cover no text (EOS, template tokens, spans outside the completion) are left out (group `-1`), except
  that trailing ones on both sides form one last group together (both predict "the answer ends here");
- if the two sides do not cover the same text at the start or the end (a truncated completion), the end of the
  shorter side counts as a cut of that side and any group only partly covered by it is left out. (A side truncated
  between the byte tokens of one character still reports the whole character, which offsets cannot reveal.)

**2. Merging a group's distributions (in the loss).** A group of `m` tokens `x_1..x_m` has, by the chain rule, the
probability `p(x_1..x_m) = Π_j p(x_j | x_<j)`, and under teacher forcing each factor is the next-token distribution
at position `j`. The distribution of the group is approximated by the *product* of these per-position distributions
(exact for the observed sequence, an independence approximation for the others, which would condition on different
prefixes). ULD compares sorted probability vectors, so each side's group becomes the sorted top-`k` values of that
product distribution plus its remaining mass `1 − Σ top-k`, and the group's loss is the ULD term of the two merged
vectors: `Σ_{i≤k} |s_(i) − t_(i)| + |r_S − r_T|` (as `uld_loss` with `top_k`). Single-token groups reduce exactly
to top-`k` positional ULD, so identical tokenizers give the same loss as `uld_loss(..., top_k=k)`.

The top-`k` of a product is computed from the factors' top-`k` alone, *exactly*: the entries of the full product
ranked in its top `k` only use indices `< k` of every factor (an entry with index `≥ k` in one factor is dominated by
`k` entries with smaller indices there). Merging runs in log space (`log p_1 ⊕ log p_2`, an outer sum, then top-`k`,
repeated over the group), with differentiable torch ops on the student's log-softmax so gradients flow to the
student's logits. Error: the loss of a group is the `top_k` ULD value of the merged distributions, a lower bound of
the full sorted L1 with absolute error at most `r_S + r_T` (the masses beyond the top `k`), as in `uld_loss`;
`top_k` is required, since the product of full distributions has `V^m` entries.

Trainer integration: `align_completion_tokens` builds the group columns of a prepared sample (`uld_groups`,
`teacher_uld_groups`, one entry per predicted answer token); `pad_alignment_groups` batches them; `offsets_uld_loss`
is the loss and `count_aligned_groups` the normaliser (the number of groups, the unit that `reduction="sum"` sums).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .uld_losses import SortedTeacherProbs, sort_teacher_probs

__all__ = [
    "ALIGNMENT_COLUMNS",
    "OffsetsAlignment",
    "align_by_offsets",
    "align_completion_tokens",
    "completion_token_spans",
    "count_aligned_groups",
    "merge_sorted_probs",
    "offsets_uld_loss",
    "pad_alignment_groups",
]

ALIGNMENT_COLUMNS = ("uld_groups", "teacher_uld_groups")
_REDUCTIONS = ("sample", "sum")
# Student rows are turned into top-k log-probabilities in chunks, each recomputed in the backward pass, so only the
# (rows × k) results are kept instead of (rows × vocabulary) softmax outputs.
_CHUNK_SIZE = 64

Span = tuple[int, int]


@dataclass
class OffsetsAlignment:
    """
    Groups of student and teacher tokens covering the same text of a completion.

    Args:
        student_groups (`list[int]`):
            Group index of each student token, in token order (`-1`: the token is not aligned).
        teacher_groups (`list[int]`):
            Same for the teacher's tokens.
        group_spans (`list[tuple[int, int]]`):
            Character range `[start, end)` of the completion covered by each group (`(len, len)` for the group of
            trailing tokens that cover no text).
    """

    student_groups: list[int]
    teacher_groups: list[int]
    group_spans: list[Span]

    @property
    def num_groups(self) -> int:
        return len(self.group_spans)


def _check_spans(side: str, spans: Sequence[Span | None], text_length: int) -> None:
    for index, span in enumerate(spans):
        if span is None:
            continue
        if len(span) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in span):
            raise ValueError(f"{side} span {index} must be a pair of ints (start, end) or None, got {span!r}.")
        start, end = span
        if not 0 <= start <= end <= text_length:
            raise ValueError(
                f"{side} span {index} = {span} lies outside the completion (length {text_length}); spans must be "
                "character offsets relative to the completion text (see `completion_token_spans`)."
            )


def _cut_positions(text: str, spans: Sequence[Span | None]) -> list[tuple[int, bool] | None]:
    """
    For every token that covers text: its canonical start (first non-whitespace character) and whether the text can
    be cut there, i.e. no earlier token reaches past it (a byte-level token may end inside the next character, whose
    remaining bytes then start mid-character). None for tokens that cover no text.
    """
    starts: list[tuple[int, bool] | None] = []
    previous_start, previous_end = 0, 0
    for span in spans:
        if span is None or span[0] >= span[1]:
            starts.append(None)
            continue
        start, end = span
        first = next((i for i in range(start, end) if not text[i].isspace()), start)
        # Offsets never go backwards in a real tokenization; clamping keeps groups contiguous if one ever did.
        previous_start = max(previous_start, first)
        starts.append((previous_start, previous_start >= previous_end))
        previous_end = max(previous_end, end)
    return starts


def _assign_groups(starts: list[tuple[int, bool] | None], common: list[int]) -> list[int]:
    """Group of each token: a cut token opens the group of its position, any other token joins the previous one."""
    groups, current = [], 0
    for start in starts:
        if start is None:
            groups.append(-1)
            continue
        position, is_cut = start
        if is_cut:
            current = bisect.bisect_right(common, position)
        groups.append(current)
    return groups


def _trimmed_extent(text: str, spans: Sequence[Span | None]) -> Span | None:
    """First and last non-whitespace characters (end exclusive) covered by a side's tokens."""
    covered = [span for span in spans if span is not None and span[0] < span[1]]
    if not covered:
        return None
    start = min(span[0] for span in covered)
    end = max(span[1] for span in covered)
    segment = text[start:end]
    if not segment.strip():
        return (start, start)
    return start + len(segment) - len(segment.lstrip()), end - (len(segment) - len(segment.rstrip()))


def _cuts(text: str, starts: list[tuple[int, bool] | None], spans: Sequence[Span | None]) -> set[int]:
    """
    Positions where a side can be cut: its cut tokens' starts (but the first, which opens the first group) and the
    end of the text it covers, moved past whitespace like the starts (a truncated side can be cut where it stops).
    """
    positions = [start[0] for start in starts if start is not None and start[1]]
    end = max(span[1] for span in spans if span is not None and span[0] < span[1])
    end += len(text[end:]) - len(text[end:].lstrip())
    return {position for position in positions[1:] + [end] if position < len(text)}


def _trailing_textless(cuts: list[tuple[int, bool] | None]) -> list[int]:
    """Indices of the tokens after the last token that covers text (all of them if none does)."""
    last = max((i for i, cut in enumerate(cuts) if cut is not None), default=-1)
    return list(range(last + 1, len(cuts)))


def align_by_offsets(
    text: str,
    student_spans: Sequence[Span | None],
    teacher_spans: Sequence[Span | None],
    pair_trailing_textless: bool = True,
) -> OffsetsAlignment:
    """
    Groups student and teacher tokens that cover the same characters of `text` (see the module docstring).

    Args:
        text (`str`):
            The completion text both tokenizations cover.
        student_spans (`Sequence[tuple[int, int] | None]`):
            Character span `[start, end)` in `text` of each student token, in order; None (or an empty span) for a
            token that covers no text (EOS, template tokens).
        teacher_spans (`Sequence[tuple[int, int] | None]`):
            Same for the teacher's tokens.
        pair_trailing_textless (`bool`, *optional*, defaults to `True`):
            Put the tokens that follow the last text of each side (typically EOS) into one last group when both sides
            have some. When False they are left out (group `-1`), like any other token that covers no text.

    Returns:
        [`OffsetsAlignment`]: one group index per token of each side; every group has at least one token on each
        side, group indices increase along the text, and a group's tokens are consecutive.
    """
    _check_spans("student", student_spans, len(text))
    _check_spans("teacher", teacher_spans, len(text))
    student_cuts = _cut_positions(text, student_spans)
    teacher_cuts = _cut_positions(text, teacher_spans)
    student_groups = [-1] * len(student_spans)
    teacher_groups = [-1] * len(teacher_spans)
    group_spans: list[Span] = []

    student_extent = _trimmed_extent(text, student_spans)
    teacher_extent = _trimmed_extent(text, teacher_spans)
    if student_extent is not None and teacher_extent is not None:
        student_set = _cuts(text, student_cuts, student_spans)
        teacher_set = _cuts(text, teacher_cuts, teacher_spans)
        common = sorted(student_set & teacher_set)
        boundaries = [0, *common, len(text)]
        student_groups = _assign_groups(student_cuts, common)
        teacher_groups = _assign_groups(teacher_cuts, common)
        group_spans = [(boundaries[g], boundaries[g + 1]) for g in range(len(common) + 1)]
        dropped = set(range(len(group_spans))) - (set(student_groups) & set(teacher_groups))
        # Text that only one side covers (a truncated completion) leaves the group at that end partial: drop it.
        if student_extent[0] != teacher_extent[0]:
            dropped.add(0)
        if student_extent[1] != teacher_extent[1]:
            covered_end = min(student_extent[1], teacher_extent[1])
            dropped.update(
                g for g, (start, end) in enumerate(group_spans) if start + len(text[start:end].rstrip()) > covered_end
            )
        if dropped:
            group_spans, renumber = _drop_groups(group_spans, dropped)
            student_groups = [renumber.get(g, -1) for g in student_groups]
            teacher_groups = [renumber.get(g, -1) for g in teacher_groups]

    student_trailing = _trailing_textless(student_cuts)
    teacher_trailing = _trailing_textless(teacher_cuts)
    if pair_trailing_textless and student_trailing and teacher_trailing:
        for groups, trailing in ((student_groups, student_trailing), (teacher_groups, teacher_trailing)):
            for index in trailing:
                groups[index] = len(group_spans)
        group_spans.append((len(text), len(text)))
    return OffsetsAlignment(student_groups, teacher_groups, group_spans)


def _drop_groups(group_spans: list[Span], dropped: set[int]) -> tuple[list[Span], dict[int, int]]:
    kept = [g for g in range(len(group_spans)) if g not in dropped]
    return [group_spans[g] for g in kept], {old: new for new, old in enumerate(kept)}


def _locate_completion(text: str, completion: str) -> tuple[int, int]:
    """Character range of `completion` in the rendered `text` (chat templates may strip its outer whitespace)."""
    for candidate in (completion, completion.strip()):
        if candidate:
            start = text.rfind(candidate)
            if start >= 0:
                return start, start + len(candidate)
    raise ValueError(
        f"The completion {completion[:60]!r} does not occur in the rendered text {text[-200:]!r}; offsets alignment "
        "needs the completion text verbatim in each side's rendering (check the chat template)."
    )


def completion_token_spans(
    text: str,
    offsets: Sequence[Sequence[int]],
    labels: Sequence[int],
    completion: str,
    ignore_index: int = -100,
) -> list[Span | None]:
    """
    Character spans, relative to `completion`, of the *predicted* answer tokens of one tokenized sample: the positions
    `t >= 1` with `labels[t] != ignore_index` (position 0 has no logits before it), in order — the rows `uld_loss`
    and [`offsets_uld_loss`] use.

    Args:
        text (`str`):
            The text that was tokenized (prompt and completion as rendered for this model).
        offsets (`Sequence[tuple[int, int]]`):
            The tokenizer's `offset_mapping` of `text`, one pair per entry of `labels` (slice it exactly as the input
            ids were sliced when truncating).
        labels (`Sequence[int]`):
            The sample's labels (`ignore_index` on the prompt).
        completion (`str`):
            The completion text; it must occur verbatim in `text` (the last occurrence is used).
        ignore_index (`int`, *optional*, defaults to `-100`):
            Label value of non-answer positions.

    Returns:
        `list[tuple[int, int] | None]`: each answer token's span clipped to the completion, None for tokens outside
        it (EOS, chat-template tokens).
    """
    if len(offsets) != len(labels):
        raise ValueError(
            f"offsets has {len(offsets)} entries but labels has {len(labels)}: pass the offset mapping of exactly the "
            "tokens of the sample (sliced like the input ids when truncating)."
        )
    begin, end = _locate_completion(text, completion)
    spans: list[Span | None] = []
    for position in range(1, len(labels)):
        if labels[position] == ignore_index:
            continue
        start, stop = (int(x) for x in offsets[position])
        start, stop = max(start, begin), min(stop, end)
        spans.append((start - begin, stop - begin) if start < stop else None)
    return spans


def align_completion_tokens(
    completion: str,
    student: tuple[str, Sequence[Sequence[int]], Sequence[int]],
    teacher: tuple[str, Sequence[Sequence[int]], Sequence[int]],
    pair_trailing_textless: bool = True,
    ignore_index: int = -100,
) -> dict[str, list[int]]:
    """
    The offsets-alignment columns of one prepared ULD sample.

    Args:
        completion (`str`):
            The completion text (the assistant message's content for conversational samples).
        student (`tuple[str, Sequence[tuple[int, int]], Sequence[int]]`):
            `(text, offset_mapping, labels)` of the student's tokenization (see [`completion_token_spans`]).
        teacher (`tuple[str, Sequence[tuple[int, int]], Sequence[int]]`):
            Same for the teacher.
        pair_trailing_textless (`bool`, *optional*, defaults to `True`):
            See [`align_by_offsets`].
        ignore_index (`int`, *optional*, defaults to `-100`):
            Label value of non-answer positions.

    Returns:
        `dict[str, list[int]]`: `{"uld_groups": [...], "teacher_uld_groups": [...]}`, one group index (or `-1`) per
        predicted answer token of each side, ready to store as dataset columns.
    """
    student_spans = completion_token_spans(*student, completion, ignore_index=ignore_index)
    teacher_spans = completion_token_spans(*teacher, completion, ignore_index=ignore_index)
    alignment = align_by_offsets(completion, student_spans, teacher_spans, pair_trailing_textless)
    return dict(zip(ALIGNMENT_COLUMNS, (alignment.student_groups, alignment.teacher_groups)))


def pad_alignment_groups(groups: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
    """Batches per-sample group columns into a `LongTensor` of shape `(batch_size, length)`, padded with `-1`."""
    length = max((len(g) for g in groups), default=0) if length is None else length
    return torch.tensor([list(g) + [-1] * (length - len(g)) for g in groups], dtype=torch.long).view(
        len(groups), length
    )


def _largest_group(*groups: torch.Tensor) -> int:
    return max((int(g.max()) for g in groups if g.numel()), default=-1)


def count_aligned_groups(student_groups: torch.Tensor, teacher_groups: torch.Tensor) -> torch.Tensor:
    """
    Number of groups per sample that both sides have tokens in: the number of terms [`offsets_uld_loss`] sums with
    `reduction="sum"` (the offsets counterpart of `count_aligned_tokens`).

    Returns:
        `torch.LongTensor` of shape `(batch_size,)`.
    """
    size = _largest_group(student_groups, teacher_groups) + 2
    present = []
    for groups in (student_groups, teacher_groups):
        one_hot = torch.zeros(groups.shape[0], size, dtype=torch.bool)
        one_hot.scatter_(1, (groups.cpu() + 1).clamp(min=0), True)
        present.append(one_hot[:, 1:])
    return (present[0] & present[1]).sum(dim=1)


def merge_sorted_probs(log_probs: torch.Tensor, group_index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """
    Sorted top-k log-probabilities of the product distribution of each group's rows (see the module docstring).

    Args:
        log_probs (`torch.Tensor` of shape `(rows, k)`):
            Log of each row's top-k probabilities, sorted in decreasing order (`-inf` for padding entries).
        group_index (`torch.LongTensor` of shape `(rows,)`):
            Group of each row, in `[0, num_groups)`; the rows of a group are merged in their order here.
        num_groups (`int`):
            Number of groups; every group must have at least one row.

    Returns:
        `torch.Tensor` of shape `(num_groups, k)`: the top-k log-probabilities of each group's product distribution,
        sorted in decreasing order. Differentiable with respect to `log_probs`.
    """
    width = log_probs.shape[-1]
    counts = torch.bincount(group_index, minlength=num_groups)
    if counts.numel() and int(counts.min()) < 1:
        raise ValueError("merge_sorted_probs: every group needs at least one row.")
    order = torch.argsort(group_index, stable=True)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(group_index)
    rank[order] = torch.arange(group_index.numel(), device=group_index.device) - starts[group_index[order]]

    first = rank == 0
    merged = torch.zeros(num_groups, width, dtype=log_probs.dtype, device=log_probs.device)
    merged = merged.index_put((group_index[first],), log_probs[first])
    for step in range(1, int(counts.max()) if counts.numel() else 1):
        rows = rank == step
        targets = group_index[rows]
        outer = merged[targets].unsqueeze(-1) + log_probs[rows].unsqueeze(-2)
        merged = merged.index_put((targets,), outer.flatten(1).topk(width, dim=-1).values)
    return merged


def _student_top_log_probs(logits: torch.Tensor, temperature: float, width: int) -> torch.Tensor:
    """Top-`width` log-probabilities of each row, sorted decreasing, `-inf`-padded beyond the vocabulary."""
    log_probs = torch.log_softmax(logits / temperature, dim=-1)
    top = log_probs.topk(min(width, log_probs.shape[-1]), dim=-1).values
    return torch.nn.functional.pad(top, (0, width - top.shape[-1]), value=float("-inf"))


def _check_common(top_k: int, student_temperature: float, teacher_temperature: float, reduction: str) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(
            f"offsets alignment needs an integer top_k >= 1 (the product of full distributions of a multi-token span "
            f"has vocabulary**tokens entries), got {top_k!r}. Set `uld_top_k` (e.g. 100)."
        )
    for name, value in (("student_temperature", student_temperature), ("teacher_temperature", teacher_temperature)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")


def _check_groups(name: str, groups: torch.Tensor, batch_size: int) -> None:
    if not isinstance(groups, torch.Tensor) or groups.dim() != 2 or groups.is_floating_point():
        got = f"{groups.dtype} of shape {tuple(groups.shape)}" if isinstance(groups, torch.Tensor) else type(groups)
        raise ValueError(f"{name} must be an integer tensor of shape (batch_size, num_answer_tokens), got {got}.")
    if groups.shape[0] != batch_size:
        raise ValueError(f"{name} has {groups.shape[0]} rows but the batch has {batch_size} samples.")


def offsets_uld_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SortedTeacherProbs,
    student_labels: torch.Tensor,
    teacher_labels: torch.Tensor | None,
    student_groups: torch.Tensor,
    teacher_groups: torch.Tensor,
    *,
    top_k: int,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "sample",
) -> torch.Tensor:
    """
    ULD term with offsets alignment: one term per group of tokens covering the same completion text, computed on the
    merged (product, top-k) distributions of the group's tokens on each side (see the module docstring).

    Args:
        student_logits (`torch.Tensor` of shape `(batch_size, student_seq_len, student_vocab_size)`):
            Student logits, any floating dtype (computed in float32, float64 for float64 logits).
        teacher_logits (`torch.Tensor` of shape `(batch_size, teacher_seq_len, teacher_vocab_size)` or [`SortedTeacherProbs`]):
            Teacher logits, or the teacher side precomputed by `sort_teacher_probs` / a teacher cache (then
            `teacher_labels` must be None and `teacher_temperature` is ignored).
        student_labels (`torch.LongTensor` of shape `(batch_size, student_seq_len)`):
            Unshifted labels, `ignore_index` outside the answer (logits at `t` predict the label at `t + 1`).
        teacher_labels (`torch.LongTensor` of shape `(batch_size, teacher_seq_len)`, *optional*):
            Same for the teacher; None with [`SortedTeacherProbs`].
        student_groups (`torch.LongTensor` of shape `(batch_size, max_student_answer_tokens)`):
            Group of each predicted student answer token (the `uld_groups` column batched with
            [`pad_alignment_groups`]); `-1` for tokens that are not aligned and for padding.
        teacher_groups (`torch.LongTensor` of shape `(batch_size, max_teacher_answer_tokens)`):
            Same for the teacher (`teacher_uld_groups`).
        top_k (`int`):
            Number of sorted probabilities kept per token and per merged group.
        student_temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of the student.
        teacher_temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of the teacher (live logits only).
        ignore_index (`int`, *optional*, defaults to `-100`):
            Label value of non-answer positions.
        reduction (`str`, *optional*, defaults to `"sample"`):
            `"sample"`: mean over each sample's groups, then over the samples that have at least one. `"sum"`: sum
            over all groups (divide by [`count_aligned_groups`] totals to normalise).

    Returns:
        `torch.Tensor`: scalar (0 with a gradient path to `student_logits` when no group is aligned).
    """
    _check_common(top_k, student_temperature, teacher_temperature, reduction)
    batch_size = student_logits.shape[0]
    _check_groups("student_groups", student_groups, batch_size)
    _check_groups("teacher_groups", teacher_groups, batch_size)
    if isinstance(teacher_logits, SortedTeacherProbs):
        if teacher_labels is not None:
            raise ValueError("teacher_labels must be None when the teacher side is a SortedTeacherProbs.")
        teacher = teacher_logits
    else:
        teacher = sort_teacher_probs(
            teacher_logits, teacher_labels, temperature=teacher_temperature, top_k=top_k, ignore_index=ignore_index
        )
    if teacher.values.shape[0] != batch_size:
        raise ValueError(f"Student and teacher batch sizes differ ({batch_size} vs {teacher.values.shape[0]}).")
    if tuple(student_labels.shape) != tuple(student_logits.shape[:2]):
        raise ValueError(
            f"student_labels must have shape {tuple(student_logits.shape[:2])} to match student_logits, got "
            f"{tuple(student_labels.shape)}."
        )
    dtype = torch.float64 if torch.float64 in (student_logits.dtype, teacher.values.dtype) else torch.float32
    width = top_k
    if teacher.values.shape[-1] < width and bool((teacher.remaining_mass > 0).any()):
        # The teacher's values beyond its stored head are unknown, so nothing past it can be compared.
        width = teacher.values.shape[-1]

    predicts_answer = student_labels[:, 1:] != ignore_index
    student_samples, student_positions = predicts_answer.nonzero(as_tuple=True)
    student_slots = (predicts_answer.cumsum(dim=1) - 1)[student_samples, student_positions]
    slots = torch.arange(teacher.values.shape[1], device=teacher.values.device)
    teacher_samples, teacher_slots = (slots[None, :] < teacher.num_tokens[:, None].to(slots.device)).nonzero(
        as_tuple=True
    )
    stride = _largest_group(student_groups, teacher_groups) + 2
    student_keys = _keys(student_groups, student_samples, student_slots, predicts_answer.sum(dim=1), stride, "student")
    teacher_keys = _keys(teacher_groups, teacher_samples, teacher_slots, teacher.num_tokens, stride, "teacher")
    common = torch.tensor(
        sorted(set(student_keys[student_keys >= 0].tolist()) & set(teacher_keys[teacher_keys >= 0].tolist())),
        dtype=torch.long,
    )
    if common.numel() == 0:
        return student_logits.sum() * 0.0

    keep_student = torch.isin(student_keys, common).to(student_samples.device)
    rows = student_logits[student_samples[keep_student], student_positions[keep_student]].to(dtype)
    if not torch.isfinite(rows.detach()).all():
        raise ValueError("student_logits contain NaN or inf at answer positions; ULD needs finite logits.")
    chunks = [
        checkpoint(_student_top_log_probs, chunk, float(student_temperature), width, use_reentrant=False)
        for chunk in rows.split(_CHUNK_SIZE)
    ]
    student_log_probs = torch.cat(chunks)
    keep_teacher = torch.isin(teacher_keys, common).to(teacher_samples.device)
    teacher_values = teacher.values[teacher_samples[keep_teacher], teacher_slots[keep_teacher]].to(dtype)[:, :width]
    teacher_values = torch.nn.functional.pad(teacher_values, (0, width - teacher_values.shape[-1]))
    teacher_log_probs = teacher_values.log().to(student_log_probs.device)

    group_of = {key: index for index, key in enumerate(common.tolist())}
    student_index = torch.tensor([group_of[k] for k in student_keys[keep_student].tolist()], dtype=torch.long)
    teacher_index = torch.tensor([group_of[k] for k in teacher_keys[keep_teacher].tolist()], dtype=torch.long)
    device = student_log_probs.device
    student_merged = merge_sorted_probs(student_log_probs, student_index.to(device), common.numel()).exp()
    teacher_merged = merge_sorted_probs(teacher_log_probs, teacher_index.to(device), common.numel()).exp()
    student_tail = (1.0 - student_merged.sum(dim=-1)).clamp(min=0.0)
    teacher_tail = (1.0 - teacher_merged.sum(dim=-1)).clamp(min=0.0)
    per_group = (student_merged - teacher_merged).abs().sum(dim=-1) + (student_tail - teacher_tail).abs()

    if reduction == "sum":
        return per_group.sum()
    group_samples = (common // stride).to(device)
    counts = torch.bincount(group_samples, minlength=batch_size).to(per_group.dtype)
    per_sample = torch.zeros(batch_size, dtype=per_group.dtype, device=device).index_add(0, group_samples, per_group)
    has_groups = counts > 0
    return (per_sample[has_groups] / counts[has_groups]).mean()


def _keys(
    groups: torch.Tensor, samples: torch.Tensor, slots: torch.Tensor, counts: torch.Tensor, stride: int, side: str
) -> torch.Tensor:
    """One key per answer token, `sample * stride + group`, or -1 for tokens that are not aligned."""
    groups, samples, slots, counts = groups.cpu(), samples.cpu(), slots.cpu(), counts.cpu()
    if counts.numel() and int(counts.max()) > groups.shape[1]:
        raise ValueError(
            f"{side}_groups has {groups.shape[1]} entries per sample but a sample has {int(counts.max())} answer "
            "tokens; the group columns need one entry per predicted answer token (labels[1:] != ignore_index)."
        )
    beyond = torch.arange(groups.shape[1])[None, :] >= counts[:, None]
    if bool((groups[beyond] >= 0).any()):
        raise ValueError(
            f"{side}_groups assigns groups past the last answer token of a sample: the group columns do not match "
            "the labels (they need one entry per predicted answer token, padded with -1)."
        )
    group = groups[samples, slots]
    return torch.where(group >= 0, samples * stride + group, torch.full_like(group, -1))
