"""Atomic, Hub-ready saving and pushing of models with their tokenizer, card and (for EuroBERT) remote code."""

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, get_token

from .card_validation import is_hub_repo_id
from .cards import eurobert_task, render_eurobert_model_card
from .remote_code import REMOTE_CODE_FILES, export_remote_code, remove_dangling_auto_map

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_directory(save_directory: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty staging folder that replaces `save_directory` only if the block finishes without error.

    The staging folder sits next to the target (same file system) and is moved into place with `os.replace`, so the
    target path never holds a half-written model: after an exception or a kill it is either absent or unchanged.

    Args:
        save_directory (`str` or `os.PathLike`):
            The final folder.
        overwrite (`bool`, *optional*, defaults to `False`):
            Whether an existing, non-empty `save_directory` may be replaced.

    Raises:
        `FileExistsError`: if `save_directory` is a file, or a non-empty folder and `overwrite` is `False`.
    """
    target = Path(save_directory).absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder; choose another output path.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} is not empty; pass `overwrite=True` to replace it or choose another path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.incomplete-", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)
        if target.exists():
            previous = target.with_name(f".{target.name}.previous-{uuid.uuid4().hex[:8]}")
            os.replace(target, previous)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(previous, target)
                raise
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# Lists the top-level files and folders the last save wrote, so that the next one replaces exactly those.
MANIFEST_NAME = ".eurobert-hf-files.json"
_CONFIG_NAME = "config.json"


def _is_plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def _previous_save(folder: Path) -> list[str]:
    """The entries the previous save wrote into `folder`, from its manifest (none without a readable one)."""
    try:
        names = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [name for name in names if _is_plain_name(name)] if isinstance(names, list) else []


def _swap_in(staging: Path, target: Path, entries: list[str]) -> None:
    """Moves the previous save's entries (and any that the new save replaces) aside, then the new ones in; restores
    the previous ones if a move fails. `config.json` goes out first and comes in last, so that a process killed
    between the two leaves a folder that does not load, never a mix of two models (the previous files then wait in
    the hidden `.<name>.previous-*` folder next to it)."""
    outgoing = {*_previous_save(target), *entries, MANIFEST_NAME}
    outgoing = sorted(
        (name for name in outgoing if os.path.lexists(target / name)), key=lambda name: name != _CONFIG_NAME
    )
    incoming = sorted([*entries, MANIFEST_NAME], key=lambda name: (name == _CONFIG_NAME, name == MANIFEST_NAME))
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.parent))
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in outgoing:
            os.replace(target / name, backup / name)
            moved_out.append(name)
        for name in incoming:
            os.replace(staging / name, target / name)
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            os.replace(target / name, staging / name)
        for name in reversed(moved_out):
            os.replace(backup / name, target / name)
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def model_folder_staging(save_directory: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty staging folder whose content replaces the previous save's in `save_directory` when the block
    finishes without error.

    Unlike `atomic_directory`, the folder itself is kept: a save records what it wrote (`MANIFEST_NAME`), and the next
    one replaces those files and removes the ones it no longer writes (a previous tokenizer's `chat_template.jinja`),
    while checkpoints (`checkpoint-*`, `last-checkpoint`, `runs/`) and every file it did not write stay untouched. The
    new files are written next to the folder and moved in only when complete, so an exception or a kill while writing
    leaves the previous model as it was.

    Args:
        save_directory (`str` or `os.PathLike`):
            The model folder.
        overwrite (`bool`, *optional*, defaults to `False`):
            Whether a non-empty `save_directory` may be written into.

    Raises:
        `FileExistsError`: if `save_directory` is a file, or a non-empty folder and `overwrite` is `False`.
    """
    target = Path(save_directory).absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder; choose another output path.")
    occupied = target.is_dir() and any(target.iterdir())
    if occupied and not overwrite:
        raise FileExistsError(f"{target} is not empty; pass `overwrite=True` to replace it or choose another path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.incomplete-", dir=target.parent))
    try:
        yield staging
        entries = sorted(path.name for path in staging.iterdir())
        manifest = {"files": entries, "written_by": "eurobert-hf"}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(staging, 0o755)
        if occupied:
            _swap_in(staging, target, entries)
        else:
            os.replace(staging, target)  # onto a missing or empty folder: one atomic rename
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_eurobert(model: Any) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "eurobert"


def default_eurobert_card(model: Any, model_id: str, *, remote_code: bool = True) -> ModelCard | None:
    """The card `save_for_hub`/`push_to_hub` write for a EuroBERT head when none is given (`None` for other models).

    The task comes from the head class; `base_model` from `model.name_or_path` when that is a Hub id (the checkpoint
    it was fine-tuned from), not a local folder.
    """
    try:
        task = eurobert_task(type(model).__name__)
    except ValueError:
        return None
    origin = getattr(model, "name_or_path", "") or ""
    base_model = origin if is_hub_repo_id(origin) and not os.path.exists(origin) else None
    return render_eurobert_model_card(model_id, task=task, model=model, base_model=base_model, remote_code=remote_code)


def write_model_folder(
    model: Any,
    folder: str | os.PathLike,
    *,
    tokenizer: Any = None,
    model_card: ModelCard | None = None,
    remote_code: bool | None = None,
    model_id: str | None = None,
    **save_kwargs: Any,
) -> Path:
    """Writes model, tokenizer, card and remote code into an existing, empty folder (no atomicity; see `save_for_hub`).

    With `remote_code=None`, EuroBERT models get their remote code and other models none. With `remote_code=False`,
    a EuroBERT folder holds no code. Whatever the model, no JSON file of the folder keeps an `auto_map` entry into
    another repository or to a file it does not contain (`remove_dangling_auto_map`), and a card that advises
    `trust_remote_code=True` is refused for a folder without model code of its own. Without `model_card`, a EuroBERT
    head gets `default_eurobert_card(model, model_id)` (`model_id` defaults to the folder's name).
    """
    folder = Path(folder)
    if hasattr(model, "peft_config"):
        raise ValueError(
            "This is a PEFT model: its `save_pretrained` writes only the adapter. Merge it first "
            "(`model = model.merge_and_unload()`) to share a standalone model, or push the adapter with "
            "`model.push_to_hub(repo_id)`."
        )
    eurobert = _is_eurobert(model)
    if remote_code and not eurobert:
        raise ValueError(
            f"`remote_code=True` exports EuroBERT's code, but this is a {type(model).__name__} "
            f"({getattr(model.config, 'model_type', None)!r}); leave `remote_code` unset for other models."
        )
    model.save_pretrained(folder, **save_kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if eurobert and remote_code is not False:
        export_remote_code(folder)
    elif eurobert:
        # `save_pretrained` copies the code of registered classes; this folder is asked to hold none.
        for name in REMOTE_CODE_FILES:
            (folder / name).unlink(missing_ok=True)
    remove_dangling_auto_map(folder)
    if model_card is None and eurobert:
        model_card = default_eurobert_card(model, model_id or folder.name, remote_code=remote_code is not False)
    if model_card is not None:
        if "trust_remote_code=True" in model_card.text and not _holds_model_code(folder):
            raise ValueError(
                "The model card tells users to load with `trust_remote_code=True`, but the folder holds no model code "
                "of its own, so that flag could only run code from elsewhere. Render the card with "
                "`remote_code=False` (or save with `remote_code=True`)."
            )
        model_card.save(folder / "README.md")
    return folder


def _holds_model_code(folder: Path) -> bool:
    """Whether the saved model's `config.json` names code (after `remove_dangling_auto_map`, code in the folder)."""
    config_path = folder / "config.json"
    return config_path.is_file() and bool(json.loads(config_path.read_text(encoding="utf-8")).get("auto_map"))


def save_for_hub(
    model: Any,
    save_directory: str | os.PathLike,
    *,
    tokenizer: Any = None,
    model_card: ModelCard | None = None,
    remote_code: bool | None = None,
    overwrite: bool = False,
    **save_kwargs: Any,
) -> Path:
    """Saves a model as a Hub-ready folder: weights, config, tokenizer, card and (EuroBERT) remote code.

    The files are written next to the folder and moved in only when complete (`model_folder_staging`), so a failed or
    killed save leaves the previous content as it was.

    Args:
        model (`PreTrainedModel`):
            The model to save.
        save_directory (`str` or `os.PathLike`):
            The output folder.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Saved with the model.
        model_card (`ModelCard`, *optional*):
            Saved as `README.md` (see `render_eurobert_model_card` / `render_uld_model_card`). Defaults to
            `default_eurobert_card` for EuroBERT heads (named after the folder), and to no card for other models.
        remote_code (`bool`, *optional*):
            Whether to export EuroBERT's self-contained code and a full `auto_map` (`export_remote_code`). Defaults to
            `True` for EuroBERT models; `True` for another model type raises `ValueError`.
        overwrite (`bool`, *optional*, defaults to `False`):
            Whether a non-empty `save_directory` may be written into. The files of the previous save are then replaced
            or removed; checkpoints and files that no save wrote stay (see `model_folder_staging`).
        save_kwargs:
            Passed to `model.save_pretrained` (e.g. `max_shard_size`).

    Returns:
        `Path`: the saved folder.
    """
    with model_folder_staging(save_directory, overwrite=overwrite) as staging:
        write_model_folder(
            model,
            staging,
            tokenizer=tokenizer,
            model_card=model_card,
            remote_code=remote_code,
            model_id=Path(save_directory).name,
            **save_kwargs,
        )
    return Path(save_directory)


def _refuse_files_containing(folder: Path, secret: str | None) -> None:
    if not secret:
        return
    needle = secret.encode()
    for path in folder.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            raise ValueError(
                f"Refusing to upload: {path.name} contains your Hugging Face access token. Remove it from the "
                "object that wrote this file (e.g. a config or tokenizer attribute) and save again."
            )


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    tokenizer: Any = None,
    model_card: ModelCard | None = None,
    remote_code: bool | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Pushes a model with its tokenizer, card and (EuroBERT) remote code to the Hub in a single commit.

    The folder is first written by `write_model_folder` into a temporary directory and checked not to contain the
    access token, then uploaded with `huggingface_hub.HfApi.upload_folder` (the repository is created if needed).

    Args:
        model (`PreTrainedModel`):
            The model to push.
        repo_id (`str`):
            `"user/name"` or `"org/name"`.
        tokenizer (`PreTrainedTokenizerBase`, *optional*), model_card (`ModelCard`, *optional*),
        remote_code (`bool`, *optional*):
            As in `save_for_hub` (the default EuroBERT card is rendered for `repo_id`).
        private (`bool`, *optional*):
            Visibility of a newly created repository.
        token (`str`, *optional*):
            A write token; defaults to the logged-in token. It is sent in the `Authorization` header only.
        revision (`str`, *optional*):
            The branch to push to.
        commit_message (`str`, *optional*):
            Defaults to "Upload <model class> with eurobert-hf".
        create_pr (`bool`, *optional*, defaults to `False`):
            Whether to open a pull request instead of committing to the branch.

    Returns:
        `huggingface_hub.CommitInfo`: the commit (its `oid`, `commit_url`, and `pr_url` when `create_pr`).
    """
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="eurobert-hf-push-") as folder:
        write_model_folder(
            model, folder, tokenizer=tokenizer, model_card=model_card, remote_code=remote_code, model_id=repo_id
        )
        _refuse_files_containing(Path(folder), token or get_token())
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        logger.info("Uploading %s to %s", type(model).__name__, repo_id)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {type(model).__name__} with eurobert-hf",
            create_pr=create_pr,
        )
