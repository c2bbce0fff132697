"""Model cards: offline metadata validation, rendering from `model_cards/`, and quick-start snippets that run."""

import json
import re

import pytest
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import TrainingArguments

from eurobert_hf.hub import (
    EUROBERT_LANGUAGES,
    ModelCardMetadataError,
    eval_results_from_metrics,
    render_eurobert_model_card,
    render_uld_model_card,
    save_for_hub,
    training_hyperparameters,
    validate_model_card,
    validate_model_card_metadata,
)
from eurobert_hf.modeling import (
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
)
from tests.hub_fixtures import last_json_line, run_without_plugin, tiny_model, tiny_tokenizer

TASK_MODELS = {
    "fill-mask": (EuroBertForMaskedLM, {}),
    "text-classification": (EuroBertForSequenceClassification, {"num_labels": 2}),
    "token-classification": (EuroBertForTokenClassification, {"num_labels": 3}),
    "question-answering": (EuroBertForQuestionAnswering, {}),
    "multiple-choice": (EuroBertForMultipleChoice, {}),
}

VALID_METADATA = {
    "license": "apache-2.0",
    "language": ["en", "fr", "yue", "pt-BR"],
    "library_name": "transformers",
    "pipeline_tag": "fill-mask",
    "base_model": "EuroBERT/EuroBERT-210m",
    "datasets": ["glue"],
    "tags": ["eurobert"],
    "model-index": [
        {
            "name": "m",
            "results": [
                {
                    "task": {"type": "text-classification"},
                    "dataset": {"type": "glue", "name": "GLUE"},
                    "metrics": [{"type": "accuracy", "value": 0.5}],
                }
            ],
        }
    ],
}


def quick_start(card_text: str) -> str:
    """The first Python block after the card's "Quick start" heading."""
    section = card_text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)


def test_valid_metadata_passes():
    validate_model_card_metadata(VALID_METADATA)
    validate_model_card_metadata({"license": "other", "license_name": "gemma-terms", "license_link": "LICENSE"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"license": "apache2"}, "`license` 'apache2'"),
        ({"license": "other"}, "license_name"),
        ({"language": ["english"]}, "`language` entry 'english'"),
        ({"language": ["xx"]}, "`language` entry 'xx'"),
        ({"language": 5}, "`language` must be"),
        ({"pipeline_tag": "masked-lm"}, "`pipeline_tag` 'masked-lm'"),
        ({"tags": "eurobert"}, "`tags` must be a list"),
        ({"library_name": ""}, "`library_name`"),
        ({"base_model": "not a repo id"}, "`base_model` entry"),
        ({"model-index": [{"name": "m", "results": [{"task": {}, "dataset": {"type": "g", "name": "G"}}]}]}, "task"),
        ({"model-index": [{"name": "m", "results": [{"task": {"type": "t"}, "dataset": {"type": "g"}}]}]}, "dataset"),
        (
            {
                "model-index": [
                    {"name": "m", "results": [{"task": {"type": "t"}, "dataset": {"type": "g", "name": "G"}}]}
                ]
            },
            "metrics must be a non-empty list",
        ),
        ({"model-index": {"name": "m"}}, "`model-index` must be a non-empty list"),
    ],
)
def test_invalid_metadata_names_the_problem(change, message):
    with pytest.raises(ModelCardMetadataError, match=re.escape(message)):
        validate_model_card_metadata(VALID_METADATA | change)


def test_card_text_validation_parses_front_matter():
    assert validate_model_card("---\nlicense: mit\n---\n# Hi\n") == {"license": "mit"}
    assert validate_model_card("# No metadata\n") == {}
    with pytest.raises(ModelCardMetadataError, match="does not parse"):
        validate_model_card("---\nlicense: [mit\n---\n")
    with pytest.raises(ModelCardMetadataError, match="must be a mapping"):
        validate_model_card("---\n- a\n- b\n---\n")


@pytest.mark.parametrize(
    ("task", "model_class"),
    [(task, model_class) for task, (model_class, _) in TASK_MODELS.items()] + [("sentence-similarity", None)],
)
def test_eurobert_card_metadata(task, model_class):
    metrics = {"eval_accuracy": 0.75, "eval_f1": 0.5, "eval_runtime": 1.2, "epoch": 3.0}
    card = render_eurobert_model_card(
        "user/eurobert-task",
        task=task if model_class is None else None,
        model=tiny_model(model_class) if model_class else None,
        base_model="EuroBERT/EuroBERT-210m",
        datasets=["nyu-mll/glue"],
        eval_results=eval_results_from_metrics(
            metrics, task_type=task, dataset_name="GLUE", dataset_type="nyu-mll/glue", dataset_split="validation"
        ),
        hyperparameters={"learning_rate": 3e-5},
    )
    data = card.data.to_dict()
    assert data["pipeline_tag"] == task
    assert data["license"] == "apache-2.0"
    assert data["language"] == list(EUROBERT_LANGUAGES) and len(data["language"]) == 15
    assert data["base_model"] == "EuroBERT/EuroBERT-210m"
    assert data["datasets"] == ["nyu-mll/glue"]
    assert {"eurobert", "eurobert-hf"} <= set(data["tags"])
    embedding = model_class is None
    assert data["library_name"] == ("sentence-transformers" if embedding else "transformers")
    results = data["model-index"][0]["results"]
    assert [metric["type"] for result in results for metric in result["metrics"]] == ["accuracy", "f1"]
    assert results[0]["dataset"] == {"name": "GLUE", "type": "nyu-mll/glue", "split": "validation"}
    text = str(card)
    assert "arxiv.org/abs/2503.05500" in text and "eprint={2503.05500}" in text
    assert f"transformers: {transformers.__version__}" in text
    assert "learning_rate: 3e-05" in text
    validate_model_card(text)


def test_eurobert_card_rejects_bad_input():
    with pytest.raises(ValueError, match="Unknown EuroBERT card task"):
        render_eurobert_model_card("user/m", task="summarization")
    with pytest.raises(ValueError, match="Pass `task`"):
        render_eurobert_model_card("user/m")
    with pytest.raises(ModelCardMetadataError, match="license"):
        render_eurobert_model_card("user/m", task="fill-mask", license="apache")


def test_uld_card_metadata_and_hyperparameters(tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=2e-5,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=10,
        report_to=[],
        use_cpu=True,
    )
    hyperparameters = training_hyperparameters(args) | {"uld_distillation_weight": 1.5}
    assert hyperparameters["total_train_batch_size"] == 8 and hyperparameters["training_steps"] == 10
    card = render_uld_model_card(
        "user/smollm2-uld",
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        teacher_model="google/gemma-3-270m",
        license="apache-2.0",
        language=["en", "de", "fr"],
        eval_results=[
            EvalResult(
                task_type="text-generation",
                dataset_type="chatterbot",
                dataset_name="chatterbot (held-out)",
                metric_type="rougeL",
                metric_value=0.31,
            )
        ],
        hyperparameters=hyperparameters,
    )
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-generation"
    assert data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    assert data["language"] == ["en", "de", "fr"]
    assert {"uld", "distillation"} <= set(data["tags"])
    assert data["model-index"][0]["results"][0]["metrics"][0] == {"type": "rougeL", "value": 0.31}
    text = str(card)
    assert "google/gemma-3-270m" in text and "eprint={2402.12030}" in text
    assert "uld_distillation_weight: 1.5" in text and "learning_rate: 2e-05" in text
    unlicensed = render_uld_model_card("user/s", base_model=None, teacher_model=None)
    assert unlicensed.data.license == "unknown" and "check the licences" in str(unlicensed)


def test_card_saved_with_model_loads_back(tmp_path):
    model = tiny_model(EuroBertForSequenceClassification, num_labels=2)
    card = render_eurobert_model_card("user/cls", model=model, base_model="EuroBERT/EuroBERT-210m")
    folder = save_for_hub(model, tmp_path / "cls", tokenizer=tiny_tokenizer(), model_card=card)
    loaded = ModelCard.load(folder / "README.md")
    assert loaded.data.pipeline_tag == "text-classification"
    assert loaded.data.base_model == "EuroBERT/EuroBERT-210m"
    assert isinstance(loaded.data, ModelCardData)


def _save_task_models(root, remote_code: bool) -> dict[str, str]:
    folders = {}
    for task, (model_class, overrides) in TASK_MODELS.items():
        model = tiny_model(model_class, **overrides)
        model_id = f"user/eurobert-{task}"
        card = render_eurobert_model_card(model_id, model=model, remote_code=remote_code)
        folder = save_for_hub(model, root / task, tokenizer=tiny_tokenizer(), model_card=card)
        folders[task] = str(folder)
    return folders


def _snippet_for_folder(folder: str, task: str) -> str:
    snippet = quick_start((open(f"{folder}/README.md")).read())
    assert f'"user/eurobert-{task}"' in snippet
    return snippet.replace(f'"user/eurobert-{task}"', repr(folder))


@pytest.mark.parametrize("task", list(TASK_MODELS))
def test_quick_start_runs_with_the_plugin(task, tmp_path, capsys):
    folder = _save_task_models_one(tmp_path, task)
    snippet = _snippet_for_folder(folder, task)
    assert snippet.startswith("import eurobert_hf") and "trust_remote_code" not in snippet
    exec(compile(snippet, f"<{task} quick start>", "exec"), {})
    printed = capsys.readouterr().out
    expected = {
        "fill-mask": "token_str",
        "text-classification": "'label'",
        "token-classification": "'entity'",
        "question-answering": "'answer'",
        "multiple-choice": "She worked",
    }[task]
    assert expected in printed


def _save_task_models_one(root, task):
    model_class, overrides = TASK_MODELS[task]
    model = tiny_model(model_class, **overrides)
    card = render_eurobert_model_card(f"user/eurobert-{task}", model=model, remote_code=False)
    return str(save_for_hub(model, root / task, tokenizer=tiny_tokenizer(), model_card=card, remote_code=False))


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
def test_quick_starts_run_without_the_plugin_through_remote_code(tmp_path):
    folders = _save_task_models(tmp_path / "models", remote_code=True)
    snippets = {task: _snippet_for_folder(folder, task) for task, folder in folders.items()}
    assert all("trust_remote_code=True" in snippet and "eurobert_hf" not in snippet for snippet in snippets.values())
    script = f"""
    import contextlib, io, json
    outputs = {{}}
    for task, snippet in {snippets!r}.items():
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(snippet, task, "exec"), {{}})
        outputs[task] = buffer.getvalue()
    print(json.dumps(outputs))
    """
    outputs = last_json_line(run_without_plugin(script, tmp_path))
    assert set(outputs) == set(TASK_MODELS)
    assert "token_str" in outputs["fill-mask"] and "'answer'" in outputs["question-answering"]
    assert all(outputs.values())
    assert json.loads((tmp_path / "models" / "fill-mask" / "config.json").read_text())["auto_map"]


def test_save_for_hub_writes_a_default_card_for_eurobert_heads(tmp_path):
    model = tiny_model(EuroBertForTokenClassification, num_labels=3)
    model.name_or_path = "EuroBERT/EuroBERT-610m"  # as after from_pretrained of a Hub checkpoint
    folder = save_for_hub(model, tmp_path / "my-tagger", tokenizer=tiny_tokenizer())
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "token-classification" and card.data.base_model == "EuroBERT/EuroBERT-610m"
    assert '"my-tagger", trust_remote_code=True' in quick_start(str(card))
    model.name_or_path = str(folder)  # a local origin is not a Hub id: no base_model
    folder = save_for_hub(model, tmp_path / "again", remote_code=False)
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model is None and "import eurobert_hf" in quick_start(str(card))
