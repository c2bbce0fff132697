"""Security properties of the commands and of the Hub helpers: the Hub token reaches the Hub client only."""

import ast
import json
import os
import pickle
import re
import secrets
import shlex

import pytest
import torch
from transformers import Trainer

from eurobert_hf import ULDConfig
from eurobert_hf.cli import main
from eurobert_hf.hub import EUROBERT_TASKS, render_eurobert_model_card, render_uld_model_card
from eurobert_hf.modeling import EuroBertForMaskedLM
from tests.hub_fixtures import run_python, tiny_model, tiny_tokenizer
from tests.hub_server import FakeHub
from tests.test_cli import (
    CLASSIFICATION_ROWS,
    DOCUMENTS,
    QA_PAIRS,
    TEACHER_MERGES,
    byte_level_tokenizer,
    tiny_causal_lm_dir,
    write_jsonl,
)

# Every command that can push, run in one fresh interpreter (the Hub client reads `HF_ENDPOINT` at import) with every
# library logging at its most verbose level into the captured output.
RUN_COMMANDS = """
import json, logging, sys
import huggingface_hub, transformers
from eurobert_hf.cli import main
from eurobert_hf.hub import EUROBERT_TASKS, render_eurobert_model_card, render_uld_model_card

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
transformers.logging.set_verbosity_debug()
huggingface_hub.logging.set_verbosity_debug()
codes = [main(argv) for argv in RUNS]
print("RESULT:" + json.dumps(codes))
"""


def _push_flags(token: str, repo_id: str) -> list[str]:
    return [
        "--push_to_hub", "--hub_model_id", repo_id, "--hub_token", token, "--hub_strategy", "checkpoint",
        "--save_strategy", "steps", "--save_steps", "1", "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--use_cpu", "--report_to", "none", "--logging_steps", "1", "--disable_tqdm", "True", "--seed", "0",
    ]  # fmt: skip


@pytest.mark.slow  # one fresh interpreter that trains three tiny models: ~1 minute on 2 shared cores
def test_the_hub_token_reaches_only_the_hub_client(tmp_path):
    token = "hf_" + secrets.token_hex(16)
    eurobert = tmp_path / "eurobert"
    tiny_model(EuroBertForMaskedLM).save_pretrained(eurobert)
    tiny_tokenizer().save_pretrained(eurobert)
    student = tiny_causal_lm_dir(tmp_path / "student", byte_level_tokenizer(), seed=0)
    teacher = tiny_causal_lm_dir(tmp_path / "teacher", byte_level_tokenizer(TEACHER_MERGES, "</s>"), seed=1)
    documents = tmp_path / "docs.csv"
    documents.write_text("text\n" + "\n".join(f'"{document}"' for document in DOCUMENTS) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    runs = [
        ["finetune", "--model_name_or_path", str(eurobert), "--task", "text-classification",
         "--train_file", write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS), "--output_dir", str(out / "ft"),
         *_push_flags(token, "user/ft")],
        ["distill", "--model_name_or_path", student, "--teacher_model_name_or_path", teacher,
         "--train_file", write_jsonl(tmp_path / "pairs.jsonl", QA_PAIRS), "--output_dir", str(out / "distill"),
         *_push_flags(token, "user/distill")],
        ["pretrain", "--model_name_or_path", str(eurobert), "--train_file", str(documents), "--max_length", "24",
         "--output_dir", str(out / "pt"), *_push_flags(token, "user/pt")],
    ]  # fmt: skip

    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"}
        output = run_python(f"RUNS = {runs!r}\n" + RUN_COMMANDS, tmp_path / "run", env=env, with_stderr=True)
    codes = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT:"))[len("RESULT:") :])
    assert codes == [0, 0, 0], output

    # The Trainer's checkpoint pushes and the final push all happened, authenticated with the token.
    for repo_id in ("user/ft", "user/distill", "user/pt"):
        files = hub.files(repo_id)
        assert {"config.json", "README.md", "training_args.bin", "last-checkpoint/training_args.bin"} <= set(files)
    writes = [request for request in hub.state.requests if request.method == "POST"]
    assert writes and all(request.authorization == f"Bearer {token}" for request in writes)

    # ... and it is in no byte of what was written locally or uploaded, pickles included, nor in any output line.
    needle = token.encode()
    local_files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "training_args.bin" for path in local_files)
    leaks = [str(path) for path in local_files if needle in path.read_bytes()]
    leaks += [f"{repo_id}:{name}" for repo_id, repo in hub.state.repos.items() for name, content in repo.files.items()
              if needle in content]  # fmt: skip
    assert not leaks
    assert token not in output and token[3:] not in output


def test_a_pickled_uld_config_does_not_hold_the_hub_token(tmp_path):
    token = "hf_" + secrets.token_hex(16)
    config = ULDConfig(str(tmp_path), hub_token=token, report_to="none", use_cpu=True)
    torch.save(config, tmp_path / "training_args.bin")
    assert token.encode() not in (tmp_path / "training_args.bin").read_bytes()
    assert token.encode() not in pickle.dumps(config)
    # The object in memory keeps it, for the Trainer's own Hub calls.
    assert config.hub_token == token
    restored = pickle.loads(pickle.dumps(config))
    assert restored.hub_token is None and restored.uld_distillation_weight == config.uld_distillation_weight


@pytest.fixture(scope="module")
def eurobert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eurobert")
    tiny_model(EuroBertForMaskedLM).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def test_resume_command_is_shell_quoted_and_leaves_the_token_out(eurobert_dir, tmp_path, monkeypatch, capsys):
    token = "hf_" + secrets.token_hex(16)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    output_dir = tmp_path / 'it\'s a "run" $HOME'
    arguments = ["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                 "--train_file", write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS),
                 "--output_dir", str(output_dir), "--max_steps", "3", "--per_device_train_batch_size", "2",
                 "--use_cpu", "--report_to", "none", "--save_steps", "1", "--disable_tqdm", "True",
                 "--hub_token", token]  # fmt: skip
    training_step = Trainer.training_step

    def interrupted_third_step(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", interrupted_third_step)
    assert main(arguments) == 130
    err = capsys.readouterr().err
    assert token not in err
    command = err.strip().splitlines()[-1].strip()
    expected = ["eurobert-hf", *arguments[:-2], "--resume_from_checkpoint", str(output_dir / "checkpoint-2")]
    assert shlex.split(command) == expected
    # The token was lent to the Hub client for the command only.
    assert "HF_TOKEN" not in os.environ


def _python_blocks(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.DOTALL)


@pytest.mark.parametrize("task", [*EUROBERT_TASKS, "uld"])
def test_quick_start_code_quotes_any_model_id(task):
    model_id = 'user/we"ird\\\'id'
    if task == "uld":
        card = render_uld_model_card(model_id, base_model=None, teacher_model=None)
    else:
        card = render_eurobert_model_card(model_id, task=task)
    blocks = _python_blocks(str(card))
    assert blocks
    for block in blocks:
        strings = [node.value for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Constant)]
        assert model_id in strings, block
