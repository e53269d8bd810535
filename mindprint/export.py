"""`python -m mindprint.export RUN_DIR OUT_DIR [--merge] [--checkpoint NAME] [--force]`

Writes the trained adapter (loadable with `PeftModel.from_pretrained(base, OUT_DIR)`), or with
--merge a standalone model with W' = W + (α/r)·B·A folded into every adapted layer (seed 004's
"Inference"), plus the policy's tokenizer either way.

Nothing in the run directory is run: a checkpoint's files are all checked first (its .pt files through
torch's safe loader), and adapter weights are read from safetensors only. Nothing outside it is deleted that
export did not write: OUT_DIR must be new or empty, or, with --force, a previous export holding only its own files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from mindprint.config import ConfigError
from mindprint.engine import checkpoint

# What an exported adapter holds: peft's config and weights (never a pickled adapter_model.bin), its model card.
ADAPTER_FILES = ("adapter_config.json", checkpoint.ADAPTER_WEIGHTS, "README.md")
MARKER = "mindprint_export.json"  # what an export wrote (its files, the run): --force replaces only that


def adapter_dir(run_dir: Path, name: Optional[str]) -> Path:
    """The run's final adapter, a named checkpoint's, or the newest intact checkpoint's if the run did not finish
    (a warning line for each damaged checkpoint skipped; a named one that is damaged is an error).

    A checkpoint is checked whole before its adapter is used; the adapter's weights must be safetensors.
    """
    if name is not None:
        source = run_dir / checkpoint.CHECKPOINTS / name
        path = source / "adapter"
        if not source.is_dir():
            raise ConfigError(f"RUN_DIR={str(run_dir)!r} is not allowed: no adapter at {path}")
        checkpoint.verify(source)
    elif (run_dir / "adapter").is_dir():
        path = run_dir / "adapter"
    else:
        source, _, damaged = checkpoint.newest_intact(run_dir)
        if source is None and damaged:
            raise ConfigError(f"RUN_DIR={str(run_dir)!r} is not allowed: it has no final adapter, and every checkpoint "
                              f"is damaged ({checkpoint.all_damaged(damaged)})")
        for err in damaged:
            print(f"warning: {err}; exporting {source.name}", file=sys.stderr)
        path = source / "adapter" if source else run_dir / "adapter"
    if not (path / "adapter_config.json").exists():
        raise ConfigError(f"RUN_DIR={str(run_dir)!r} is not allowed: no adapter at {path}")
    checkpoint.check_safetensors(path / checkpoint.ADAPTER_WEIGHTS)
    return path


def check_destination(out_dir: Path, force: bool) -> None:
    """Export never deletes what it did not write: OUT_DIR must be new, empty, or (with --force) a previous export of
    mindprint holding nothing but what that export wrote (its MARKER lists it)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"OUT_DIR={str(out_dir)!r} is not allowed: it is a file (expected a new or empty directory)")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    present = sorted(p.name for p in out_dir.iterdir())
    written = None
    if (out_dir / MARKER).is_file():
        try:
            written = set(json.loads((out_dir / MARKER).read_text())["files"]) | {MARKER}
        except (ValueError, KeyError, TypeError):
            written = None
    if written is None:
        shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
        raise ConfigError(f"OUT_DIR={str(out_dir)!r} is not allowed: it is not empty ({shown}) and not an export of "
                          "mindprint; choose a new or empty directory")
    if not force:
        raise ConfigError(f"OUT_DIR={str(out_dir)!r} is not allowed: it holds a previous export; add --force to "
                          "replace it")
    foreign = [name for name in present if name not in written]
    if foreign:
        raise ConfigError(f"OUT_DIR={str(out_dir)!r} is not allowed with --force: besides a previous export it holds "
                          f"{', '.join(foreign[:3])}, which export did not write; move it away or choose another directory")


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, nearest first (made by export, removed if it fails)."""
    out = []
    for parent in path.parents:
        if parent.exists():
            break
        out.append(parent)
    return out


def export(run_dir: Path, out_dir: Path, merge: bool, checkpoint_name: Optional[str] = None,
           force: bool = False) -> Path:
    """Written aside in OUT_DIR's parent and renamed into place: OUT_DIR holds a whole export or what it held
    before, and a failure leaves nothing behind (the folders made for it included)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = adapter_dir(run_dir, checkpoint_name)
    check_destination(out_dir, force)
    base_name = json.loads((source / "adapter_config.json").read_text())["base_model_name_or_path"]
    try:  # what the export reads comes first: a missing base model is the run's problem, not OUT_DIR's
        tokenizer = AutoTokenizer.from_pretrained(base_name)
        base = AutoModelForCausalLM.from_pretrained(base_name, dtype=torch.float32) if merge else None
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"RUN_DIR={str(run_dir)!r} is not allowed: its adapter's base model {base_name!r} could "
                          f"not be loaded ({reason})") from None
    made = _missing_parents(out_dir)
    tmp = aside = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
        if merge:
            PeftModel.from_pretrained(base, source).merge_and_unload().save_pretrained(tmp)
        else:
            for name in ADAPTER_FILES:
                if (source / name).exists():
                    shutil.copyfile(source / name, tmp / name)
        tokenizer.save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / MARKER).write_text(json.dumps({"files": files, "run": str(run_dir), "adapter": str(source),
                                              "merged": merge}, indent=1))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # a folder as mkdir makes it, not mkdtemp's owner-only 0700
        if out_dir.exists():  # empty, or a previous export holding only what it wrote: kept aside until replaced
            aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, aside / out_dir.name)
        os.replace(tmp, out_dir)
    except BaseException:
        if aside is not None and not out_dir.exists():
            os.replace(aside / out_dir.name, out_dir)  # what OUT_DIR held before
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for parent in made:
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return out_dir


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mindprint.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--merge", action="store_true", help="fold the adapter into the base weights")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint name, e.g. iter-000050")
    parser.add_argument("--force", action="store_true", help="replace a previous export of mindprint at OUT_DIR")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.out_dir, args.merge, args.checkpoint, args.force)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # the disk, not the user's input: nothing was left behind
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: OUT_DIR={str(args.out_dir)!r} could not be written: {err.strerror or err}{where}", file=sys.stderr)
        sys.exit(1)
    print(f"{'merged model' if args.merge else 'adapter'} written to {out}")


if __name__ == "__main__":
    main()
