"""The demo's multilingual prompt set (from `chatterbot-corpus`) and the teacher's few-shot prompt template."""

import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

# The corpus's folder name for each language the demo uses.
CORPUS_LANGUAGES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
}

# Three solved examples per language for the base teacher (the paper prompts its teachers few-shot): short answers in
# full sentences, matching the corpus's mix of trivia and small talk.
FEW_SHOT_EXAMPLES = {
    "en": (
        ("Question", "Answer"),
        [
            ("What is the capital of France?", "The capital of France is Paris."),
            ("How are you today?", "I am fine, thank you."),
            ("Who wrote Romeo and Juliet?", "William Shakespeare wrote it."),
        ],
    ),
    "de": (
        ("Frage", "Antwort"),
        [
            ("Was ist die Hauptstadt von Frankreich?", "Die Hauptstadt von Frankreich ist Paris."),
            ("Wie geht es dir heute?", "Mir geht es gut, danke."),
            ("Wer schrieb Romeo und Julia?", "William Shakespeare schrieb es."),
        ],
    ),
    "fr": (
        ("Question", "Réponse"),
        [
            ("Quelle est la capitale de la France ?", "La capitale de la France est Paris."),
            ("Comment vas-tu aujourd'hui ?", "Je vais bien, merci."),
            ("Qui a écrit Roméo et Juliette ?", "William Shakespeare l'a écrit."),
        ],
    ),
    "es": (
        ("Pregunta", "Respuesta"),
        [
            ("¿Cuál es la capital de Francia?", "La capital de Francia es París."),
            ("¿Cómo estás hoy?", "Estoy bien, gracias."),
            ("¿Quién escribió Romeo y Julieta?", "Lo escribió William Shakespeare."),
        ],
    ),
    "it": (
        ("Domanda", "Risposta"),
        [
            ("Qual è la capitale della Francia?", "La capitale della Francia è Parigi."),
            ("Come stai oggi?", "Sto bene, grazie."),
            ("Chi ha scritto Romeo e Giulietta?", "L'ha scritto William Shakespeare."),
        ],
    ),
    "pt": (
        ("Pergunta", "Resposta"),
        [
            ("Qual é a capital da França?", "A capital da França é Paris."),
            ("Como você está hoje?", "Estou bem, obrigado."),
            ("Quem escreveu Romeu e Julieta?", "Foi William Shakespeare."),
        ],
    ),
    "nl": (
        ("Vraag", "Antwoord"),
        [
            ("Wat is de hoofdstad van Frankrijk?", "De hoofdstad van Frankrijk is Parijs."),
            ("Hoe gaat het vandaag met je?", "Het gaat goed, dank je."),
            ("Wie schreef Romeo en Julia?", "William Shakespeare schreef het."),
        ],
    ),
}


@dataclass(frozen=True)
class Prompt:
    """One demo prompt.

    Args:
        language (`str`): ISO 639-1 code, one of `CORPUS_LANGUAGES`.
        text (`str`): the question or message.
    """

    language: str
    text: str


@dataclass(frozen=True)
class PromptSplit:
    """Train and held-out prompts, balanced per language."""

    train: list[Prompt]
    held_out: list[Prompt]


def few_shot_prompt(question: str, language: str) -> str:
    """The teacher's prompt: three solved examples in `language`, then `question`, ending where the answer starts."""
    if language not in FEW_SHOT_EXAMPLES:
        raise ValueError(f"No few-shot examples for language {language!r}; use one of {sorted(FEW_SHOT_EXAMPLES)}.")
    (question_label, answer_label), examples = FEW_SHOT_EXAMPLES[language]
    shots = "".join(f"{question_label}: {q}\n{answer_label}: {a}\n\n" for q, a in examples)
    return f"{shots}{question_label}: {question.strip()}\n{answer_label}:"


def corpus_dir() -> Path:
    """The `data/` folder of the installed `chatterbot-corpus` package."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The demo needs the package 'chatterbot-corpus'. Install the demo assets with "
            "`pip install --no-deps --no-build-isolation -r requirements/demo-assets.txt`."
        )
    return Path(spec.submodule_search_locations[0]) / "data"


def load_corpus_prompts(language: str, data_dir: str | Path | None = None, min_words: int = 2) -> list[Prompt]:
    """The first turn of every conversation of `language` in the corpus, deduplicated (case-insensitively, first
    spelling kept) and in file order. Turns with fewer than `min_words` words ("Hi") are left out."""
    if language not in CORPUS_LANGUAGES:
        raise ValueError(f"Unknown demo language {language!r}; use one of {sorted(CORPUS_LANGUAGES)}.")
    folder = Path(data_dir or corpus_dir()) / CORPUS_LANGUAGES[language]
    files = sorted(folder.glob("*.yml"))
    if not files:
        raise FileNotFoundError(f"No corpus files (*.yml) in {folder}.")
    seen: set[str] = set()
    prompts = []
    for path in files:
        conversations = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("conversations") or []
        for conversation in conversations:
            # YAML turns unquoted words such as "yes" into booleans; such turns are not usable prompts.
            if not isinstance(conversation, list) or not conversation or not isinstance(conversation[0], str):
                continue
            text = " ".join(conversation[0].split())
            key = text.casefold()
            if len(text.split()) >= min_words and key not in seen:
                seen.add(key)
                prompts.append(Prompt(language, text))
    return prompts


def split_prompts(
    prompts_by_language: dict[str, list[Prompt]], train_per_language: int, held_out_per_language: int, seed: int
) -> PromptSplit:
    """Shuffle each language's prompts with `seed`, take `held_out_per_language` held-out prompts first, then up to
    `train_per_language` training prompts, so every language has the same held-out size."""
    if train_per_language < 1 or held_out_per_language < 1:
        raise ValueError("train_per_language and held_out_per_language must both be at least 1.")
    train: list[Prompt] = []
    held_out: list[Prompt] = []
    for language in sorted(prompts_by_language):
        prompts = list(prompts_by_language[language])
        if len(prompts) <= held_out_per_language:
            raise ValueError(
                f"Language {language!r} has {len(prompts)} prompts, not enough for {held_out_per_language} held-out "
                "prompts and at least one training prompt; lower held_out_per_language."
            )
        random.Random(f"{seed}-{language}").shuffle(prompts)
        held_out.extend(prompts[:held_out_per_language])
        train.extend(prompts[held_out_per_language : held_out_per_language + train_per_language])
    return PromptSplit(train=train, held_out=held_out)


def build_prompt_split(
    train_per_language: int,
    held_out_per_language: int,
    seed: int = 0,
    languages: tuple[str, ...] = tuple(CORPUS_LANGUAGES),
    data_dir: str | Path | None = None,
) -> PromptSplit:
    """The demo's prompt set: corpus prompts of each language, deduplicated, split train / held-out with `seed`."""
    prompts = {language: load_corpus_prompts(language, data_dir) for language in languages}
    return split_prompts(prompts, train_per_language, held_out_per_language, seed)
