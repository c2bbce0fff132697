"""Sharing EuroBERT and ULD models on the Hugging Face Hub.

- `export_remote_code`: self-contained remote code and a full, same-repository `auto_map` in a saved EuroBERT folder.
- `save_for_hub` / `push_to_hub`: model + tokenizer + card (+ remote code) saved atomically (replacing only the previous
  save's files, `model_folder_staging`), or pushed in one commit.
- `render_eurobert_model_card` / `render_uld_model_card`: cards from the templates in `model_cards/`, validated
  offline against the Hub's metadata rules (`validate_model_card`).
- `save_sentence_transformer`: EuroBERT as a sentence-transformers embedding model.
"""

from .card_validation import (
    HUB_LICENSES,
    HUB_PIPELINE_TAGS,
    ModelCardMetadataError,
    validate_model_card,
    validate_model_card_metadata,
)
from .cards import (
    EUROBERT_CITATION,
    EUROBERT_LANGUAGES,
    EUROBERT_TASKS,
    ULD_CITATION,
    eurobert_task,
    eval_results_from_metrics,
    framework_versions,
    render_eurobert_model_card,
    render_uld_model_card,
    training_hyperparameters,
)
from .embeddings import save_sentence_transformer, sentence_transformers_files
from .remote_code import (
    EUROBERT_AUTO_MAP,
    REMOTE_CODE_FILES,
    export_remote_code,
    is_foreign_reference,
    prune_auto_map,
    remove_dangling_auto_map,
)
from .saving import (
    MANIFEST_NAME,
    atomic_directory,
    default_eurobert_card,
    model_folder_staging,
    push_to_hub,
    save_for_hub,
    write_model_folder,
)

__all__ = [
    "EUROBERT_AUTO_MAP",
    "EUROBERT_CITATION",
    "EUROBERT_LANGUAGES",
    "EUROBERT_TASKS",
    "HUB_LICENSES",
    "HUB_PIPELINE_TAGS",
    "MANIFEST_NAME",
    "REMOTE_CODE_FILES",
    "ULD_CITATION",
    "ModelCardMetadataError",
    "atomic_directory",
    "default_eurobert_card",
    "prune_auto_map",
    "eval_results_from_metrics",
    "eurobert_task",
    "export_remote_code",
    "framework_versions",
    "is_foreign_reference",
    "model_folder_staging",
    "push_to_hub",
    "remove_dangling_auto_map",
    "render_eurobert_model_card",
    "render_uld_model_card",
    "save_for_hub",
    "save_sentence_transformer",
    "sentence_transformers_files",
    "training_hyperparameters",
    "validate_model_card",
    "validate_model_card_metadata",
    "write_model_folder",
]
