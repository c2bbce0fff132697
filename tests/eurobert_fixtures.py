"""Tiny EuroBERT configurations and inputs shared by the modeling tests."""

import pytest
import torch

from eurobert_hf import EuroBertConfig

VOCAB_SIZE = 96
PAD_ID = 0

# MHA, GQA, and a head_dim that is not hidden_size / num_attention_heads (as EuroBERT-2.1B).
SHAPES = {
    "mha": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4),
    "gqa": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2),
    "head_dim": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
}


def tiny_config_kwargs(shape: str = "gqa", **overrides) -> dict:
    kwargs = dict(
        vocab_size=VOCAB_SIZE,
        intermediate_size=48,
        num_hidden_layers=2,
        max_position_embeddings=64,
        pad_token_id=PAD_ID,
        bos_token_id=1,
        eos_token_id=PAD_ID,
        mask_token_id=2,
        **SHAPES[shape],
    )
    kwargs.update(overrides)
    return kwargs


def tiny_config(shape: str = "gqa", **overrides) -> EuroBertConfig:
    return EuroBertConfig(**tiny_config_kwargs(shape, **overrides))


def padded_batch(lengths=(9, 5, 2, 7), seq_len: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `input_ids` (pad id 0, bos 1 first) and the matching attention mask."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB_SIZE, (len(lengths), seq_len), generator=generator)
    input_ids[:, 0] = 1
    attention_mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()
    return input_ids.masked_fill(attention_mask == 0, PAD_ID), attention_mask


def native_eurobert():
    """The `transformers.models.eurobert` module (transformers >= 5.3), or skip."""
    return pytest.importorskip("transformers.models.eurobert", reason="native EuroBERT needs transformers >= 5.3")
