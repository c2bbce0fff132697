"""`eurobert-hf pretrain` packs whole batches into one row: the context limit belongs to each document, not the row."""

import os
import re

import pytest
import torch

from eurobert_hf import EuroBertConfig, EuroBertForMaskedLM
from eurobert_hf.cli import main
from eurobert_hf.commands.pretrain import MaskOnlyPackingCollator
from tests.test_cli import FAST, char_wordpiece_tokenizer, write_jsonl

CONTEXT = 64


@pytest.fixture(scope="module")
def short_context_dir(tmp_path_factory) -> str:
    """A tiny EuroBERT whose context (64 positions) is shorter than a packed batch of 4 documents of 48 tokens."""
    tokenizer = char_wordpiece_tokenizer()
    config = EuroBertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=CONTEXT, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("short-context")
    EuroBertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def documents(count: int) -> list[dict[str, str]]:
    # 60 characters -> 60 character tokens + 2 specials: longer than max_length 48, so each is split in two.
    return [{"text": f"document {i:02d} " + "abcdefghij" * 5} for i in range(count)]


def test_pretrain_packs_rows_longer_than_the_context(short_context_dir, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", documents(8))
    eval_file = write_jsonl(tmp_path / "eval.jsonl", documents(4))
    code = main(
        [
            "pretrain", "--model_name_or_path", short_context_dir, "--train_file", train_file,
            "--eval_file", eval_file, "--output_dir", str(tmp_path / "out"), "--max_length", "48",
            "--eval_strategy", "no", *FAST, "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "eval_perplexity" in captured.out
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")


def test_packed_batch_positions_restart_per_document_and_stay_below_max_length():
    tokenizer = char_wordpiece_tokenizer()
    collator = MaskOnlyPackingCollator(tokenizer, generator=torch.Generator().manual_seed(0))
    lengths = [48, 48, 48, 30]
    batch = collator(
        [{"input_ids": [tokenizer.bos_token_id] + [10] * (n - 2) + [tokenizer.eos_token_id]} for n in lengths]
    )
    assert batch["input_ids"].shape == (1, sum(lengths))
    expected = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    torch.testing.assert_close(batch["position_ids"], expected)


def test_max_length_beyond_the_context_splits_documents_at_the_context(short_context_dir, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", documents(4))
    code = main(
        [
            "pretrain", "--model_name_or_path", short_context_dir, "--train_file", train_file,
            "--output_dir", str(tmp_path / "out"), "--max_length", "100", *FAST,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"`--max_length 100` is more than the model's max_position_embeddings ({CONTEXT})" in captured.err
    # 62 tokens per document fit in 64: one sequence each.
    assert re.search(r"\| sequences +\| +4 \|", captured.out), captured.out


def test_packed_row_longer_than_the_context_matches_each_document_alone(short_context_dir):
    model = EuroBertForMaskedLM.from_pretrained(short_context_dir).eval()
    generator = torch.Generator().manual_seed(0)
    docs = [torch.randint(5, 100, (n,), generator=generator) for n in (40, 50, 30)]
    positions = torch.cat([torch.arange(len(doc)) for doc in docs]).unsqueeze(0)
    with torch.no_grad():
        packed = model(torch.cat(docs).unsqueeze(0), position_ids=positions).logits[0]
        alone = torch.cat([model(doc.unsqueeze(0)).logits[0] for doc in docs])
        torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)
