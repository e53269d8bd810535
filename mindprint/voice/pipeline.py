"""The voice pipeline: from a folder of writing to a policy in its author's voice, one stage after another, each
writing under its own folder of the run directory.

    data/    prepare    train.jsonl heldout.jsonl (prompt, completion, topic, document), style.json (eval.style)
    sft/     sft        model/: the base model fine-tuned on the training examples (LoRA, merged)
    pairs/   pairs      train.jsonl heldout.jsonl: prompt, chosen (the author's completion), rejected (a sample)
    reward/  reward     model/ eval.json: mindprint.train_reward on the pairs, the held-out pairs its test set
    ppo/     ppo        a mindprint.run directory: the policy is the SFT model with a fresh adapter, the reference
                        the SFT model (adapter disabled), the prompts the training prompts by topic
    eval/    evaluate   generations.jsonl results.json: base, SFT and PPO on the held-out prompts
    report.md report.json

A stage's folder holds stage.json, written last: with it the stage is finished, and a pipeline started again in the
same directory skips it. A stage without it (interrupted, or its folder removed) runs again from scratch, and every
stage after it does too: their outputs were made from the old one. `voice.stages` runs a subset, whose inputs must
be finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from mindprint import config
from mindprint.analysis.style import DeltaBasis, StyleTarget
from mindprint.config import ConfigError, VoiceRunConfig
from mindprint.engine.checkpoint import config_changes
from mindprint.engine.models import load_tokenizer, match_vocab, pick_device
from mindprint.records import PIPELINE, jsonable
from mindprint.voice import evaluate, report
from mindprint.voice.prepare import Example, prepare, read_documents

FOLDERS = {"prepare": "data", "sft": "sft", "pairs": "pairs", "reward": "reward", "ppo": "ppo", "evaluate": "eval"}
DONE = "stage.json"
REPORT = ("report.md", "report.json")
# RUN_DIR/pipeline.json (records.PIPELINE) keeps the config the pipeline was started with: a later start must match
FREE_KEYS = ("voice.stages",)  # may differ between starts of one pipeline, beside what a resume may change (device...)


def write_json(path: Path, data: dict) -> None:
    """Written aside and renamed: whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """JSON lines, written aside and renamed: whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def read_examples(path: Path) -> list[Example]:
    return [Example(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


class Pipeline:
    def __init__(self, cfg: VoiceRunConfig, root: Path):
        self.cfg, self.v, self.root = cfg, cfg.voice, root
        self.device = pick_device(cfg.device)
        # one W&B group per pipeline run, a job type per stage
        self.group = cfg.logger.group or f"voice-{root.parent.name}-{root.name}"
        self._tokenizer = None

    # ------------------------------------------------------------------ bookkeeping

    def folder(self, stage: str) -> Path:
        return self.root / FOLDERS[stage]

    def finished(self, stage: str) -> Optional[dict]:
        try:
            return json.loads((self.folder(stage) / DONE).read_text())
        except (OSError, ValueError):
            return None

    @property
    def tokenizer(self):
        """The policy's tokenizer (the base model's; the SFT model saves the same one)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer("model.name", self.cfg.model.name, padding_side="right")
        return self._tokenizer

    def check_record(self) -> None:
        """A pipeline started again in its directory must have the config it was started with (but voice.stages)."""
        path = self.root / PIPELINE
        if not path.exists():
            return
        changes = [c for c in config_changes(json.loads(path.read_text()), self.config_dict())
                   if not c.startswith(FREE_KEYS)]
        if changes:
            raise ConfigError(f"hydra.run.dir={str(self.root)!r} is not allowed: its pipeline was started with a "
                              f"different config ({'; '.join(changes[:3])}); choose another directory")

    def config_dict(self) -> dict:
        return jsonable(dataclasses.asdict(self.cfg))

    def run(self) -> dict:
        """Every stage of voice.stages in order: skipped if finished, else run (and what follows it made stale)."""
        self.check_record()
        stages = [s for s in config.VOICE_STAGES if s in self.v.stages]
        for stage in stages:  # before anything runs: a subset whose inputs are missing is refused whole
            self.require_inputs(stage, stages)
        ran = False
        for stage in [s for s in config.VOICE_STAGES if s != "report"]:
            if stage not in stages:
                continue
            if self.finished(stage) is not None and not ran:
                print(f"voice: {stage} finished earlier ({self.folder(stage)}), skipped")
                continue
            self.run_stage(stage, getattr(self, f"stage_{stage}"))
            ran = True
        return self.stage_report() if "report" in stages else {}

    def require_inputs(self, stage: str, running: list[str]) -> None:
        for earlier in config.VOICE_STAGES[: config.VOICE_STAGES.index(stage)]:
            if earlier not in running and self.finished(earlier) is None:
                raise ConfigError(f"voice.stages={list(self.v.stages)} is not allowed: the {stage} stage needs the "
                                  f"{earlier} stage finished in {self.folder(earlier)}; add {earlier} to voice.stages")

    def resumable(self, stage: str) -> bool:
        """An interrupted PPO stage continues from its newest checkpoint (what came before it is unchanged: a stage
        that runs again removes every later one's folder first)."""
        from mindprint.engine import checkpoint

        return stage == "ppo" and checkpoint.latest(self.folder(stage)) is not None

    def run_stage(self, stage: str, body: Callable[[Path], dict]) -> None:
        index = config.VOICE_STAGES.index(stage)
        keep = self.resumable(stage)
        for later in config.VOICE_STAGES[index + keep:]:  # this one's leftovers, what was made from its old outputs
            if later in FOLDERS:
                shutil.rmtree(self.folder(later), ignore_errors=True)
        for name in REPORT:  # a report of the old outputs: until it is written again, none
            (self.root / name).unlink(missing_ok=True)
        out = self.folder(stage)
        out.mkdir(parents=True, exist_ok=keep)
        if stage != "prepare":  # prepare says it once the texts are read: a bad folder is one line, and only that
            print(f"voice: {stage} → {out}", flush=True)
        start = time.perf_counter()
        try:
            result = body(out)
        except ConfigError:  # a user mistake: nothing half-written is left (but a checkpoint to resume from)
            if not self.resumable(stage):
                shutil.rmtree(out, ignore_errors=True)
            raise
        result["seconds"] = round(time.perf_counter() - start, 1)
        write_json(out / DONE, jsonable(result))
        if not (self.root / PIPELINE).exists():
            write_json(self.root / PIPELINE, self.config_dict())

    def wandb_env(self, job_type: str) -> dict[str, str]:
        """TRL's W&B callback (SFT and reward stages) reads the run's group, type and place from the environment."""
        lg = self.cfg.logger
        env = {"WANDB_PROJECT": lg.project, "WANDB_RUN_GROUP": self.group, "WANDB_JOB_TYPE": job_type,
               "WANDB_NAME": f"{self.group}/{job_type}", "WANDB_DIR": str(self.folder(job_type))}
        if lg.entity:
            env["WANDB_ENTITY"] = lg.entity
        return env

    def trl_logging(self, stage: str):
        """(report_to for a TRL trainer, a function that closes its W&B run): wandb with logger.backend=wandb."""
        if self.cfg.logger.backend != "wandb":
            return "none", lambda: None
        from mindprint.engine.tracking import wandb_mode

        os.environ.update(self.wandb_env(stage))
        mode, warning = wandb_mode(self.cfg.logger.mode, self.folder(stage))
        if warning:
            print(warning, file=sys.stderr)
        if mode:
            os.environ["WANDB_MODE"] = mode

        def close() -> None:
            import wandb

            if wandb.run is not None:  # else the next stage's wandb.init would return this run
                wandb.finish()
            wandb.teardown()  # wandb keeps the settings of its first setup: the next stage's WANDB_DIR is read anew

        return "wandb", close

    # ------------------------------------------------------------------ the stages

    def stage_prepare(self, out: Path) -> dict:
        v = self.v
        documents, skipped = read_documents(Path(self.cfg.texts), v.text_field, v.topic_field)
        print(f"voice: prepare → {out} ({len(documents)} documents)", flush=True)
        if skipped:
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            print(f"warning: skipped {len(skipped)} file{'s' * (len(skipped) > 1)} that {'are' if len(skipped) > 1 else 'is'}"
                  f" not UTF-8 text: {', '.join(skipped[:5])}{more}", file=sys.stderr)
        tok = self.tokenizer
        count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        data = prepare(documents, count, min_tokens=v.min_tokens, max_tokens=v.max_tokens,
                       opening_tokens=v.opening_tokens, heldout_fraction=v.heldout_fraction, template=v.template,
                       seed=self.cfg.seed, skipped_files=skipped)
        for name, examples in (("train", data.train), ("heldout", data.heldout)):
            write_jsonl(out / f"{name}.jsonl", [dataclasses.asdict(e) for e in examples])
        train_documents = set(data.documents["train"])
        basis = DeltaBasis.fit([d.text for d in documents if d.name in train_documents], v.delta_words)
        target = StyleTarget(basis, "\n\n".join(e.completion for e in data.heldout))
        target.save(out / "style.json")
        return {
            "documents": {k: len(names) for k, names in data.documents.items()},
            "passages": {"train": len(data.train), "heldout": len(data.heldout)},
            "topics": sorted({e.topic for e in data.train}),
            "heldout_documents": data.documents["heldout"],
            "skipped_files": data.skipped_files,
            "short_passages": data.short_passages,
            "delta_words": len(basis.words),
            # the author's own held-out text against their training text: how close "as close as the author" is
            "author_floor": basis.delta(target.text, "\n\n".join(e.completion for e in data.train)),
        }

    def examples(self, split: str) -> list[Example]:
        return read_examples(self.folder("prepare") / f"{split}.jsonl")

    def stage_sft(self, out: Path) -> dict:
        from transformers import AutoModelForCausalLM

        from mindprint.voice.sft import perplexity, train_sft

        report_to, close = self.trl_logging("sft")
        try:
            model_dir = train_sft(self.cfg.model.name, self.tokenizer, self.examples("train"), self.v.sft,
                                  out / "model", self.cfg.seed, self.device, report_to)
        finally:
            close()
        heldout = self.examples("heldout")
        ppl = {}
        for name, path in (("base", self.cfg.model.name), ("sft", str(model_dir))):
            model = AutoModelForCausalLM.from_pretrained(os.path.expanduser(path)).to(self.device)
            ppl[name] = perplexity(model, self.tokenizer, heldout, self.v.sft.max_length)
            del model
        print(f"voice: held-out perplexity {ppl['base']:.2f} (base) → {ppl['sft']:.2f} (SFT)")
        return {"heldout_perplexity": ppl}

    def sft_model(self) -> str:
        return str(self.folder("sft") / "model")

    def stage_pairs(self, out: Path) -> dict:
        from transformers import AutoModelForCausalLM

        from mindprint.voice.sampling import decode, sample

        name = self.cfg.model.name if self.v.rejected_from == "base" else self.sft_model()
        tok, p = self.tokenizer, self.cfg.ppo
        model = AutoModelForCausalLM.from_pretrained(os.path.expanduser(name)).to(self.device)
        match_vocab(model, tok)
        counts = {}
        for split in ("train", "heldout"):
            examples = self.examples(split)
            # each rejected sample as long as the author's completion it stands beside (in tokens, unless it ends
            # first): the reward model is not shown length as the difference between the two sides
            lengths = [len(tok(e.completion, add_special_tokens=False)["input_ids"]) for e in examples]
            samples = decode(tok, sample(model, tok, [e.prompt for e in examples], lengths, p.temperature,
                                         p.rollout_batch_size, self.cfg.seed + (split == "heldout")))
            write_jsonl(out / f"{split}.jsonl", pairs(examples, samples))
            counts[split] = len(examples)
        return {"pairs": counts, "rejected_from": self.v.rejected_from, "temperature": p.temperature}

    def stage_reward(self, out: Path) -> dict:
        from mindprint.train_reward import train_reward

        pairs_dir = self.folder("pairs")
        cfg = config.TrainRewardConfig(
            model=dataclasses.replace(self.cfg.model, name=self.v.reward_base or self.cfg.model.name),
            pairs=config.PairsConfig(name=str(pairs_dir / "train.jsonl"), eval_name=str(pairs_dir / "heldout.jsonl")),
            training=self.v.reward_training,
            logger=dataclasses.replace(self.cfg.logger, name=f"{self.group}/reward", job_type="reward"),
            seed=self.cfg.seed, device=self.cfg.device)
        _, close = self.trl_logging("reward")
        try:
            result = train_reward(cfg, out)
        finally:
            close()
        return {"heldout_accuracy": result["accuracy"], "heldout_margin": result["margin"], "pairs": result["pairs"]}

    def ppo_config(self) -> config.RunConfig:
        """The run of the PPO stage: the pipeline's run keys, the policy from the SFT model, steps per topic."""
        run = {f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(config.RunConfig)}
        topics = len(self.finished("prepare")["topics"])
        ppo = dataclasses.replace(self.cfg.ppo, steps=self.cfg.ppo.steps_per_topic * topics * self.v.topic_passes)
        logger = dataclasses.replace(self.cfg.logger, group=self.group, name=f"{self.group}/ppo", job_type="ppo")
        return config.RunConfig(**{**run, "model": dataclasses.replace(self.cfg.model, name=self.sft_model()),
                                   "ppo": ppo, "logger": logger, "dry_run": False})

    def stage_ppo(self, out: Path) -> dict:
        from mindprint.engine.job import execute

        cfg = dataclasses.replace(self.ppo_config(), resume=self.resumable("ppo"))
        print(f"voice: {cfg.algo.name} from the SFT model, {cfg.ppo.steps} iterations "
              f"({cfg.ppo.steps_per_topic} per topic){', resumed' if cfg.resume else ''}")
        summary = execute(cfg, out, self.group, f"{self.group}/ppo")
        return {"iterations": cfg.ppo.steps, "algo": cfg.algo.name,
                **{k: summary[k] for k in ("episodes", "eps") if k in summary}}

    def stage_evaluate(self, out: Path) -> dict:
        models = {"base": self.cfg.model.name, "sft": self.sft_model(), "ppo": str(self.folder("ppo") / "adapter")}
        result = evaluate.evaluate(self.cfg, models, self.examples("heldout"), self.folder("prepare") / "style.json",
                                   str(self.folder("reward") / "model"), self.tokenizer, self.device, out)
        if self.cfg.logger.backend == "wandb":
            evaluate.log_to_wandb(self.cfg.logger, self.group, out, result)
        return result

    def stage_report(self) -> dict:
        stages = {s: self.finished(s) for s in FOLDERS}
        data = report.assemble(stages, self.examples("heldout") if stages["prepare"] else [],
                               self.folder("evaluate"))
        report.write(self.root, data, self.cfg)
        print(f"voice: report → {self.root / 'report.md'}")
        return data


def pairs(examples: list[Example], rejected: list[str]) -> list[dict[str, Any]]:
    """TRL's prompt/chosen/rejected rows: chosen is the author's completion, rejected the sample for the same prompt."""
    if len(examples) != len(rejected):
        raise ValueError(f"{len(examples)} examples but {len(rejected)} samples")
    return [{"prompt": e.prompt, "chosen": e.completion, "rejected": r, "topic": e.topic, "document": e.document}
            for e, r in zip(examples, rejected)]


