"""The console is ours: what installed libraries log, while being imported or on every call, stays off it.

`quiet_libraries()` runs when the package is imported (mindprint/__init__.py), so before any entry point
(run, train_reward, export, compare, bench, voice) imports a library. Libraries log while being imported:
bitsandbytes, on CPUs with AVX512-BF16, asks the `kernels` package for a hub kernel, which warns that the hub
is offline; DeepSpeed announces the accelerator it picked. A logger set after that import is too late, and a
user's one-line error would come out as two lines. Which library does it changes with every release, so no list
is kept: every installed library is quieted before its first module runs. Standard library only (TRL's benchmark
venv imports the package too).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import site
import sys
import sysconfig
import warnings

# Installed libraries whose log lines are meant for the user: Hydra's launcher says where a sweep's jobs go.
SPEAKING = ("hydra", "hydra_plugins")
OWN_NAMES = {"deepspeed": "DeepSpeed"}  # a library whose logger is not named after its package
USER_VERBOSITY = "TRANSFORMERS_VERBOSITY" in os.environ  # the user's choice, read before we set a default


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _library_dirs() -> tuple[str, ...]:
    """Where installed distributions live (this environment's site-packages, the user's), not the standard
    library, a checkout or a user's own modules (a reward rule's `module:function` keeps its warnings)."""
    paths = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        paths.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(p), "") for p in paths)


def _quiet(name: str) -> None:
    """The library's top-level logger at ERROR with an errors-only filter, and its own handlers (a library that
    prints through one) letting only errors pass. The logger's filter outlasts a level the library sets while being
    imported and then logs at (DeepSpeed announces its accelerator so); the handlers' filters cover its child
    loggers once it is imported."""
    for logger in (logging.getLogger(name), logging.getLogger(OWN_NAMES[name]) if name in OWN_NAMES else None):
        if logger is None or (name == "transformers" and USER_VERBOSITY):
            continue
        logger.setLevel(logging.ERROR)
        for holder in (logger, *logger.handlers):
            if _errors_only not in holder.filters:
                holder.addFilter(_errors_only)


class QuietOnImport(importlib.abc.MetaPathFinder):
    """Quiets each installed top-level package before its first module runs, and again once it is imported.

    A library's loggers are named after its modules (`kernels._internals.hf_hub`), so the top-level one covers
    them all. Some libraries set a level or a handler of their own while being imported (transformers, datasets,
    torch, dill, DeepSpeed): the second pass, when their import is done, undoes that. Sits just before the path
    finder; finds what it would find, and leaves the standard library, namespace packages and everything outside
    site-packages (a checkout, a user's reward rule) to it.
    """

    def __init__(self) -> None:
        self.libraries = _library_dirs()

    def find_spec(self, name, path=None, target=None):
        if path is not None or name in sys.stdlib_module_names or name.startswith(("mindprint", *SPEAKING)):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is None or spec.loader is None or not os.path.realpath(spec.origin or "").startswith(self.libraries):
            return None
        _quiet(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _quiet(name)

        spec.loader.exec_module = exec_module
        return spec


def quiet_libraries() -> None:
    """Installed libraries' loggers at error level, set before the libraries are imported (and for those already
    imported).

    transformers and datasets read their level from the environment when imported: TRANSFORMERS_VERBOSITY is left
    alone if the user set it (TRANSFORMERS_VERBOSITY=info brings back, for example, the load report on the value
    model's freshly initialised score head, which is by design here).
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    if not any(isinstance(f, QuietOnImport) for f in sys.meta_path):
        finder = QuietOnImport()
        for name, module in list(sys.modules.items()):
            origin = os.path.realpath(getattr(module, "__file__", None) or "")
            if "." not in name and not name.startswith(("mindprint", *SPEAKING)) and origin.startswith(finder.libraries):
                _quiet(name)
        at = next((i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder), len(sys.meta_path))
        sys.meta_path.insert(at, finder)
    # peft and TRL's configs use transformers' names from before its `activation_checkpointing` rename, once per
    # run: not ours to act on
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)


def hide_progress_bars() -> None:
    """transformers' weight-loading and -writing bars and datasets' bars would bury our table and progress bar.
    Called once the libraries are needed (importing them takes seconds): by the entry points, and by the builders
    of the tiny models, which a config's `${tiny:...}` may run before any entry point does."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
