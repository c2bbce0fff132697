"""GPU checks of the padding-free paths (run with `pytest -m gpu` on a machine with CUDA)."""

import pytest
import torch

from eurobert_hf import EuroBertForMaskedLM, EuroBertModel
from tests.eurobert_fixtures import padded_batch, tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def varlen_batch(device: str = "cuda"):
    input_ids, attention_mask = padded_batch(lengths=(64, 17, 3, 40, 64, 9), seq_len=64)
    return input_ids.to(device), attention_mask.to(device)


def build(attn: str, dtype: torch.dtype) -> EuroBertModel:
    torch.manual_seed(0)
    config = tiny_config("head_dim", attn_implementation=attn, max_position_embeddings=128)
    return EuroBertModel(config).to("cuda", dtype).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fp32_packed_path_equals_padded_computation_on_gpu(attn):
    model = build(attn, torch.float32)
    input_ids, attention_mask = varlen_batch()
    with torch.no_grad():
        packed = model(input_ids, attention_mask=attention_mask).last_hidden_state
        rows = [model(input_ids[i : i + 1, :n]).last_hidden_state[0] for i, n in enumerate(attention_mask.sum(-1))]
    keep = attention_mask.bool()
    assert (packed[keep] - torch.cat(rows)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_varlen_path_matches_fp32(dtype):
    reference = build("sdpa", torch.float32)
    model = build("sdpa", dtype)
    input_ids, attention_mask = varlen_batch()
    with torch.no_grad():
        expected = reference(input_ids, attention_mask=attention_mask).last_hidden_state
        actual = model(input_ids, attention_mask=attention_mask).last_hidden_state
    keep = attention_mask.bool()
    assert torch.isfinite(actual).all()
    assert (actual.float()[keep] - expected[keep]).abs().max().item() < 0.1


def test_flex_attention_on_gpu_matches_sdpa():
    model = build("sdpa", torch.float32)
    input_ids, attention_mask = varlen_batch()
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask).last_hidden_state
        model.set_attn_implementation("flex_attention")
        actual = model(input_ids, attention_mask=attention_mask).last_hidden_state
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-3)


def test_bf16_training_step_on_gpu_is_finite():
    torch.manual_seed(0)
    model = EuroBertForMaskedLM(tiny_config(max_position_embeddings=128)).to("cuda", torch.bfloat16).train()
    input_ids, attention_mask = varlen_batch()
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_native_parity_on_gpu_in_bf16():
    native = pytest.importorskip("transformers.models.eurobert")
    ours = build("sdpa", torch.bfloat16)
    config = native.EuroBertConfig(**ours.config.to_dict())
    config._attn_implementation = "sdpa"
    theirs = native.EuroBertModel(config).to("cuda", torch.bfloat16).eval()
    theirs.load_state_dict(ours.state_dict())
    input_ids, attention_mask = varlen_batch()
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask).last_hidden_state
        b = theirs(input_ids, attention_mask=attention_mask).last_hidden_state
    keep = attention_mask.bool()
    assert (a.float()[keep] - b.float()[keep]).abs().max().item() < 0.1
