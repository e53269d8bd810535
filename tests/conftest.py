"""Offline, CPU, tiny models. Tiny models are built once per machine into a shared cache."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MINDPRINT_TINY_DIR", str(Path(tempfile.gettempdir()) / "mindprint-tiny-tests"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["WANDB_MODE"] = "offline"

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, module: str = "mindprint.run", cwd: Path = REPO, timeout: int = 600):
    """`python -m mindprint.run ARGS` (or another entry point) as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny():
    from mindprint.tiny import KINDS, ensure_tiny

    return {kind: ensure_tiny(kind) for kind in KINDS}
