"""`python -m mindprint.export RUN_DIR OUT_DIR [--merge] [--checkpoint NAME]`

Writes the trained adapter (loadable with `PeftModel.from_pretrained(base, OUT_DIR)`), or with
--merge a standalone model with W' = W + (α/r)·B·A folded into every adapted layer (seed 004's
"Inference"), plus the policy's tokenizer either way.

Nothing in the run directory is run: a checkpoint's files are all checked first (its .pt files through
torch's safe loader), and adapter weights are read from safetensors only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

from mindprint.config import ConfigError
from mindprint.engine import checkpoint

# What an exported adapter holds: peft's config and weights (never a pickled adapter_model.bin), its model card.
ADAPTER_FILES = ("adapter_config.json", checkpoint.ADAPTER_WEIGHTS, "README.md")


def adapter_dir(run_dir: Path, name: Optional[str]) -> Path:
    """The run's final adapter, a named checkpoint's, or the newest intact checkpoint's if the run did not finish
    (a warning line for each damaged checkpoint skipped; a named one that is damaged is an error).

    A checkpoint is checked whole before its adapter is used; the adapter's weights must be safetensors.
    """
    if name is not None:
        source = run_dir / checkpoint.CHECKPOINTS / name
        path = source / "adapter"
        if not source.is_dir():
            raise FileNotFoundError(f"RUN_DIR={str(run_dir)!r} is not allowed: no adapter at {path}")
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
        raise FileNotFoundError(f"RUN_DIR={str(run_dir)!r} is not allowed: no adapter at {path}")
    checkpoint.check_safetensors(path / checkpoint.ADAPTER_WEIGHTS)
    return path


def export(run_dir: Path, out_dir: Path, merge: bool, checkpoint_name: Optional[str] = None) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = adapter_dir(run_dir, checkpoint_name)
    base_name = json.loads((source / "adapter_config.json").read_text())["base_model_name_or_path"]
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")  # nothing half-written at OUT_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    if merge:
        base = AutoModelForCausalLM.from_pretrained(base_name, dtype=torch.float32)
        PeftModel.from_pretrained(base, source).merge_and_unload().save_pretrained(tmp)
    else:
        tmp.mkdir(parents=True)
        for name in ADAPTER_FILES:
            if (source / name).exists():
                shutil.copyfile(source / name, tmp / name)
    AutoTokenizer.from_pretrained(base_name).save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mindprint.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--merge", action="store_true", help="fold the adapter into the base weights")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint name, e.g. iter-000050")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.out_dir, args.merge, args.checkpoint)
    except (FileNotFoundError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{'merged model' if args.merge else 'adapter'} written to {out}")


if __name__ == "__main__":
    main()
