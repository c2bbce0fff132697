"""Graph capture: `torch.export` and `torch.compile(fullgraph=True)` with dynamic batch and sequence length, for every
head, with padded and unpadded attention masks. Eager (padding-free) outputs are the reference; the captured graphs
take the mask-based padded path and must agree with them (<= 1e-5, float32) on shapes and masks they were not traced
with, including left padding."""

import pytest
import torch

from eurobert_hf import (
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
    EuroBertModel,
)
from eurobert_hf.modeling.modeling_eurobert import is_capturing_graph

from .eurobert_fixtures import PAD_ID, VOCAB_SIZE, tiny_config

# name -> (class, config overrides, output fields compared)
HEADS = {
    "base": (EuroBertModel, {}, ("last_hidden_state",)),
    "masked-lm": (EuroBertForMaskedLM, {"mlp_bias": True}, ("logits",)),
    "sequence-bos": (EuroBertForSequenceClassification, {"classifier_pooling": "bos", "num_labels": 3}, ("logits",)),
    "sequence-mean": (EuroBertForSequenceClassification, {"classifier_pooling": "mean", "num_labels": 3}, ("logits",)),
    "sequence-late": (EuroBertForSequenceClassification, {"classifier_pooling": "late", "num_labels": 3}, ("logits",)),
    "token": (EuroBertForTokenClassification, {"num_labels": 5}, ("logits",)),
    "question-answering": (EuroBertForQuestionAnswering, {}, ("start_logits", "end_logits")),
    "multiple-choice": (EuroBertForMultipleChoice, {"classifier_pooling": "mean"}, ("logits",)),
}
TOLERANCE = 1e-5


def make_batch(
    lengths: list[int], seq_len: int, left_padded: tuple[int, ...] = (), num_choices: int | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` with the given real lengths; rows in `left_padded` are padded on the left.
    For multiple choice, each of the `len(lengths)` examples has `num_choices` choices with those lengths shifted."""
    rows = lengths if num_choices is None else [max(1, n - c) for n in lengths for c in range(num_choices)]
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB_SIZE, (len(rows), seq_len), generator=generator)
    positions = torch.arange(seq_len)
    attention_mask = torch.stack(
        [(positions >= seq_len - n) if i in left_padded else (positions < n) for i, n in enumerate(rows)]
    ).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, PAD_ID)
    if num_choices is not None:
        input_ids = input_ids.view(len(lengths), num_choices, seq_len)
        attention_mask = attention_mask.view(len(lengths), num_choices, seq_len)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def build(head: str) -> tuple[torch.nn.Module, tuple[str, ...], int | None]:
    cls, overrides, fields = HEADS[head]
    torch.manual_seed(0)
    model = cls(tiny_config(**overrides)).eval()
    return model, fields, (2 if cls is EuroBertForMultipleChoice else None)


def dynamic_shapes(num_choices: int | None) -> dict:
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=64)
    axes = {0: batch, 1: sequence} if num_choices is None else {0: batch, 1: torch.export.Dim("choices"), 2: sequence}
    return {"input_ids": axes, "attention_mask": axes}


def evaluation_batches(num_choices: int | None) -> list[dict[str, torch.Tensor]]:
    """Shapes and masks the graphs were not traced with: mixed left/right padding, no padding, a single row."""
    choices = None if num_choices is None else num_choices + 2
    return [
        make_batch([3, 11, 6], 11, left_padded=(0,), num_choices=choices, seed=1),
        make_batch([5, 5, 5, 5, 5], 5, num_choices=choices, seed=2),
        make_batch([4], 7, left_padded=(0,), num_choices=choices, seed=3),
    ]


def assert_matches_eager(model, run, fields, batches) -> None:
    with torch.no_grad():
        for batch in batches:
            expected, captured = model(**batch), run(**batch)
            for field in fields:
                torch.testing.assert_close(captured[field], expected[field], atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize("head", list(HEADS))
def test_torch_export_with_dynamic_shapes_matches_eager(head):
    model, fields, num_choices = build(head)
    example = make_batch([8, 5, 3], 8, num_choices=num_choices)
    program = torch.export.export(model, (), example, dynamic_shapes=dynamic_shapes(num_choices))
    assert_matches_eager(model, program.module(), fields, evaluation_batches(num_choices))


def test_exported_program_honours_the_mask():
    """The graph reads the mask (a changed mask changes the outputs) rather than the example's padding."""
    model, fields, _ = build("sequence-mean")
    example = make_batch([8, 5, 3], 8)
    program = torch.export.export(model, (), example, dynamic_shapes=dynamic_shapes(None)).module()
    batch = make_batch([9, 9], 9, seed=4)
    shorter = {**batch, "attention_mask": batch["attention_mask"].clone()}
    shorter["attention_mask"][1, 6:] = 0
    with torch.no_grad():
        full, cut = program(**batch).logits, program(**shorter).logits
        torch.testing.assert_close(cut, model(**shorter).logits, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(full[0], cut[0], atol=TOLERANCE, rtol=TOLERANCE)
    assert (full[1] - cut[1]).abs().max() > 1e-3


def test_capture_refuses_packed_cu_seq_lens():
    model, _, _ = build("base")
    inputs = {"input_ids": torch.randint(3, VOCAB_SIZE, (1, 6)), "cu_seq_lens_q": torch.tensor([0, 2, 6])}
    with pytest.raises(Exception, match="cu_seq_lens_q"):
        torch.export.export(model, (), inputs)


def test_eager_calls_are_not_capturing():
    assert not is_capturing_graph()


def _compile_and_check(head: str, backend: str) -> None:
    model, fields, num_choices = build(head)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=backend)
    batches = evaluation_batches(num_choices)
    assert_matches_eager(model, compiled, fields, batches[:1])
    # One graph serves every later shape and mask: any recompilation (or graph break) fails here.
    with torch.compiler.set_stance("fail_on_recompile"):
        assert_matches_eager(model, compiled, fields, batches[1:2])


@pytest.mark.parametrize("head", list(HEADS))
def test_compile_fullgraph_dynamic_matches_eager(head):
    """Dynamo captures the whole forward in one graph (the backend only replays it, to keep this fast)."""
    _compile_and_check(head, backend="eager")


@pytest.mark.slow  # inductor code generation: over a minute on 2 shared cores
@pytest.mark.parametrize("head", ["masked-lm"])
def test_compile_fullgraph_inductor_matches_eager(head):
    _compile_and_check(head, backend="inductor")


def test_eager_padded_path_zeroes_padding_like_the_packed_path():
    """`output_attentions=True` keeps the padded path in eager mode: its outputs, padding included, equal the packed
    path's (zeros at padding), so the capture path and eager agree on every position."""
    torch.manual_seed(0)
    model = EuroBertModel(tiny_config(attn_implementation="eager")).eval()
    batch = make_batch([6, 3, 9], 9, left_padded=(1,))
    with torch.no_grad():
        packed = model(**batch, output_hidden_states=True)
        padded = model(**batch, output_hidden_states=True, output_attentions=True)
    padding = batch["attention_mask"] == 0
    assert padded.last_hidden_state[padding].abs().max() == 0
    torch.testing.assert_close(padded.last_hidden_state, packed.last_hidden_state, atol=TOLERANCE, rtol=TOLERANCE)
    for a, b in zip(padded.hidden_states, packed.hidden_states):
        torch.testing.assert_close(a, b, atol=TOLERANCE, rtol=TOLERANCE)
