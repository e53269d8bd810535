"""The console is ours: what libraries log while being imported, or on every call, stays off it.

`quiet_libraries()` runs when the package is imported (mindprint/__init__.py), so before any entry
point (run, train_reward, export, compare, bench, voice) imports a library. Some libraries log while
being imported: bitsandbytes, on CPUs with AVX512-BF16, warns that it cannot load the `kernels`
package; DeepSpeed announces the accelerator it picked. A logger set after that import is too late,
and a user's one-line error would come out as two lines. Standard library only (TRL's benchmark venv
imports the package too).
"""

from __future__ import annotations

import logging
import os
import warnings

QUIET_LOGGERS = (
    # at import on some CPUs (the `kernels` package), and on every 8-bit matmul (fp32 inputs cast to fp16)
    "bitsandbytes",
    # offline, every retry before from_pretrained fails; our one-line error says it all
    "huggingface_hub",
    # imported by optuna (its database storage) under hydra/sweeper=optuna: one INFO line per plugin it sets up
    "alembic",
)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_libraries() -> None:
    """Library loggers at error level only, set before the libraries are imported.

    TRANSFORMERS_VERBOSITY (read by transformers when imported) is left alone if the user set it:
    TRANSFORMERS_VERBOSITY=info brings back, for example, the load report on the value model's
    freshly initialised score head, which is by design here.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # DeepSpeed sets its logger's level itself when imported, and prints on its own stdout handler: a filter
    # on that logger outlasts the import.
    deepspeed = logging.getLogger("DeepSpeed")
    if _errors_only not in deepspeed.filters:
        deepspeed.addFilter(_errors_only)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # peft asks transformers for a renamed attribute once per run; not ours to act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def hide_progress_bars() -> None:
    """transformers' weight-loading bars and datasets' bars would bury our table and progress bar.
    Called by the entry points once the libraries are needed (importing them takes seconds)."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
