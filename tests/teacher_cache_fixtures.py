"""A tiny teacher and small prepared ULD datasets (token ids drawn at random) for the teacher-cache tests."""

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

TEACHER_VOCAB = 37
STUDENT_VOCAB = 23
# (prompt length, student answer length, teacher answer length) of each row.
ROW_SHAPES = ((3, 4, 5), (2, 6, 3), (5, 2, 2), (1, 3, 7), (4, 5, 4))


def tiny_llama(vocab_size: int, spread: float = 8.0, seed: int = 0) -> LlamaForCausalLM:
    """A 1-layer Llama over `vocab_size` tokens whose output weights are scaled by `spread` (so that top-k cuts drop
    real mass)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(spread)
    return model


def cache_dataset(
    shapes=ROW_SHAPES, seed: int = 1, student_vocab: int = STUDENT_VOCAB, teacher_vocab: int = TEACHER_VOCAB
) -> Dataset:
    """A prepared ULD dataset (`input_ids`, `labels`, `teacher_input_ids`, `teacher_labels`) of random ids."""
    generator = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "labels": [], "teacher_input_ids": [], "teacher_labels": []}
    for prompt, answer_student, answer_teacher in shapes:
        for prefix, vocab, answer in (
            ("", student_vocab, answer_student),
            ("teacher_", teacher_vocab, answer_teacher),
        ):
            ids = torch.randint(1, vocab, (prompt + answer,), generator=generator).tolist()
            rows[f"{prefix}input_ids"].append(ids)
            rows[f"{prefix}labels"].append([-100] * prompt + ids[prompt:])
    return Dataset.from_dict(rows)


def pad(rows, value):
    length = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (length - len(r)) for r in rows])
