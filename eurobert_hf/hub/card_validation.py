"""Offline validation of model-card metadata with the rules the Hugging Face Hub applies on upload.

`huggingface_hub.ModelCard.validate` sends the card to the Hub's `/api/validate-yaml` endpoint; these checks run
without network so that tests, trainers and the local Hub stand-in reject the same cards the Hub would.
"""

import re
from collections.abc import Mapping
from typing import Any

import yaml

# Licence identifiers the Hub accepts in the `license` field (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset(
    """
    apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
    cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
    cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
    gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr
    mpl-2.0 odc-by odbl openmdw-1.0 openmdw-1.1 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
    deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4
    grok2-community gemma unknown other
    """.split()
)

# Task ids the Hub knows as `pipeline_tag` (the task list of huggingface.js `@huggingface/tasks`).
HUB_PIPELINE_TAGS = frozenset(
    """
    text-classification token-classification table-question-answering question-answering zero-shot-classification
    translation summarization feature-extraction text-generation fill-mask sentence-similarity text-to-speech
    text-to-audio automatic-speech-recognition audio-to-audio audio-classification audio-text-to-text
    voice-activity-detection depth-estimation image-classification object-detection image-segmentation text-to-image
    image-to-text image-to-image image-to-video unconditional-image-generation video-classification
    reinforcement-learning robotics tabular-classification tabular-regression tabular-to-text table-to-text
    multiple-choice text-ranking text-retrieval time-series-forecasting text-to-video image-text-to-text
    image-text-to-image image-text-to-video visual-question-answering document-question-answering
    zero-shot-image-classification graph-ml mask-generation zero-shot-object-detection text-to-3d image-to-3d
    image-feature-extraction video-text-to-text keypoint-detection visual-document-retrieval any-to-any video-to-video
    other
    """.split()
)

# ISO 639-1 codes; the Hub also accepts ISO 639-2/3 three-letter codes and BCP-47 style region suffixes.
_ISO_639_1 = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en
    eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv
    ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne
    ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st
    su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
    """.split()
)
_LANGUAGE_PATTERN = re.compile(r"^(?P<base>[a-z]{2,3})(-[A-Za-z0-9]{2,8})*$")
_REPO_ID_PATTERN = re.compile(r"^([A-Za-z0-9][\w.\-]*/)?[\w.\-]{1,96}$")
_LICENSE_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_BASE_MODEL_RELATIONS = frozenset({"adapter", "merge", "quantized", "finetune"})


def is_hub_repo_id(value: str) -> bool:
    """Whether `value` has the shape of a Hub repository id (`"name"` or `"namespace/name"`)."""
    return bool(_REPO_ID_PATTERN.match(value))


class ModelCardMetadataError(ValueError):
    """Raised when model-card metadata breaks a rule of the Hugging Face Hub; lists every problem found."""


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


def _check_str_or_str_list(metadata: Mapping[str, Any], key: str, problems: list[str]) -> list[str]:
    value = metadata[key]
    if isinstance(value, str) and value:
        return [value]
    if _is_str_list(value):
        return value
    problems.append(f"`{key}` must be a non-empty string or a list of non-empty strings, got {value!r}.")
    return []


def _check_language(metadata: Mapping[str, Any], problems: list[str]) -> None:
    for code in _check_str_or_str_list(metadata, "language", problems):
        match = _LANGUAGE_PATTERN.match(code)
        if match is None or (len(match["base"]) == 2 and match["base"] not in _ISO_639_1):
            problems.append(
                f"`language` entry {code!r} is not an ISO 639-1/639-3 language code (e.g. 'en', 'fr', 'yue')."
            )


def _check_license(metadata: Mapping[str, Any], problems: list[str]) -> None:
    license_id = metadata["license"]
    if not isinstance(license_id, str) or license_id not in HUB_LICENSES:
        problems.append(
            f"`license` {license_id!r} is not a licence identifier the Hub knows; use one of "
            "https://huggingface.co/docs/hub/repositories-licenses, or 'other' with `license_name`/`license_link`."
        )
    elif license_id == "other":
        name = metadata.get("license_name")
        if not isinstance(name, str) or not _LICENSE_NAME_PATTERN.match(name):
            problems.append("`license: other` needs a `license_name` made of lowercase letters, digits, '-' and '.'.")
        if not isinstance(metadata.get("license_link"), str):
            problems.append("`license: other` needs a `license_link` (a URL or a file in the repository).")


def _check_eval_result(result: Any, where: str, problems: list[str]) -> None:
    if not isinstance(result, Mapping):
        problems.append(f"{where} must be a mapping with `task`, `dataset` and `metrics`.")
        return
    task = result.get("task")
    if not isinstance(task, Mapping) or not isinstance(task.get("type"), str):
        problems.append(f"{where}.task must be a mapping with a string `type`.")
    dataset = result.get("dataset")
    if not isinstance(dataset, Mapping) or not all(isinstance(dataset.get(key), str) for key in ("type", "name")):
        problems.append(f"{where}.dataset must be a mapping with string `type` and `name`.")
    metrics = result.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        problems.append(f"{where}.metrics must be a non-empty list.")
        return
    for index, metric in enumerate(metrics):
        if not isinstance(metric, Mapping) or not isinstance(metric.get("type"), str) or metric.get("value") is None:
            problems.append(f"{where}.metrics[{index}] must be a mapping with a string `type` and a `value`.")


def _check_model_index(metadata: Mapping[str, Any], problems: list[str]) -> None:
    model_index = metadata["model-index"]
    if not isinstance(model_index, list) or not model_index:
        problems.append("`model-index` must be a non-empty list of `{name, results}` entries.")
        return
    for index, entry in enumerate(model_index):
        where = f"model-index[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry.get("name"):
            problems.append(f"{where} must be a mapping with a non-empty string `name`.")
            continue
        results = entry.get("results")
        if not isinstance(results, list):
            problems.append(f"{where}.results must be a list.")
            continue
        for result_index, result in enumerate(results):
            _check_eval_result(result, f"{where}.results[{result_index}]", problems)


def _check_metadata(metadata: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if "license" in metadata:
        _check_license(metadata, problems)
    if "language" in metadata:
        _check_language(metadata, problems)
    if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in HUB_PIPELINE_TAGS:
        problems.append(f"`pipeline_tag` {metadata['pipeline_tag']!r} is not a task the Hub knows.")
    for key in ("library_name", "model_name"):
        if key in metadata and not (isinstance(metadata[key], str) and metadata[key]):
            problems.append(f"`{key}` must be a non-empty string, got {metadata[key]!r}.")
    for key in ("tags", "metrics"):
        if key in metadata and not _is_str_list(metadata[key]):
            problems.append(f"`{key}` must be a list of non-empty strings, got {metadata[key]!r}.")
    if "datasets" in metadata:
        _check_str_or_str_list(metadata, "datasets", problems)
    if "base_model" in metadata:
        for repo_id in _check_str_or_str_list(metadata, "base_model", problems):
            if not is_hub_repo_id(repo_id):
                problems.append(f"`base_model` entry {repo_id!r} is not a Hub model id such as 'org/name'.")
    if "base_model_relation" in metadata and metadata["base_model_relation"] not in _BASE_MODEL_RELATIONS:
        problems.append(f"`base_model_relation` must be one of {sorted(_BASE_MODEL_RELATIONS)}.")
    if "model-index" in metadata:
        _check_model_index(metadata, problems)
    return problems


def split_front_matter(content: str) -> tuple[dict[str, Any], str]:
    """Splits a card's text into its YAML metadata (a dict, empty when absent) and its Markdown body."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.DOTALL)
    if match is None:
        return {}, content
    try:
        metadata = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        raise ModelCardMetadataError(f"The card's YAML metadata does not parse: {error}") from error
    if not isinstance(metadata, dict):
        raise ModelCardMetadataError("The card's YAML metadata must be a mapping (`key: value` lines).")
    return metadata, content[match.end() :]


def validate_model_card_metadata(metadata: Mapping[str, Any]) -> None:
    """Checks model-card metadata against the Hub's rules, offline.

    Args:
        metadata (`Mapping[str, Any]`):
            The card's YAML metadata, e.g. `ModelCard.data.to_dict()` or the first value of `split_front_matter`.

    Raises:
        `ModelCardMetadataError`: listing every rule the metadata breaks (licence id, language codes, pipeline tag,
        field types, `model-index` structure).
    """
    problems = _check_metadata(metadata)
    if problems:
        raise ModelCardMetadataError("Invalid model card metadata:\n- " + "\n- ".join(problems))


def validate_model_card(content: str) -> dict[str, Any]:
    """Validates the full text of a card (`README.md`) offline and returns its parsed metadata."""
    metadata, _ = split_front_matter(content)
    validate_model_card_metadata(metadata)
    return metadata
