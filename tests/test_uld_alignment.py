"""Offsets alignment for ULD: groups on real tokenizers, the product merge, and the loss against references."""

import math

import pytest
import torch

from eurobert_hf.trainers.uld_alignment import (
    align_by_offsets,
    align_completion_tokens,
    completion_token_spans,
    count_aligned_groups,
    merge_sorted_probs,
    offsets_uld_loss,
    pad_alignment_groups,
)
from eurobert_hf.trainers.uld_losses import sort_teacher_probs, uld_loss
from tests.tokenizer_assets import gpt2_tokenizer, llama3_tokenizer, mistral_tokenizer, wordpiece_tokenizer

TEXTS = [
    "Grüße aus Köln! Die Straße ist schön, Übermäßig große Äpfel.",
    "C'est déjà l'été : où êtes-vous, garçon ? Ça coûte 5 €.",
    "你好，世界！机器学习很有趣。東京は日本の首都です。",
    "Привет, как дела? Москва — столица России.",
    "Emoji time 🤗👍🏽🇫🇷 and a family 👨‍👩‍👧 ok.",
    "Mixed: naïve café, 北京, Ελληνικά,  two  spaces\nand a new line.\n",
]
TOKENIZERS = {
    "llama3": llama3_tokenizer,
    "gpt2": gpt2_tokenizer,
    "mistral": mistral_tokenizer,
    "wordpiece": wordpiece_tokenizer,
}
PAIRS = [("llama3", "gpt2"), ("llama3", "mistral"), ("gpt2", "mistral"), ("llama3", "wordpiece")]


def _encode(tokenizer, text):
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoding["input_ids"], [tuple(span) for span in encoding["offset_mapping"]]


def _squash(text):
    return "".join(text.split())


def _token_text(tokenizer, ids):
    """What the tokens spell, from the vocabulary alone (no offsets): decoding for BPE, pieces for WordPiece."""
    if tokenizer is wordpiece_tokenizer():
        pieces = tokenizer.convert_ids_to_tokens(ids)
        if tokenizer.unk_token in pieces:
            return None
        return "".join(piece.removeprefix("##") for piece in pieces)
    return tokenizer.decode(ids)


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(pair) for pair in PAIRS])
def test_groups_cover_completion_with_identical_text(pair):
    student, teacher = (TOKENIZERS[name]() for name in pair)
    for text in TEXTS:
        student_ids, student_spans = _encode(student, text)
        teacher_ids, teacher_spans = _encode(teacher, text)
        alignment = align_by_offsets(text, student_spans, teacher_spans)

        # Every token is aligned, group indices are consecutive runs, and the groups tile the completion.
        for groups in (alignment.student_groups, alignment.teacher_groups):
            assert min(groups) == 0 and max(groups) == alignment.num_groups - 1
            assert groups == sorted(groups) and set(groups) == set(range(alignment.num_groups))
        spans = alignment.group_spans
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(left[1] == right[0] for left, right in zip(spans, spans[1:]))

        # Independent check from the tokens' own strings: both sides spell the group's text (whitespace aside).
        checked = 0
        for group, (start, end) in enumerate(spans):
            expected = _squash(text[start:end])
            for tokenizer, ids, groups in (
                (student, student_ids, alignment.student_groups),
                (teacher, teacher_ids, alignment.teacher_groups),
            ):
                spelled = _token_text(tokenizer, [i for i, g in zip(ids, groups) if g == group])
                if spelled is not None:
                    assert _squash(spelled) == expected, (pair, text, group)
                    checked += 1
        assert checked >= alignment.num_groups


def test_positional_alignment_drifts_where_offsets_alignment_matches():
    student, teacher = llama3_tokenizer(), gpt2_tokenizer()
    text = "Grüße aus Köln, déjà vu 🤗 Привет мир"
    student_ids, student_spans = _encode(student, text)
    teacher_ids, teacher_spans = _encode(teacher, text)
    positional = [(student.decode([s]), teacher.decode([t])) for s, t in zip(student_ids, teacher_ids, strict=False)]
    assert positional[0] == ("Gr", "Gr")
    # "ü" + "ße" (Llama-3) vs "ü" + "ß" + "e" (GPT-2): from the third pair on, positional ULD compares other text.
    assert positional[2] == ("ße", "ß") and positional[3] == (" aus", "e")
    mismatched = sum(a.strip() != b.strip() for a, b in positional)
    assert mismatched >= len(positional) // 2

    alignment = align_by_offsets(text, student_spans, teacher_spans)
    for group in range(alignment.num_groups):
        s = student.decode([i for i, g in zip(student_ids, alignment.student_groups) if g == group])
        t = teacher.decode([i for i, g in zip(teacher_ids, alignment.teacher_groups) if g == group])
        assert s == t
    assert alignment.num_groups < min(len(student_ids), len(teacher_ids))


def test_sentencepiece_space_conventions_and_whitespace_tokens():
    text = "Hello  world"
    # GPT-2 style (space inside the next token) vs a side whose offsets exclude the space and a whitespace token.
    gpt2_like = [(0, 5), (5, 6), (6, 12)]
    spm_like = [(0, 5), (5, 7), (7, 12)]
    wordpiece_like = [(0, 5), (7, 12)]
    a = align_by_offsets(text, gpt2_like, spm_like)
    assert a.student_groups == [0, 1, 2] and a.teacher_groups == [0, 1, 2]
    b = align_by_offsets(text, gpt2_like, wordpiece_like)
    assert b.student_groups == [0, 0, 1] and b.teacher_groups == [0, 1]
    assert b.group_spans == [(0, 7), (7, 12)]


def test_textless_tokens_and_truncation():
    text = "abc def"
    # Trailing EOS on both sides pairs up; a textless token in the middle is left out.
    a = align_by_offsets(text, [(0, 3), None, (3, 7), None], [(0, 2), (2, 3), (4, 7), (7, 7)])
    assert a.student_groups == [0, -1, 1, 2] and a.teacher_groups == [0, 0, 1, 2]
    assert a.group_spans == [(0, 4), (4, 7), (7, 7)]
    unpaired = align_by_offsets(text, [(0, 3), (3, 7), None], [(0, 3), (3, 7)])
    assert unpaired.student_groups == [0, 1, -1]
    no_pairing = align_by_offsets(text, [(0, 3), None], [(0, 3), None], pair_trailing_textless=False)
    assert no_pairing.student_groups == [0, -1] and no_pairing.teacher_groups == [0, -1]
    # The teacher's completion was truncated inside "def": that partial group is dropped.
    truncated = align_by_offsets(text, [(0, 3), (3, 7)], [(0, 3), (3, 5)])
    assert truncated.student_groups == [0, -1] and truncated.teacher_groups == [0, -1]
    # Truncated exactly at a shared cut: everything the teacher covers stays aligned.
    at_cut = align_by_offsets(text, [(0, 3), (3, 5), (5, 7)], [(0, 3), (3, 5)])
    assert at_cut.student_groups == [0, 1, -1] and at_cut.teacher_groups == [0, 1]


def test_completion_token_spans_on_rendered_samples():
    completion = "Köln 🤗"
    prompt = "Frage: Wo?\nAntwort: "
    results = []
    for tokenizer in (llama3_tokenizer(), mistral_tokenizer()):
        text = prompt + completion + tokenizer.eos_token
        encoding = tokenizer(text, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        prompt_ids = tokenizer(prompt)["input_ids"]
        # The completion starts where the two tokenizations diverge (" Kö" merges the prompt's trailing space).
        prompt_length = next(i for i, (a, b) in enumerate(zip(prompt_ids, ids)) if a != b)
        labels = [-100] * prompt_length + ids[prompt_length:]
        spans = completion_token_spans(text, offsets, labels, completion)
        assert len(spans) == len(ids) - prompt_length
        assert spans[-1] is None  # the EOS token covers no completion text
        covered = {i for s, e in filter(None, spans) for i in range(s, e)}
        assert {i for i in covered if not completion[i].isspace()} == {i for i, c in enumerate(completion) if c != " "}
        assert spans[0] == (0, 2)  # " Kö" clipped to the completion
        results.append((text, offsets, labels))
    columns = align_completion_tokens(completion, results[0], results[1])
    assert set(columns) == {"uld_groups", "teacher_uld_groups"}
    assert columns["uld_groups"][-1] == columns["teacher_uld_groups"][-1] == max(columns["uld_groups"])
    with pytest.raises(ValueError, match="does not occur"):
        completion_token_spans("something else", [(0, 1)] * 2, [-100, 5], completion)


def test_merge_hand_worked_product():
    a = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    b = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    # Outer product: .30 .15 .05 / .18 .09 .03 / .12 .06 .02 -> sorted top-3: .30 .18 .15, remaining mass .37.
    merged = merge_sorted_probs(torch.stack([a, b]).log(), torch.tensor([0, 0]), 1).exp()
    torch.testing.assert_close(merged, torch.tensor([[0.30, 0.18, 0.15]], dtype=torch.float64))
    assert math.isclose(1 - merged.sum().item(), 0.37)
    # Three factors, and groups of different sizes in one call (a singleton group is returned unchanged).
    c = torch.tensor([0.9, 0.1, 0.0], dtype=torch.float64)
    merged = merge_sorted_probs(torch.stack([a, c, b, a]).log(), torch.tensor([0, 1, 0, 0]), 2).exp()
    full = torch.einsum("i,j,k->ijk", a, b, a).flatten().sort(descending=True).values[:3]
    torch.testing.assert_close(merged, torch.stack([full, c]))


def test_offsets_loss_hand_worked():
    # Student: one group of two tokens with distributions a then b (vocab 3). Teacher: one token (vocab 5).
    a, b = [0.5, 0.3, 0.2], [0.6, 0.3, 0.1]
    c = [0.3, 0.2, 0.2, 0.15, 0.15]
    student_logits = torch.tensor([[a, b, [1 / 3] * 3]], dtype=torch.float64).log()
    teacher_logits = torch.tensor([[c, [0.2] * 5]], dtype=torch.float64).log()
    student_labels = torch.tensor([[-100, 1, 2]])
    teacher_labels = torch.tensor([[-100, 4]])
    loss = offsets_uld_loss(
        student_logits,
        teacher_logits,
        student_labels,
        teacher_labels,
        torch.tensor([[0, 0]]),
        torch.tensor([[0]]),
        top_k=3,
    )
    # Merged student top-3 (.30 .18 .15, tail .37) vs teacher top-3 (.3 .2 .2, tail .3): 0 + .02 + .05 + .07.
    assert math.isclose(loss.item(), 0.14, abs_tol=1e-12)


def _random_case(seed, lengths_s, lengths_t, vocab_s, vocab_t, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    batch = len(lengths_s)
    seq_s, seq_t = max(lengths_s) + 3, max(lengths_t) + 2
    student_logits = torch.randn(batch, seq_s, vocab_s, generator=generator, dtype=dtype) * 2
    teacher_logits = torch.randn(batch, seq_t, vocab_t, generator=generator, dtype=dtype) * 2
    student_labels = torch.full((batch, seq_s), -100)
    teacher_labels = torch.full((batch, seq_t), -100)
    for i, (ls, lt) in enumerate(zip(lengths_s, lengths_t)):
        student_labels[i, 2 : 2 + ls] = torch.randint(vocab_s, (ls,), generator=generator)
        teacher_labels[i, 1 : 1 + lt] = torch.randint(vocab_t, (lt,), generator=generator)
    return student_logits, teacher_logits, student_labels, teacher_labels


def test_singleton_groups_equal_positional_uld_with_top_k():
    student_logits, teacher_logits, student_labels, teacher_labels = _random_case(0, [4, 2], [4, 2], 7, 11)
    groups = pad_alignment_groups([[0, 1, 2, 3], [0, 1]])
    for top_k, temperatures in ((3, (1.0, 1.0)), (11, (2.0, 0.5)), (50, (1.0, 1.0))):
        kwargs = {"student_temperature": temperatures[0], "teacher_temperature": temperatures[1], "top_k": top_k}
        for reduction in ("sample", "sum"):
            expected = uld_loss(
                student_logits, teacher_logits, student_labels, teacher_labels, reduction=reduction, **kwargs
            )
            got = offsets_uld_loss(
                student_logits,
                teacher_logits,
                student_labels,
                teacher_labels,
                groups,
                groups,
                reduction=reduction,
                **kwargs,
            )
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_identical_tokenization_and_distributions_give_zero():
    logits, _, labels, _ = _random_case(1, [5, 3], [5, 3], 9, 9)
    groups = pad_alignment_groups([[0, 0, 1, 2, 2], [0, 1, 1]])
    loss = offsets_uld_loss(logits, logits.clone(), labels, labels, groups, groups, top_k=4)
    assert loss.item() < 1e-12


def test_multi_token_groups_against_float64_reference():
    student_logits, teacher_logits, student_labels, teacher_labels = _random_case(2, [5, 3], [3, 4], 6, 8)
    student_groups = pad_alignment_groups([[0, 0, 1, 2, 2], [0, -1, 1]])
    teacher_groups = pad_alignment_groups([[0, 1, 2], [0, 0, 1, 1]])
    top_k = 4

    def side(logits, labels, groups, b, group):
        positions = [t - 1 for t in range(1, labels.shape[1]) if labels[b, t] != -100]
        members = [p for p, g in zip(positions, groups[b].tolist()) if g == group]
        dist = torch.ones(1, dtype=torch.float64)
        for p in members:
            dist = torch.outer(dist, logits[b, p].softmax(-1)).flatten()
        values = dist.sort(descending=True).values[:top_k]
        return torch.nn.functional.pad(values, (0, top_k - values.numel())), 1 - values.sum()

    per_sample = []
    for b, groups_b in enumerate([[0, 1, 2], [0, 1]]):
        terms = []
        for group in groups_b:
            s, rs = side(student_logits, student_labels, student_groups, b, group)
            t, rt = side(teacher_logits, teacher_labels, teacher_groups, b, group)
            terms.append((s - t).abs().sum() + (rs - rt).abs())
        per_sample.append(torch.stack(terms))
    args = (student_logits, teacher_logits, student_labels, teacher_labels, student_groups, teacher_groups)
    sample = offsets_uld_loss(*args, top_k=top_k)
    total = offsets_uld_loss(*args, top_k=top_k, reduction="sum")
    torch.testing.assert_close(sample, torch.stack([p.mean() for p in per_sample]).mean())
    torch.testing.assert_close(total, torch.cat(per_sample).sum())
    assert count_aligned_groups(student_groups, teacher_groups).tolist() == [3, 2]

    # The teacher side may come precomputed (a teacher cache): same value.
    cached = sort_teacher_probs(teacher_logits, teacher_labels, top_k=top_k)
    torch.testing.assert_close(
        offsets_uld_loss(student_logits, cached, student_labels, None, student_groups, teacher_groups, top_k=top_k),
        sample,
    )


@pytest.mark.parametrize("top_k", [3, 50], ids=["k<vocab", "k>vocab"])
def test_gradcheck_merged_student_path(top_k):
    student_logits, teacher_logits, student_labels, teacher_labels = _random_case(3, [4, 3], [3, 2], 4, 5)
    student_groups = pad_alignment_groups([[0, 0, 1, 1], [0, 0, 0]])
    teacher_groups = pad_alignment_groups([[0, 1, 1], [0, 0]])
    student_logits.requires_grad_(True)

    def loss(logits):
        return offsets_uld_loss(
            logits,
            teacher_logits,
            student_labels,
            teacher_labels,
            student_groups,
            teacher_groups,
            top_k=top_k,
            student_temperature=1.5,
        )

    assert torch.autograd.gradcheck(loss, (student_logits,), eps=1e-6, atol=1e-6)
    loss(student_logits).backward()
    assert torch.isfinite(student_logits.grad).all() and student_logits.grad.abs().sum() > 0


def test_bf16_logits_and_no_aligned_group():
    student_logits, teacher_logits, student_labels, teacher_labels = _random_case(4, [3], [3], 6, 6, torch.float32)
    groups = pad_alignment_groups([[0, 1, 2]])
    full = offsets_uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, groups, groups, top_k=4)
    half = offsets_uld_loss(
        student_logits.bfloat16(), teacher_logits.bfloat16(), student_labels, teacher_labels, groups, groups, top_k=4
    )
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert math.isclose(half.item(), full.item(), abs_tol=0.05)
    logits = student_logits.clone().requires_grad_(True)
    none = offsets_uld_loss(
        logits, teacher_logits, student_labels, teacher_labels, torch.full((1, 3), -1), groups, top_k=4
    )
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None and logits.grad.abs().sum() == 0


def test_bad_inputs():
    student_logits, teacher_logits, student_labels, teacher_labels = _random_case(5, [3], [3], 6, 6)
    groups = pad_alignment_groups([[0, 1, 2]])
    args = (student_logits, teacher_logits, student_labels, teacher_labels)
    with pytest.raises(ValueError, match="top_k"):
        offsets_uld_loss(*args, groups, groups, top_k=None)
    with pytest.raises(ValueError, match="one entry per predicted answer token"):
        offsets_uld_loss(*args, groups[:, :2], groups, top_k=3)
    with pytest.raises(ValueError, match="past the last answer token"):
        offsets_uld_loss(*args, pad_alignment_groups([[0, 1, 2, 3]]), groups, top_k=3)
    with pytest.raises(ValueError, match="reduction"):
        offsets_uld_loss(*args, groups, groups, top_k=3, reduction="mean")
    with pytest.raises(ValueError, match="outside the completion"):
        align_by_offsets("abc", [(0, 4)], [(0, 3)])
    with pytest.raises(ValueError, match="pair of ints"):
        align_by_offsets("abc", [(0, 1, 2)], [(0, 3)])


def test_real_tokenizer_fixtures():
    assert gpt2_tokenizer()("Hello world")["input_ids"] == [15496, 995]
    llama = llama3_tokenizer()
    assert (llama.bos_token_id, llama.eos_token_id, llama.pad_token_id, llama.mask_token_id) == (
        128000,
        128001,
        128001,
        128002,
    )
    mistral = mistral_tokenizer()
    assert len(mistral) == 32000 and mistral.convert_ids_to_tokens(mistral("Hello")["input_ids"]) == ["<s>", "▁Hello"]
    assert wordpiece_tokenizer().tokenize("Grüße aus Köln") == ["Gr", "##ü", "##ße", "aus", "Kö", "##ln"]


def _prompt_completion_sample(tokenizer, prompt_text, full_text):
    """Ids, offsets and labels of `full_text`, the completion starting where the prompt's tokenization diverges."""
    encoding = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = encoding["input_ids"]
    start = next(i for i, (a, b) in enumerate(zip(prompt_ids + [None], ids)) if a != b)
    return ids, encoding["offset_mapping"], [-100] * start + ids[start:]


def test_alignment_columns_with_a_chat_template_teacher():
    completion = "Die Hauptstadt ist Berlin — schön! 🤗"
    student, teacher = gpt2_tokenizer(), llama3_tokenizer()
    student_prompt = "Frage: Was ist die Hauptstadt?\nAntwort: "
    student_text = student_prompt + completion + student.eos_token
    teacher_prompt = (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWas ist die Hauptstadt?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    teacher_text = teacher_prompt + completion + "<|eot_id|>"
    student_ids, student_offsets, student_labels = _prompt_completion_sample(student, student_prompt, student_text)
    teacher_ids, teacher_offsets, teacher_labels = _prompt_completion_sample(teacher, teacher_prompt, teacher_text)

    columns = align_completion_tokens(
        completion,
        (student_text, student_offsets, student_labels),
        (teacher_text, teacher_offsets, teacher_labels),
    )
    student_groups, teacher_groups = columns["uld_groups"], columns["teacher_uld_groups"]
    student_answer = [i for i, label in zip(student_ids[1:], student_labels[1:]) if label != -100]
    teacher_answer = [i for i, label in zip(teacher_ids[1:], teacher_labels[1:]) if label != -100]
    assert len(student_groups) == len(student_answer) and len(teacher_groups) == len(teacher_answer)
    assert min(student_groups) == min(teacher_groups) == 0 and max(student_groups) == max(teacher_groups)
    # The end-of-answer tokens (GPT-2's <|endoftext|>, Llama-3's <|eot_id|>) form the last group together.
    last = max(student_groups)
    assert [student.decode([i]) for i, g in zip(student_answer, student_groups) if g == last] == ["<|endoftext|>"]
    assert [teacher.decode([i]) for i, g in zip(teacher_answer, teacher_groups) if g == last] == ["<|eot_id|>"]
    for group in range(last):
        spelled_student = student.decode([i for i, g in zip(student_answer, student_groups) if g == group])
        spelled_teacher = teacher.decode([i for i, g in zip(teacher_answer, teacher_groups) if g == group])
        assert _squash(spelled_student) == _squash(spelled_teacher) != ""
    assert (
        "".join(
            student.decode([i for i, g in zip(student_answer, student_groups) if g == group]) for group in range(last)
        ).strip()
        == completion
    )
