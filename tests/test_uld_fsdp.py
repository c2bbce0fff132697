"""ULDTrainer under FSDP2 (through accelerate) with 2 CPU processes over gloo, against a single process.

Two setups, each trained for a few steps by 2 processes and by one, with the same global batch: a live teacher, which
the trainer shards with FSDP like the student, and a teacher cache (no teacher in memory). The per-step losses and the
saved student (gathered into a full state dict by `save_model`) must match the single process.

accelerate 1.15 enables FSDP only over accelerator process groups: with `use_cpu=True` its state stays plain
data-parallel (`MULTI_CPU`) and drops the FSDP plugin that `accelerate launch --use_fsdp` configures. The training
script therefore lets accelerate build its state as for a GPU group and then sets it back to CPU (see
`_accelerate_fsdp_on_cpu`): everything after that, the FSDP2 wrapping included, is accelerate's and the trainer's own
code. Torch's FSDP2 itself runs on CPU over gloo.

The same file is the training script: run as `__main__` it trains the tiny student and writes the per-step losses and
the saved student's path to a JSON file.
"""

import contextlib
import json
import os
import sys

import pytest
import torch

from tests.launch_fixtures import free_port, run_script

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
GLOBAL_BATCH_SIZE = 4  # the dataset size: every step sees every sample
TEACHER_CACHE_TOP_K = 16


@contextlib.contextmanager
def _accelerate_fsdp_on_cpu(args):
    """Builds accelerate's state with FSDP on a CPU process group (see the module docstring)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    # The training arguments set up (once) the process group started by the launcher, as a CPU group over gloo.
    assert args.device.type == "cpu"
    state = PartialState()
    if state.distributed_type != DistributedType.MULTI_CPU:
        yield
        return
    state.distributed_type = DistributedType.MULTI_GPU
    try:
        yield
    finally:
        # Creating the `Accelerator` turns the (shared) distributed type into FSDP; anything else is undone.
        if state.distributed_type != DistributedType.FSDP:
            state.distributed_type = DistributedType.MULTI_CPU
    if AcceleratorState().distributed_type != DistributedType.FSDP:
        raise RuntimeError("accelerate did not enable FSDP: launch with `accelerate launch --use_fsdp`.")


def _uld_dataset(teacher, cached: bool, max_length: int | None):
    from eurobert_hf.trainers.teacher_cache import cache_teacher_probs
    from eurobert_hf.trainers.uld_data import prepare_uld_dataset
    from tests.uld_fixtures import prompt_completion_dataset, student_tokenizer, teacher_tokenizer

    # One completion far longer than the others, so that the two processes hold different numbers of tokens.
    dataset = prompt_completion_dataset(6).select([0, 3, 4, 5])
    if not cached:
        return dataset
    prepared = prepare_uld_dataset(dataset, student_tokenizer(), teacher_tokenizer(), max_length=max_length)
    with torch.no_grad():
        return cache_teacher_probs(teacher, prepared, top_k=TEACHER_CACHE_TOP_K, batch_size=GLOBAL_BATCH_SIZE)


def _unsharded_parameters(model: torch.nn.Module) -> list[str]:
    from torch.distributed.tensor import DTensor

    return [name for name, parameter in model.named_parameters() if not isinstance(parameter, DTensor)]


def _layers_are_sharded(model: torch.nn.Module) -> bool:
    """Whether each decoder layer is its own FSDP unit, gathered alone rather than with the whole model."""
    from torch.distributed.fsdp import FSDPModule

    return all(isinstance(layer, FSDPModule) for layer in model.model.layers)


def train(output_dir: str, per_device_batch_size: int, teacher_path: str | None, results_file: str) -> None:
    """Trains with the teacher saved at `teacher_path` (loaded by the trainer), or without teacher on its cache."""
    from eurobert_hf.trainers import ULDConfig, ULDTrainer
    from tests.uld_fixtures import student_tokenizer, teacher_tokenizer, tiny_student, tiny_teacher

    args = ULDConfig(
        output_dir,
        bf16=False,
        report_to="none",
        gradient_checkpointing=False,
        use_cpu=True,
        per_device_train_batch_size=per_device_batch_size,
        per_device_eval_batch_size=per_device_batch_size,
        max_steps=STEPS,
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-2,
        seed=0,
        disable_tqdm=True,
        average_tokens_across_devices=True,
        uld_top_k=None if teacher_path else TEACHER_CACHE_TOP_K,
    )
    train_dataset = _uld_dataset(tiny_teacher(), teacher_path is None, args.max_length)
    with _accelerate_fsdp_on_cpu(args):
        trainer = ULDTrainer(
            model=tiny_student(),
            teacher_model=teacher_path,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=train_dataset,
            processing_class=student_tokenizer(),
            teacher_processing_class=teacher_tokenizer(),
        )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(os.path.join(output_dir, "student"))
    if trainer.is_world_process_zero():
        results = {
            "fsdp": trainer.is_fsdp_enabled,
            "unsharded_student": _unsharded_parameters(trainer.model_wrapped),
            "unsharded_teacher": None if teacher_path is None else _unsharded_parameters(trainer.teacher_model),
            "teacher_layers_sharded": teacher_path is not None and _layers_are_sharded(trainer.teacher_model),
            "logs": [log for log in trainer.state.log_history if "loss" in log],
            "eval": metrics,
        }
        with open(results_file, "w") as handle:
            json.dump(results, handle)


def _saved_weights(folder: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ["sharded", "cached"])
def test_fsdp_matches_a_single_process(tmp_path, teacher):
    from tests.uld_fixtures import tiny_student, tiny_teacher

    script = os.path.abspath(__file__)
    mode = "cached"
    if teacher == "sharded":
        # Loaded by the trainer, so that under `cpu_ram_efficient_loading` only the main process reads the weights.
        mode = str(tmp_path / "teacher")
        tiny_teacher().save_pretrained(mode)
    single, fsdp = tmp_path / "single", tmp_path / "fsdp"
    single_command = [sys.executable, script, str(single), str(GLOBAL_BATCH_SIZE), mode, str(tmp_path / "single.json")]
    run_script(single_command, tmp_path)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2"]
    launch += ["--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP"]
    launch += ["--fsdp_cpu_ram_efficient_loading", "true", "--fsdp_sync_module_states", "true"]
    launch += ["--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    run_script([*launch, script, str(fsdp), str(GLOBAL_BATCH_SIZE // 2), mode, str(tmp_path / "fsdp.json")], tmp_path)

    with open(tmp_path / "single.json") as handle:
        single_results = json.load(handle)
    with open(tmp_path / "fsdp.json") as handle:
        fsdp_results = json.load(handle)
    # The 2-process run really was FSDP: every parameter of the student and of the live teacher is a shard (the
    # teacher's too after its forwards), and the teacher is sharded layer by layer.
    assert fsdp_results["fsdp"] and fsdp_results["unsharded_student"] == []
    if teacher == "sharded":
        assert fsdp_results["unsharded_teacher"] == [] and fsdp_results["teacher_layers_sharded"]
    assert not single_results["fsdp"]

    single_logs, fsdp_logs = single_results["logs"], fsdp_results["logs"]
    assert len(single_logs) == len(fsdp_logs) == STEPS
    for single_log, fsdp_log in zip(single_logs, fsdp_logs):
        for key in ("loss", "ce_loss", "uld_loss"):
            assert fsdp_log[key] == pytest.approx(single_log[key], rel=1e-5, abs=1e-5), (key, single_log, fsdp_log)
    for key in ("eval_ce_loss", "eval_uld_loss"):
        assert fsdp_results["eval"][key] == pytest.approx(single_results["eval"][key], rel=1e-5, abs=1e-5), key
    assert single_logs[-1]["loss"] != single_logs[0]["loss"]

    # `save_model` gathers the shards into the same full student as the single process trained.
    single_weights, fsdp_weights = _saved_weights(str(single / "student")), _saved_weights(str(fsdp / "student"))
    initial_weights = tiny_student().state_dict()
    assert single_weights.keys() == fsdp_weights.keys()
    for name, weight in single_weights.items():
        torch.testing.assert_close(fsdp_weights[name], weight, rtol=1e-5, atol=1e-5, msg=name)
        assert not torch.equal(weight, initial_weights[name]), f"{name} did not train"


if __name__ == "__main__":
    # Import the package and the test helpers by their full names, from the repository root rather than from tests/.
    sys.path[0] = REPO_ROOT
    train(sys.argv[1], int(sys.argv[2]), None if sys.argv[3] == "cached" else sys.argv[3], sys.argv[4])
