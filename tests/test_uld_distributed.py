"""ULDTrainer under DDP over gloo on CPU (2 processes launched by `accelerate launch`) against a single process.

`accelerate launch --cpu --num_processes 2` starts one process unless MPI is set up, so the processes are started with
the torchrun launcher (`--multi_gpu`); `use_cpu=True` in the config then makes accelerate run DDP over gloo on CPU.

The same file is the training script: run as `__main__` it trains the tiny student for a few steps and writes the
per-step losses to a JSON file. Each step sees the whole 4-sample dataset (global batch 4), so the two runs see the same
samples at every step whatever the shuffling, and the 2-process run splits them into two micro-batches with different
numbers of completion tokens: its per-step losses match the single process only if both ULD terms are normalised by
token counts gathered across processes.
"""

import json
import os
import sys

import pytest

from tests.launch_fixtures import free_port, run_script

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
GLOBAL_BATCH_SIZE = 4  # the dataset size: every step sees every sample


def train(output_dir: str, per_device_batch_size: int, losses_file: str) -> None:
    from eurobert_hf.trainers import ULDConfig, ULDTrainer
    from tests.uld_fixtures import (
        prompt_completion_dataset,
        student_tokenizer,
        teacher_tokenizer,
        tiny_student,
        tiny_teacher,
    )

    args = ULDConfig(
        output_dir,
        bf16=False,
        report_to="none",
        gradient_checkpointing=False,
        use_cpu=True,
        per_device_train_batch_size=per_device_batch_size,
        max_steps=STEPS,
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-2,
        seed=0,
        disable_tqdm=True,
        average_tokens_across_devices=True,
    )
    trainer = ULDTrainer(
        model=tiny_student(),
        teacher_model=tiny_teacher(),
        args=args,
        # One completion far longer than the others, so that the two processes hold different numbers of tokens.
        train_dataset=prompt_completion_dataset(6).select([0, 3, 4, 5]),
        processing_class=student_tokenizer(),
        teacher_processing_class=teacher_tokenizer(),
    )
    trainer.train()
    if trainer.is_world_process_zero():
        logs = [log for log in trainer.state.log_history if "loss" in log]
        with open(losses_file, "w") as handle:
            json.dump(logs, handle)


@pytest.mark.slow
def test_ddp_matches_a_single_process(tmp_path):
    script = os.path.abspath(__file__)
    single, ddp = str(tmp_path / "single.json"), str(tmp_path / "ddp.json")
    run_script([sys.executable, script, str(tmp_path / "single"), str(GLOBAL_BATCH_SIZE), single], tmp_path)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    run_script([*launch, script, str(tmp_path / "ddp"), str(GLOBAL_BATCH_SIZE // 2), ddp], tmp_path)

    with open(single) as handle:
        single_logs = json.load(handle)
    with open(ddp) as handle:
        ddp_logs = json.load(handle)
    assert len(single_logs) == len(ddp_logs) == STEPS
    for single_log, ddp_log in zip(single_logs, ddp_logs):
        for key in ("loss", "ce_loss", "uld_loss"):
            assert ddp_log[key] == pytest.approx(single_log[key], rel=1e-5, abs=1e-5), (key, single_log, ddp_log)
    # The student learns: the losses are not constant, so matching them checks the gradients too.
    assert single_logs[-1]["loss"] != single_logs[0]["loss"]


def test_scripts_start_without_the_accelerate_state_of_the_test_process(monkeypatch):
    # On transformers 4.x any config built earlier in this process leaves its precision here (see launch_fixtures):
    # inherited, it made the single process train in bf16 while the launched processes ran in float32.
    from tests.launch_fixtures import script_environment

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_SHARDING_STRATEGY", "FULL_SHARD")
    env = script_environment()
    assert not [name for name in env if name.startswith(("ACCELERATE_", "FSDP_"))]
    assert env["PYTHONPATH"] == REPO_ROOT and env["PATH"] == os.environ["PATH"]


if __name__ == "__main__":
    # Import the package and the test helpers by their full names, from the repository root rather than from tests/.
    sys.path[0] = REPO_ROOT
    train(output_dir=sys.argv[1], per_device_batch_size=int(sys.argv[2]), losses_file=sys.argv[3])
