"""The padding-free path equals the padded computation, and packed rows never attend across sequences."""

import pytest
import torch

from eurobert_hf import EuroBertForMaskedLM, EuroBertModel
from eurobert_hf.modeling.modeling_eurobert import PackedSequences
from tests.eurobert_fixtures import padded_batch, tiny_config

TOLERANCE = 1e-5


def model_for(attn: str, shape: str = "head_dim") -> EuroBertModel:
    torch.manual_seed(0)
    return EuroBertModel(tiny_config(shape, attn_implementation=attn)).eval()


def padded_reference(model: EuroBertModel, input_ids, attention_mask) -> torch.Tensor:
    """The padded computation: every position runs through every layer, padding masked out of the keys."""
    extended = model._expand_padding_mask(attention_mask, torch.float32)
    hidden = model.embed_tokens(input_ids)
    positions = torch.arange(input_ids.shape[1])[None].expand_as(input_ids)
    position_embeddings = model.rotary_emb(hidden, positions)
    for layer in model.layers:
        hidden = layer(hidden, position_embeddings=position_embeddings, attention_mask=extended)
    return model.norm(hidden)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", ["mha", "gqa", "head_dim"])
def test_padding_free_equals_padded_computation(attn, shape):
    model = model_for(attn, shape)
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        ours = model(input_ids, attention_mask=attention_mask).last_hidden_state
        reference = padded_reference(model, input_ids, attention_mask)
    keep = attention_mask.bool()
    assert (ours[keep] - reference[keep]).abs().max().item() <= TOLERANCE
    assert torch.all(ours[~keep] == 0), "padding positions are never computed and hold zeros"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padded_batch_equals_each_sequence_alone(attn):
    model = model_for(attn)
    input_ids, attention_mask = padded_batch(lengths=(9, 4, 1, 6))
    with torch.no_grad():
        batched = model(input_ids, attention_mask=attention_mask).last_hidden_state
        for row, length in enumerate(attention_mask.sum(-1).tolist()):
            alone = model(input_ids[row : row + 1, :length]).last_hidden_state[0]
            assert (batched[row, :length] - alone).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_row_from_position_ids_equals_separate_rows(attn):
    model = model_for(attn)
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 2, 7))
    lengths = attention_mask.sum(-1).tolist()
    packed_ids = torch.cat([input_ids[i, :n] for i, n in enumerate(lengths)])[None]
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        packed = model(packed_ids, position_ids=position_ids).last_hidden_state[0]
        separate = model(input_ids, attention_mask=attention_mask).last_hidden_state
    expected = separate[attention_mask.bool()]
    assert (packed - expected).abs().max().item() <= TOLERANCE


def test_packed_row_from_flash_attention_kwargs_equals_separate_rows():
    model = model_for("sdpa")
    input_ids, attention_mask = padded_batch(lengths=(9, 3, 6))
    lengths = attention_mask.sum(-1).tolist()
    packed_ids = torch.cat([input_ids[i, :n] for i, n in enumerate(lengths)])[None]
    cu_seq_lens = torch.tensor([0, 9, 12, 18], dtype=torch.int32)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        packed = model(
            packed_ids,
            position_ids=position_ids,
            cu_seq_lens_q=cu_seq_lens,
            cu_seq_lens_k=cu_seq_lens,
            max_length_q=9,
            max_length_k=9,
        ).last_hidden_state[0]
        separate = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert (packed - separate[attention_mask.bool()]).abs().max().item() <= TOLERANCE


def test_packed_sequences_do_not_attend_to_each_other():
    model = model_for("sdpa")
    first = torch.randint(3, 90, (1, 6))
    second_a, second_b = torch.randint(3, 90, (1, 5)), torch.randint(3, 90, (1, 5))
    positions = torch.cat([torch.arange(6), torch.arange(5)])[None]
    with torch.no_grad():
        out_a = model(torch.cat([first, second_a], dim=1), position_ids=positions).last_hidden_state
        out_b = model(torch.cat([first, second_b], dim=1), position_ids=positions).last_hidden_state
    assert torch.equal(out_a[0, :6], out_b[0, :6])


def test_masked_lm_with_data_collator_with_flattening():
    from transformers import DataCollatorWithFlattening

    torch.manual_seed(0)
    model = EuroBertForMaskedLM(tiny_config()).eval()
    input_ids, attention_mask = padded_batch(lengths=(7, 4))
    features = [{"input_ids": input_ids[i, :n].tolist()} for i, n in enumerate(attention_mask.sum(-1).tolist())]
    batch = DataCollatorWithFlattening()(features)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        padded = model(input_ids, attention_mask=attention_mask).logits
    assert (packed - padded[attention_mask.bool()]).abs().max().item() <= TOLERANCE


def test_masked_lm_logits_are_zero_at_padding_and_loss_ignores_it():
    torch.manual_seed(0)
    model = EuroBertForMaskedLM(tiny_config()).eval()
    input_ids, attention_mask = padded_batch()
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, labels=labels)
    keep = attention_mask.bool()
    assert torch.all(out.logits[~keep] == 0)
    expected = torch.nn.functional.cross_entropy(out.logits[keep].double(), input_ids[keep])
    assert abs(out.loss.item() - expected.item()) <= TOLERANCE


def test_left_padding_gives_the_same_tokens_as_right_padding():
    model = model_for("sdpa")
    input_ids, attention_mask = padded_batch(lengths=(9, 5))
    left_ids = torch.stack([torch.roll(row, 9 - int(n)) for row, n in zip(input_ids, attention_mask.sum(-1))])
    left_mask = torch.stack([torch.roll(row, 9 - int(n)) for row, n in zip(attention_mask, attention_mask.sum(-1))])
    positions = (left_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        right = model(input_ids, attention_mask=attention_mask).last_hidden_state[attention_mask.bool()]
        left = model(left_ids, attention_mask=left_mask, position_ids=positions).last_hidden_state[left_mask.bool()]
    assert (right - left).abs().max().item() <= TOLERANCE


def test_packed_sequences_metadata():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    packed = PackedSequences.from_attention_mask(mask)
    assert packed.lengths == [3, 1] and packed.max_seqlen == 3
    assert packed.cu_seqlens.tolist() == [0, 3, 4]
    assert packed.indices.tolist() == [0, 1, 2, 4]
    values = torch.arange(8.0).view(2, 4, 1)
    assert packed.unpack(packed.pack(values)).squeeze(-1).tolist() == [[0, 1, 2, 0], [4, 0, 0, 0]]
    assert PackedSequences.from_position_ids(torch.tensor([[0, 1, 2, 0, 1, 0]])).lengths == [3, 2, 1]
