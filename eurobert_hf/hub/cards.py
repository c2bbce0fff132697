"""Model cards for EuroBERT task models, EuroBERT embedding models and ULD-distilled causal LMs.

The templates live in the repository's `model_cards/` folder and are rendered with `huggingface_hub.ModelCard`. Every
card is checked offline against the Hub's metadata rules (`card_validation`) before it is returned, so a card that the
Hub would refuse fails at render time rather than at the end of a training run.
"""

import importlib.metadata
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .card_validation import validate_model_card

EUROBERT_TEMPLATE = "eurobert_model_card.md.j2"
ULD_TEMPLATE = "uld_model_card.md.j2"

# The languages of the official EuroBERT model card.
EUROBERT_LANGUAGES = ("en", "fr", "de", "es", "zh", "it", "ru", "pl", "pt", "ja", "vi", "nl", "ar", "tr", "hi")

# Card task (= Hub `pipeline_tag`) -> (head class, human-readable task).
EUROBERT_TASKS = {
    "fill-mask": ("EuroBertForMaskedLM", "fill-mask (masked language modelling)"),
    "text-classification": ("EuroBertForSequenceClassification", "text classification"),
    "token-classification": ("EuroBertForTokenClassification", "token classification"),
    "question-answering": ("EuroBertForQuestionAnswering", "extractive question answering"),
    "multiple-choice": ("EuroBertForMultipleChoice", "multiple choice"),
    "feature-extraction": ("EuroBertModel", "sentence embeddings"),
    "sentence-similarity": ("EuroBertModel", "sentence embeddings"),
}
EMBEDDING_TASKS = ("feature-extraction", "sentence-similarity")
_ARCHITECTURE_TO_TASK = {
    architecture: task for task, (architecture, _) in EUROBERT_TASKS.items() if task != "sentence-similarity"
}

EUROBERT_CITATION = """@misc{boizard2025eurobert,
      title={EuroBERT: Scaling Multilingual Encoders for European Languages},
      author={Nicolas Boizard and Hippolyte Gisserot-Boukhlef and Duarte M. Alves and André Martins and Ayoub Hammal and Caio Corro and Céline Hudelot and Emmanuel Malherbe and Etienne Malaboeuf and Fanny Jourdan and Gabriel Hautreux and João Alves and Kevin El-Haddad and Manuel Faysse and Maxime Peyrard and Nuno M. Guerreiro and Patrick Fernandes and Ricardo Rei and Pierre Colombo},
      year={2025},
      eprint={2503.05500},
      archivePrefix={arXiv},
      primaryClass={cs.CL},
      url={https://arxiv.org/abs/2503.05500},
}"""

ULD_CITATION = """@misc{boizard2024uld,
      title={Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for LLMs},
      author={Nicolas Boizard and Kevin El Haddad and Céline Hudelot and Pierre Colombo},
      year={2024},
      eprint={2402.12030},
      archivePrefix={arXiv},
      primaryClass={cs.CL},
      url={https://arxiv.org/abs/2402.12030},
}"""

# Keys of `Trainer.evaluate()` results that describe the run rather than the model's quality.
_NON_METRIC_KEYS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "total_flos", "step")


def template_path(name: str) -> Path:
    """Returns the path of a card template shipped in `model_cards/` (e.g. `EUROBERT_TEMPLATE`)."""
    for folder in (Path(__file__).parent / "model_cards", Path(__file__).resolve().parents[2] / "model_cards"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"Model card template {name!r} not found; reinstall eurobert-hf or pass `template_path`.")


def framework_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of eurobert-hf and the libraries a card lists (those not installed are left out)."""
    from eurobert_hf import __version__

    versions = {"eurobert-hf": __version__}
    for distribution in ("transformers", "torch", "huggingface-hub", "tokenizers", "datasets", *extra):
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def training_hyperparameters(args: Any) -> dict[str, Any]:
    """The hyper-parameters a card reports, read from a `transformers.TrainingArguments` (or TRL config).

    Besides the usual optimisation settings this keeps every `uld_*` field and the teacher's name, so a `ULDConfig`
    documents its distillation settings too.
    """
    world_size = getattr(args, "world_size", 1)
    hyperparameters: dict[str, Any] = {
        "learning_rate": args.learning_rate,
        "train_batch_size": args.per_device_train_batch_size,
        "eval_batch_size": args.per_device_eval_batch_size,
        "seed": args.seed,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "total_train_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size,
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
    }
    if getattr(args, "warmup_steps", 0):
        hyperparameters["lr_scheduler_warmup_steps"] = args.warmup_steps
    elif getattr(args, "warmup_ratio", 0):
        hyperparameters["lr_scheduler_warmup_ratio"] = args.warmup_ratio
    if args.max_steps and args.max_steps > 0:
        hyperparameters["training_steps"] = args.max_steps
    else:
        hyperparameters["num_epochs"] = args.num_train_epochs
    if args.bf16 or args.fp16:
        hyperparameters["mixed_precision_training"] = "bf16" if args.bf16 else "fp16"
    for name, value in sorted(vars(args).items()):
        if (name.startswith("uld_") or name == "teacher_model_name_or_path") and value is not None:
            hyperparameters[name] = value
    return hyperparameters


def eval_results_from_metrics(
    metrics: Mapping[str, float],
    *,
    task_type: str,
    dataset_name: str,
    dataset_type: str | None = None,
    dataset_split: str | None = None,
    dataset_config: str | None = None,
) -> list[EvalResult]:
    """Turns `Trainer.evaluate()`-style metrics (`{"eval_accuracy": 0.9, ...}`) into `EvalResult`s for a card.

    Run statistics (runtime, throughput, epoch) are dropped and the `eval_`/`test_` prefixes removed.

    Args:
        metrics (`Mapping[str, float]`):
            Metric name to value.
        task_type (`str`):
            The Hub task the metrics measure, e.g. `"text-classification"`.
        dataset_name (`str`):
            Human-readable dataset name shown on the Hub.
        dataset_type (`str`, *optional*):
            The dataset's Hub id; defaults to `dataset_name`.
        dataset_split (`str`, *optional*):
            The evaluated split.
        dataset_config (`str`, *optional*):
            The dataset configuration (subset).
    """
    results = []
    for key, value in metrics.items():
        name = key.split("_", 1)[1] if key.startswith(("eval_", "test_")) else key
        if name in _NON_METRIC_KEYS or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        results.append(
            EvalResult(
                task_type=task_type,
                dataset_type=dataset_type or dataset_name,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                dataset_config=dataset_config,
                metric_type=name,
                metric_name=name,
                metric_value=float(value),
            )
        )
    return results


def eurobert_task(architecture: str) -> str:
    """The card task (Hub `pipeline_tag`) of a EuroBERT head class name, e.g. `"EuroBertForMaskedLM"`."""
    if architecture not in _ARCHITECTURE_TO_TASK:
        raise ValueError(f"{architecture!r} is not a EuroBERT head; expected one of {sorted(_ARCHITECTURE_TO_TASK)}.")
    return _ARCHITECTURE_TO_TASK[architecture]


def _format_parameters(count: int) -> str:
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= threshold:
            return f"{count / threshold:.1f}{suffix}"
    return str(count)


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _render(card_data: ModelCardData, template: str | Path, **template_kwargs: Any) -> ModelCard:
    card = ModelCard.from_template(card_data, template_path=str(template), **template_kwargs)
    validate_model_card(str(card))
    return card


def render_eurobert_model_card(
    model_id: str,
    *,
    task: str | None = None,
    model: Any = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    language: Sequence[str] = EUROBERT_LANGUAGES,
    datasets: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
    eval_results: Sequence[EvalResult] = (),
    hyperparameters: Mapping[str, Any] | None = None,
    description: str | None = None,
    remote_code: bool = True,
    pooling: str = "mean",
    normalize: bool = True,
    template: str | Path | None = None,
) -> ModelCard:
    """Renders the model card of a EuroBERT task model or embedding model from `model_cards/eurobert_model_card.md.j2`.

    Args:
        model_id (`str`):
            The Hub id the model will have (`"user/name"`); the quick-start snippet loads it.
        task (`str`, *optional*):
            The Hub `pipeline_tag`: one of `EUROBERT_TASKS` (`"fill-mask"`, `"text-classification"`,
            `"token-classification"`, `"question-answering"`, `"multiple-choice"`, `"feature-extraction"`,
            `"sentence-similarity"`). Defaults to the task of `model`'s class.
        model (`PreTrainedModel`, *optional*):
            The model, used for its architecture, parameter count and (when `task` is not given) its task.
        base_model (`str`, *optional*):
            The Hub id of the checkpoint it was fine-tuned from, e.g. `"EuroBERT/EuroBERT-210m"`.
        license (`str`, *optional*, defaults to `"apache-2.0"`):
            A Hub licence id.
        language (`Sequence[str]`, *optional*, defaults to `EUROBERT_LANGUAGES`):
            ISO 639 codes of the languages the model serves.
        datasets (`str` or `Sequence[str]`, *optional*):
            Hub ids of the training datasets.
        tags (`Sequence[str]`, *optional*):
            Tags added to `eurobert`, `eurobert-hf` and the task tags.
        eval_results (`Sequence[EvalResult]`, *optional*):
            Evaluation results, written to `model-index` and to a table (see `eval_results_from_metrics`).
        hyperparameters (`Mapping[str, Any]`, *optional*):
            Training hyper-parameters to list (see `training_hyperparameters`).
        description (`str`, *optional*):
            A first paragraph; a generic one is written otherwise.
        remote_code (`bool`, *optional*, defaults to `True`):
            Whether the repository ships its model code (`export_remote_code`); the snippet then loads with
            `trust_remote_code=True` and needs no extra package, otherwise it imports `eurobert_hf`.
        pooling (`str`, *optional*, defaults to `"mean"`):
            Embedding models only: the pooling the card describes.
        normalize (`bool`, *optional*, defaults to `True`):
            Embedding models only: whether embeddings are L2-normalised.
        template (`str` or `Path`, *optional*):
            Another Jinja template to render instead of the shipped one.

    Returns:
        `huggingface_hub.ModelCard`: the card, already validated against the Hub's metadata rules.
    """
    architecture = type(model).__name__ if model is not None else None
    if task is None:
        if architecture is None:
            raise ValueError("Pass `task` (e.g. 'text-classification') or the `model` to infer it from.")
        task = eurobert_task(architecture)
    if task not in EUROBERT_TASKS:
        raise ValueError(f"Unknown EuroBERT card task {task!r}; expected one of {sorted(EUROBERT_TASKS)}.")
    architecture = architecture or EUROBERT_TASKS[task][0]
    is_embedding = task in EMBEDDING_TASKS
    task_tags = ["sentence-transformers", "sentence-similarity", "feature-extraction"] if is_embedding else [task]
    model_title = model_id.rstrip("/").split("/")[-1]
    eval_results = list(eval_results)
    card_data = ModelCardData(
        model_name=model_title,
        base_model=base_model,
        datasets=_as_list(datasets) or None,
        eval_results=eval_results or None,
        language=list(language),
        # sentence-transformers folders are what the Hub's embedding widgets and snippets expect.
        library_name="sentence-transformers" if is_embedding else "transformers",
        license=license,
        pipeline_tag=task,
        tags=list(dict.fromkeys(["eurobert", "eurobert-hf", *task_tags, *tags])),
    )
    task_title = EUROBERT_TASKS[task][1]
    return _render(
        card_data,
        template or template_path(EUROBERT_TEMPLATE),
        model_id=model_id,
        model_id_literal=json.dumps(model_id),  # a Python string literal (JSON escapes are Python ones)
        model_title=model_title,
        description=description
        or f"A EuroBERT model for {task_title}" + (f", fine-tuned from `{base_model}`." if base_model else "."),
        task=task,
        task_title=task_title,
        architecture=architecture,
        num_parameters=_format_parameters(model.num_parameters()) if model is not None else None,
        base_model=base_model,
        languages=list(language),
        license=license,
        datasets=_as_list(datasets),
        remote_code=remote_code,
        load_kwargs=", trust_remote_code=True" if remote_code else "",
        pooling=pooling,
        normalize=normalize,
        eval_results=eval_results,
        hyperparameters=dict(hyperparameters or {}),
        framework_versions=framework_versions(["sentence-transformers"] if is_embedding else ()),
        citations=[EUROBERT_CITATION],
    )


def render_uld_model_card(
    model_id: str,
    *,
    base_model: str | None,
    teacher_model: str | None,
    license: str | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    language: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    tags: Sequence[str] = (),
    eval_results: Sequence[EvalResult] = (),
    hyperparameters: Mapping[str, Any] | None = None,
    description: str | None = None,
    template: str | Path | None = None,
) -> ModelCard:
    """Renders the model card of a causal LM distilled with ULD from `model_cards/uld_model_card.md.j2`.

    Args:
        model_id (`str`):
            The Hub id the model will have (`"user/name"`); the quick-start snippet loads it.
        base_model (`str`, *optional*):
            The Hub id of the student's starting checkpoint (`None` when it is not a Hub model).
        teacher_model (`str`, *optional*):
            The teacher's Hub id or name.
        license (`str`, *optional*):
            A Hub licence id, normally the student's; `None` writes `unknown` and a note asking readers to check the
            student's and teacher's licences.
        license_name (`str`, *optional*), license_link (`str`, *optional*):
            Required with `license="other"` (e.g. `"gemma-terms-of-use"` and its URL).
        language (`str` or `Sequence[str]`, *optional*):
            ISO 639 codes of the training data's languages, when known.
        datasets (`str` or `Sequence[str]`, *optional*):
            Hub ids of the training datasets.
        tags (`Sequence[str]`, *optional*):
            Tags added to `uld`, `distillation`, `cross-tokenizer-distillation`, `trl`, `eurobert-hf`.
        eval_results (`Sequence[EvalResult]`, *optional*):
            Evaluation results for `model-index` (see `eval_results_from_metrics`).
        hyperparameters (`Mapping[str, Any]`, *optional*):
            Training and ULD hyper-parameters (see `training_hyperparameters`).
        description (`str`, *optional*):
            A first paragraph; a generic one is written otherwise.
        template (`str` or `Path`, *optional*):
            Another Jinja template to render instead of the shipped one.

    Returns:
        `huggingface_hub.ModelCard`: the card, already validated against the Hub's metadata rules.
    """
    model_title = model_id.rstrip("/").split("/")[-1]
    eval_results = list(eval_results)
    languages = _as_list(language)
    card_data = ModelCardData(
        model_name=model_title,
        base_model=base_model,
        datasets=_as_list(datasets) or None,
        eval_results=eval_results or None,
        language=languages or None,
        library_name="transformers",
        license=license or "unknown",
        license_name=license_name,
        license_link=license_link,
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(["uld", "distillation", "cross-tokenizer-distillation", "trl", "eurobert-hf", *tags])),
    )
    teacher = f"`{teacher_model}`" if teacher_model else "a teacher model"
    default_description = f"A causal language model distilled from {teacher} with Universal Logit Distillation"
    if base_model:
        default_description += f", starting from `{base_model}`"
    return _render(
        card_data,
        template or template_path(ULD_TEMPLATE),
        model_id=model_id,
        model_id_literal=json.dumps(model_id),  # a Python string literal (JSON escapes are Python ones)
        model_title=model_title,
        description=description or default_description + ".",
        base_model=base_model,
        teacher_model=teacher_model,
        license=license or "unknown",
        license_note=None
        if license
        else "The licence was not recorded: check the licences of the student and teacher models before reuse.",
        languages=languages,
        datasets=_as_list(datasets),
        eval_results=eval_results,
        hyperparameters=dict(hyperparameters or {}),
        framework_versions=framework_versions(["trl", "peft"]),
        citations=[ULD_CITATION],
    )
