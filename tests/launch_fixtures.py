"""Runs a training script in fresh processes (one, or several under a launcher) for the multi-process tests.

The processes get a clean environment: none of the `ACCELERATE_*` and `FSDP_*` variables of the test process. On
transformers 4.x, creating `TrainingArguments` writes its precision to `ACCELERATE_MIXED_PRECISION` in the process's
environment, where it stays, and a later `bf16=False` keeps it (TRL's configs, `ULDConfig` included, default to
`bf16=True`). Any earlier test of the same pytest process that builds a config would otherwise make a single process
started here train in bf16, while `accelerate launch --mixed_precision no` overrides the variable for the processes it
starts: the two runs would differ by the precision, not by the code under test.
"""

import os
import socket
import subprocess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INHERITED_PREFIXES_DROPPED = ("ACCELERATE_", "FSDP_")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def script_environment() -> dict[str, str]:
    """The test process's environment without its accelerate state, with the repository first on the path."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(_INHERITED_PREFIXES_DROPPED)}
    return {**env, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_script(command: list[str], cwd) -> None:
    """Runs `command` in `cwd` with [`script_environment`]; fails the test with the end of its output if it fails."""
    result = subprocess.run(
        command, env=script_environment(), cwd=str(cwd), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
