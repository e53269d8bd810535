"""What every entry point shares: composing the config, and user mistakes as one line with exit code 2.

Light on purpose (Hydra and the standard library only): an entry point validates its config before it
imports torch and the model libraries, so a mistake is answered in about a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mindprint import config
from mindprint.assets import path as asset_path
from mindprint.errors import one_line
from mindprint.records import RECORD, RunDirInUse, holds_a_run, hydra_only, run_lock

CONF_DIR = Path(__file__).resolve().parent / "conf"  # shipped in the package (the checkout links conf/ to it)


def tiny_path(kind: str) -> str:
    """Directory of a tiny offline model, built on first use (the `${tiny:KIND}` resolver). `writer`: the voice
    demo's policy, pretrained on Python's Library Reference (mindprint.synthetic.pydoc_texts)."""
    if kind == "writer":
        from mindprint.synthetic.pydoc_texts import writer_texts
        from mindprint.synthetic.writer import ensure_writer

        return ensure_writer("pydoc", writer_texts())
    from mindprint.synthetic.tiny import ensure_tiny  # only when a config names one: building pulls in torch

    return ensure_tiny(kind)


def job_dirname(overrides: str, limit: int = 160) -> str:
    """A sweep job's directory name from its overrides (`${dirname:...}`): as they are up to `limit` characters; past
    it, cut with a digest of the whole, so a job with many overrides stays under the file system's 255 bytes and
    apart from its siblings."""
    if len(overrides.encode()) <= limit:
        return overrides
    digest = hashlib.sha256(overrides.encode()).hexdigest()[:10]
    return overrides.encode()[: limit - 11].decode(errors="ignore") + "-" + digest


def register() -> None:
    """The config schemas with Hydra, and the resolvers the config files use (`${asset:NAME}`, `${tiny:KIND}`,
    `${dirname:OVERRIDES}`)."""
    config.store_schemas()
    for resolver, fn in (("asset", asset_path), ("tiny", tiny_path), ("dirname", job_dirname)):
        if not OmegaConf.has_resolver(resolver):
            OmegaConf.register_new_resolver(resolver, fn)


def compose(overrides: list[str], config_name: str = "config") -> config.RunConfig:
    """The RunConfig that `python -m mindprint.run OVERRIDES` would run, without running it (with
    config_name="voice_pipeline", the VoiceRunConfig of `python -m mindprint.voice`)."""
    register()
    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra.compose(config_name, overrides=overrides)
    return OmegaConf.to_object(cfg)


def keep_record(run_dir: Path, cfg: DictConfig) -> None:
    """RUN_DIR/.hydra: the config, Hydra's config and the overrides the run was started with, written by the run that
    starts in this directory and never after (hydra.output_subdir is null, so Hydra does not write them either). A
    resume, accepted or refused, leaves them as they were: what `mindprint.compare` reads is what the run was."""
    if holds_a_run(run_dir):
        return
    hc = HydraConfig.get()
    tmp = run_dir / f"{RECORD}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    OmegaConf.save(cfg, tmp / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hc)}), tmp / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), tmp / "overrides.yaml")
    shutil.rmtree(run_dir / RECORD, ignore_errors=True)  # a stale one: no run was written under it
    os.replace(tmp, run_dir / RECORD)


@contextmanager
def run_directory(run_dir: Path, cfg: DictConfig) -> Iterator[None]:
    """Inside a Hydra job: the run directory locked for this process (the main one, under a launcher of several),
    and its record kept, before anything else is written."""
    if os.environ.get("RANK", "0") != "0":  # the main process holds the directory for all of them
        yield
        return
    with run_lock(run_dir):
        keep_record(run_dir, cfg)
        yield


def remove_if_untouched(run_dir: Path) -> None:
    """Remove a run directory that holds only what was written before the run started: a mistake leaves nothing
    behind, not even the empty `outputs/runs/DATE/` that Hydra made above it (parents inside the working directory
    that the removal leaves empty)."""
    if not (run_dir.is_dir() and hydra_only(run_dir)):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in run_dir.resolve().parents:
        if cwd not in parent.parents:
            break
        try:
            parent.rmdir()  # only if empty: a sibling run keeps it
        except OSError:
            break


def critic_key_warnings(cfg: config.RunConfig, overrides: list[str]) -> list[str]:
    """A line per critic-only key (config.CRITIC_KEYS) set on the command line with a critic-free algorithm.

    A warning, not an error: a sweep over algorithms (algo=ppo,grpo ppo.vf_coef=0.2) shares its keys, and an
    error would fail the critic-free jobs. Keys set by an experiment file are not warned about, for the same
    reason: experiments serve every algorithm.
    """
    if cfg.algo.critic:
        return []
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    return [f"warning: {key} has no effect with algo={cfg.algo.name} (it is critic-free: no value model)"
            for key in config.CRITIC_KEYS if key in given]


def user_mistake(err: BaseException):
    """The one-line message if `err` is a user mistake (and MINDPRINT_FULL_ERROR=1 does not ask for the traceback)."""
    return None if os.environ.get("MINDPRINT_FULL_ERROR") == "1" else one_line(err)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and an exit code (2: a user mistake); SystemExit passes through Hydra's job runner."""
    if os.environ.get("RANK", "0") == "0":  # launched on N processes, all fail alike: say it once
        print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextmanager
def one_line_errors(run_dir: Optional[Path] = None):
    """Inside a Hydra job: a user mistake becomes one line on stderr and exit code 2, and `run_dir` is
    removed if nothing but Hydra wrote to it."""
    try:
        yield
    except Exception as err:
        message = user_mistake(err)
        if message is None:
            raise
        if run_dir is not None and not isinstance(err, RunDirInUse):  # another process's directory: left alone
            remove_if_untouched(run_dir)
        fail(message)


def cli(hydra_entry) -> None:
    """Run a @hydra.main entry point with composition errors (unknown key, bad type...) as one line, exit 2."""
    # Hydra's own report of a composition error spans several lines; take the exception instead.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with one_line_errors():
        try:
            hydra_entry()
        except ValueError as err:
            from mindprint.analysis.sweep import report_all_trials_failed  # only on this path: this module stays light

            report_all_trials_failed(err)  # exits when it is an Optuna sweep whose every trial failed
            raise
