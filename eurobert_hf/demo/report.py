"""Scores of the demo's students per language, as a markdown table, a JSON file and a PNG plot."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..metrics import RougeL, TokenF1

# Column order and labels of the stages the demo compares.
STAGES = {"before": "before training", "ce": "CE only", "uld": "CE + ULD"}
METRICS = {"rougeL": "ROUGE-L", "token_f1": "token-F1"}
OVERALL = "overall"

Scores = dict[str, dict[str, dict[str, float]]]  # stage -> language (or "overall") -> metric -> value in [0, 1]


def score_by_language(predictions: Sequence[str], references: Sequence[str], languages: Sequence[str]) -> dict:
    """ROUGE-L and token-F1 of `predictions` against `references`, per language and over all examples."""
    if not len(predictions) == len(references) == len(languages):
        raise ValueError(
            f"Got {len(predictions)} predictions, {len(references)} references and {len(languages)} languages; "
            "pass one of each per example."
        )
    groups = {
        language: [i for i, lang in enumerate(languages) if lang == language] for language in sorted(set(languages))
    }
    groups[OVERALL] = list(range(len(languages)))
    scores = {}
    for group, indices in groups.items():
        group_predictions = [predictions[i] for i in indices]
        group_references = [references[i] for i in indices]
        scores[group] = {
            "rougeL": RougeL(keep_in_memory=True).compute(predictions=group_predictions, references=group_references)[
                "rougeL"
            ],
            "token_f1": TokenF1(keep_in_memory=True).compute(
                predictions=group_predictions, references=group_references
            )["token_f1"],
        }
    return scores


def _groups(scores: Scores) -> list[str]:
    languages = sorted({group for stage in scores.values() for group in stage} - {OVERALL})
    return [*languages, OVERALL]


def markdown_table(scores: Scores) -> str:
    """One row per language and one overall row; one column per stage and metric, in percent."""
    stages = [stage for stage in STAGES if stage in scores]
    header = ["language", *(f"{METRICS[metric]} {STAGES[stage]}" for metric in METRICS for stage in stages)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in _groups(scores):
        cells = [f"**{group}**" if group == OVERALL else group]
        for metric in METRICS:
            for stage in stages:
                value = scores[stage].get(group, {}).get(metric)
                cells.append("–" if value is None else f"{100 * value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _loss_curve(log_history: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
    return [step for step, _ in points], [value for _, value in points]


def plot_report(scores: Scores, histories: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path) -> Path:
    """A PNG with the scores per language and stage (one bar chart per metric) and the training curves (CE and ULD
    terms of each run, from the trainers' `log_history`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(scores)
    stages = [stage for stage in STAGES if stage in scores]
    figure, axes = plt.subplots(1, len(METRICS) + 1, figsize=(6 * (len(METRICS) + 1), 4.5))
    colors = {stage: f"C{index}" for index, stage in enumerate(STAGES)}
    width = 0.8 / len(stages)
    for axis, (metric, metric_label) in zip(axes, METRICS.items()):
        for index, stage in enumerate(stages):
            values = [100 * scores[stage].get(group, {}).get(metric, 0.0) for group in groups]
            positions = [x + (index - (len(stages) - 1) / 2) * width for x in range(len(groups))]
            axis.bar(positions, values, width, label=STAGES[stage], color=colors[stage])
        axis.set_xticks(range(len(groups)), groups)
        axis.set_ylabel(f"{metric_label} vs teacher (%)")
        axis.set_title(f"Held-out {metric_label}")
        axis.legend()
    curves = axes[-1]
    for run, history in histories.items():
        for key, style in (("ce_loss", "-"), ("uld_loss", "--")):
            steps, values = _loss_curve(history, key)
            if steps:
                label = f"{STAGES.get(run, run)}: {key.replace('_loss', '').upper()} term"
                curves.plot(steps, values, style, color=colors.get(run), label=label)
    curves.set_xlabel("optimizer step")
    curves.set_ylabel("loss")
    curves.set_title("Training curves")
    curves.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(
    folder: str | Path,
    scores: Scores,
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    timings: Mapping[str, float],
    details: Mapping[str, object] | None = None,
) -> dict[str, Path]:
    """Write `results.md` (table and timings), `results.json` and `results.png` into `folder`; returns their paths."""
    folder = Path(folder)
    table = markdown_table(scores)
    timing_lines = "".join(f"| {stage} | {seconds:.1f} |\n" for stage, seconds in timings.items())
    markdown = (
        "# eurobert-hf demo: ULD cross-tokenizer distillation, Gemma-3-270M → SmolLM2-135M-Instruct\n\n"
        "Student answers to held-out prompts, scored against the teacher's answers (percent).\n\n"
        f"{table}\n## Timings (seconds, wall clock)\n\n| stage | seconds |\n|---|---|\n{timing_lines}"
    )
    paths = {"table": folder / "results.md", "json": folder / "results.json", "plot": folder / "results.png"}
    paths["table"].write_text(markdown, encoding="utf-8")
    payload = {"scores": scores, "timings": dict(timings), "log_history": dict(histories), **dict(details or {})}
    paths["json"].write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    plot_report(scores, histories, paths["plot"])
    return paths
