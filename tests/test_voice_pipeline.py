"""`python -m mindprint.voice texts=DIR`: the pipeline as a user runs it, on real writing (Python's own documentation)
and tiny models: every stage, the report, resuming after a stage was removed, eval/style_delta and eval.scorers in any
run, and bad input as one line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli, small_trainer

from mindprint.analysis.style import DeltaBasis, StyleTarget
from mindprint.synthetic.pydoc_texts import text

PARTS = {"statements": ["assert", "break", "continue", "del", "global", "pass"],
         "expressions": ["bitwise", "conversions", "lambda", "lists", "shifting", "unary"]}
TINY = ["model=tiny", "device=cpu", "voice.min_tokens=64", "voice.max_tokens=160", "voice.opening_tokens=24",
        "voice.heldout_fraction=0.25", "voice.sft.batch_size=8", "voice.sft.learning_rate=1e-3",
        "voice.reward_training.batch_size=8", "voice.reward_training.learning_rate=1e-3",
        "voice.reward_training.max_length=512", "ppo.batch_size=8", "ppo.mini_batch_size=4", "ppo.micro_batch_size=4",
        "ppo.rollout_batch_size=16", "ppo.response_length=16", "ppo.steps_per_topic=2", "ppo.eval_every=2",
        "ppo.learning_rate=1e-3", "data.eval_size=4", "checkpoint.every=0"]
REPORT_KEYS = ["documents.train", "documents.heldout", "passages.train", "passages.heldout",
               "sft.heldout_perplexity.base", "sft.heldout_perplexity.sft", "reward_model.heldout_accuracy",
               *[f"models.{m}.{k}" for m in ("base", "sft", "ppo") for k in ("reward", "style_delta")],
               "models.sft.kl", "models.ppo.kl", "author_floor.style_delta",
               *[f"seconds.{s}" for s in ("prepare", "sft", "pairs", "reward", "ppo", "evaluate")]]


def writing(root):
    for part, topics in PARTS.items():
        (root / part).mkdir(parents=True)
        for topic in topics:
            (root / part / f"{topic}.txt").write_text(text(topic), encoding="utf-8")
    return root


def lookup(data: dict, dotted: str):
    for key in dotted.split("."):
        data = data[key]
    return data


def jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def stamps(run):
    return {d: (run / d / "stage.json").stat().st_mtime_ns for d in ("data", "sft", "pairs", "reward", "ppo", "eval")}


@pytest.mark.slow
def test_the_pipeline_end_to_end_then_resumed_after_a_stage_was_removed(tmp_path, tiny):
    texts, run = writing(tmp_path / "texts"), tmp_path / "run"
    proc = run_cli(f"texts={texts}", f"hydra.run.dir={run}", *TINY, module="mindprint.voice")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    for key in REPORT_KEYS:
        assert isinstance(lookup(report, key), (int, float)), key
    assert report["documents"] == {"train": 9, "heldout": 3}  # round(0.25 × 12)
    assert report["sft"]["heldout_perplexity"]["sft"] < report["sft"]["heldout_perplexity"]["base"]
    assert not [line for line in proc.stdout.splitlines() if line.startswith("{")]  # TRL's log dicts: not ours
    md = (run / "report.md").read_text()
    assert "| author (held-out text) |" in md and "## Samples" in md

    # no held-out passage reaches SFT, the pairs (so the reward model's training) or the PPO prompts
    train, heldout = jsonl(run / "data/train.jsonl"), jsonl(run / "data/heldout.jsonl")
    held_documents = {e["document"] for e in heldout}
    assert held_documents and not held_documents & {e["document"] for e in train}
    pairs = jsonl(run / "pairs/train.jsonl")
    trained_on = json.dumps(train) + json.dumps(pairs)
    for e in heldout:
        assert e["completion"] not in trained_on and e["prompt"] not in trained_on
    assert [p["chosen"] for p in pairs] == [e["completion"] for e in train]
    assert {json.loads(line)["prompt"] for line in (run / "ppo/samples.jsonl").read_text().splitlines()} <= \
        {e["prompt"] for e in heldout}  # PPO evaluates on held-out prompts, and trains on data/train.jsonl's
    metrics = jsonl(run / "ppo/metrics.jsonl")
    assert len(metrics) == 4 and all("eval/style_delta" in m for m in metrics[1::2])  # 2 topics × 2 iterations
    generations = jsonl(run / "eval/generations.jsonl")
    assert [g["author"] for g in generations] == [e["completion"] for e in heldout]
    target = StyleTarget.load(run / "data/style.json")
    assert report["models"]["sft"]["style_delta"] == pytest.approx(target.distance([g["sft"] for g in generations]))

    before = stamps(run)
    os.rename(run / "reward", tmp_path / "reward-aside")
    proc = run_cli(f"texts={texts}", f"hydra.run.dir={run}", *TINY, module="mindprint.voice")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = stamps(run)
    assert [d for d in after if after[d] == before[d]] == ["data", "sft", "pairs"]  # the rest ran again
    assert "voice: sft finished earlier" in proc.stdout

    proc = run_cli(f"texts={texts}", f"hydra.run.dir={run}", *TINY, "voice.min_tokens=70", module="mindprint.voice")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: hydra.run.dir='{run}' is not allowed: its pipeline was started with a different config "
        "(voice.min_tokens: 64 → 70); choose another directory"]


@pytest.mark.slow
def test_a_pipeline_stopped_during_ppo_continues_from_its_checkpoint(tmp_path, tiny):
    """SIGTERM (a SLURM preemption) in the PPO stage: a checkpoint, exit 143 with the command that resumes; that
    command skips the finished stages and continues PPO where it stopped, each iteration logged once."""
    args = [f"texts={writing(tmp_path / 'texts')}", f"hydra.run.dir={tmp_path / 'run'}", *TINY,
            "ppo.steps_per_topic=30"]
    metrics = tmp_path / "run" / "ppo" / "metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "mindprint.voice", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Resume with:" in err and f"hydra.run.dir={tmp_path / 'run'}" in err
    assert not (metrics.parent / "stage.json").exists() and (metrics.parent / "checkpoints").is_dir()
    stopped_at = len(jsonl(metrics))
    assert 3 <= stopped_at < 60
    proc = run_cli(*args, module="mindprint.voice")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "voice: reward finished earlier" in proc.stdout and "60 iterations (30 per topic), resumed" in proc.stdout
    assert [m["iteration"] for m in jsonl(metrics)] == list(range(1, 61))


def bad_folder(kind, root):
    if kind == "empty":
        root.mkdir(parents=True)
    elif kind == "binary":
        root.mkdir(parents=True)
        (root / "a.txt").write_bytes(b"\xff\xfe\x00\x01binary")
        (root / "b.md").write_bytes("café".encode("latin-1"))
    elif kind == "one document":
        root.mkdir(parents=True)
        (root / "a.txt").write_text(text("assert"))
    elif kind == "short":
        writing(root)
    elif kind == "pdf":
        root.parent.mkdir(parents=True, exist_ok=True)
        root = root.with_suffix(".pdf")
        root.write_bytes(b"%PDF-1.4")
    return root


@pytest.mark.parametrize("kind, message", [
    ("empty", "is not allowed: it holds no .txt, .md, .jsonl or .csv file with text"),
    ("binary", "is not allowed: it holds only files that are not UTF-8 text (a.txt, b.md)"),
    ("one document", "texts is not allowed: it holds 1 document, and at least 3 are needed"),
    ("short", "texts is not allowed: every passage is shorter than voice.min_tokens=5000 tokens"),
    ("pdf", "is not allowed: expected a folder of .txt/.md files, or a .jsonl/.csv table with a 'text' column"),
])
def test_bad_writing_is_one_line_exit_2_and_leaves_nothing(tmp_path, tiny, kind, message):
    texts, run = bad_folder(kind, tmp_path / "in" / "texts"), tmp_path / "out" / "run"
    size = ["voice.min_tokens=5000", "voice.max_tokens=6000"] if kind == "short" else []
    proc = run_cli(f"texts={texts}", f"hydra.run.dir={run}", *TINY, *size, module="mindprint.voice", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # nothing half-written, not even the run directory


@pytest.mark.parametrize("override, message", [
    ("voice.template='no opening here'", "voice.template='no opening here' is not allowed: expected a text with"),
    ("voice.stages=[prepare,polish]", "voice.stages='polish' is not allowed: expected a non-empty list of prepare"),
    ("voice.rejected_from=author", "voice.rejected_from='author' is not allowed: expected base or sft"),
    ("voice.opening_tokens=80", "voice.opening_tokens=80 is not allowed: expected an integer < voice.min_tokens=64"),
    ("voice.reward_training.epochs=0", "voice.reward_training.epochs=0.0 is not allowed: expected a number > 0"),
    ("voice.template='{topic.name} {opening}'", "voice.template='{topic.name} {opening}' is not allowed"),
    ("dry_run=true", "dry_run=True is not allowed: expected false for the voice pipeline"),
    ("resume=true", "resume=True is not allowed: expected false for the voice pipeline"),
])
def test_bad_voice_settings_are_one_line(tmp_path, override, message):
    proc = run_cli(f"texts={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", "voice.min_tokens=64", override,
                   module="mindprint.voice")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), proc.stderr[-2000:]


def test_texts_is_required(tmp_path):
    proc = run_cli(f"hydra.run.dir={tmp_path / 'run'}", module="mindprint.voice")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: texts=None is not allowed: expected a folder of your writing: texts=~/my_writing"]


def test_a_stage_whose_input_is_missing_is_refused_before_anything_runs(tmp_path, tiny):
    proc = run_cli(f"texts={writing(tmp_path / 'texts')}", f"hydra.run.dir={tmp_path / 'run'}", *TINY,
                   "voice.stages=[prepare,ppo]", module="mindprint.voice")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: voice.stages=['prepare', 'ppo'] is not allowed: the ppo stage needs the sft stage finished in "
        f"{tmp_path / 'run' / 'sft'}; add sft to voice.stages"]
    assert not (tmp_path / "run").exists()  # prepare did not run first


def test_a_failed_stage_leaves_nothing_but_a_checkpoint_to_resume_from(tmp_path):
    """A user mistake inside a stage (a judge that raises, say) removes the stage's half-written folder, and the
    report of the old outputs; a PPO stage that has a checkpoint keeps it, to continue from."""
    from mindprint.config import ConfigError, VoiceRunConfig
    from mindprint.voice.pipeline import Pipeline

    pipeline = Pipeline(VoiceRunConfig(texts=str(tmp_path), device="cpu"), tmp_path / "run")
    (tmp_path / "run" / "ppo" / "checkpoints" / "iter-000004").mkdir(parents=True)
    (tmp_path / "run" / "report.md").write_text("old")

    def mistake(out):
        (out / "half.json").write_text("{")
        raise ConfigError("eval.scorers.gold='x' is not allowed: ...")

    for stage in ("ppo", "evaluate"):
        with pytest.raises(ConfigError):
            pipeline.run_stage(stage, mistake)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["ppo"]  # eval/ and report.md gone
    assert (tmp_path / "run" / "ppo" / "checkpoints" / "iter-000004").is_dir()


def test_a_sweep_records_a_failed_job_and_goes_on(tmp_path, tiny):
    texts = writing(tmp_path / "texts")
    proc = run_cli(f"texts={tmp_path / 'missing'},{texts}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY,
                   "voice.stages=[prepare]", "-m", module="mindprint.voice")
    assert proc.returncode == 1, proc.stderr[-2000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2 and "no such folder" in (jobs[0] / "FAILED").read_text()
    assert (jobs[1] / "data" / "stage.json").exists()  # the second job ran after the first failed


def test_any_run_logs_style_delta_and_extra_judges_at_each_evaluation(tmp_path, tiny):
    """eval.style and eval.scorers on an ordinary run: eval/style_delta is Delta(generations, the author's text),
    eval/vowels the rule's mean on the same generations."""
    from transformers import AutoModelForSequenceClassification

    from mindprint.engine.models import load_tokenizer
    from mindprint.engine.rewards import RewardModelScorer
    from mindprint.synthetic.rules import vowel_share

    author = [text(t) for t in ("assert", "break", "continue", "del")]
    target = StyleTarget(DeltaBasis.fit(author[:3], 30), author[3])
    target.save(tmp_path / "style.json")
    trainer = small_trainer(tmp_path / "run", f"eval.style={tmp_path / 'style.json'}",
                            "+eval.scorers.vowels=mindprint.synthetic.rules:vowel_share",
                            f"+eval.scorers.gold={tiny['classifier']}", "ppo.num_sample_generations=99")
    metrics, samples = trainer.evaluate()
    responses, prompts = [s["response"] for s in samples], [s["prompt"] for s in samples]
    assert len(responses) == len(trainer.prompts.eval) > 1
    assert metrics["eval/style_delta"] == pytest.approx(target.distance(responses))
    assert metrics["eval/vowels"] == pytest.approx(sum(vowel_share([], responses)) / len(responses), rel=1e-5)
    gold = RewardModelScorer(AutoModelForSequenceClassification.from_pretrained(tiny["classifier"]).eval(),
                             load_tokenizer("gold", tiny["classifier"], padding_side="right"), 4, 2048)
    assert metrics["eval/gold"] == pytest.approx(gold(prompts, responses).mean().item(), rel=1e-5)
    assert metrics["eval/gold"] != pytest.approx(metrics["eval/scores"])  # another judge than the run's reward
    assert StyleTarget.load(tmp_path / "style.json") == target


def test_a_judge_named_like_a_metric_is_refused():
    from mindprint.cli import compose
    from mindprint.config import ConfigError

    with pytest.raises(ConfigError, match=r"eval.scorers.kl='m:f' is not allowed: expected a name of letters"):
        compose(["+experiment=smoke", "+eval.scorers.kl=m:f"])


def test_held_out_prompts_from_another_file(tmp_path, tiny):
    """data.eval_name: every training prompt stays in training, the held-out ones come from their own file (the
    pipeline's data/heldout.jsonl), at most data.eval_size of them; the same file as data.name is refused."""
    from mindprint.config import ConfigError, DataConfig
    from mindprint.engine.data import load_prompts
    from mindprint.engine.models import load_tokenizer

    for name, prefix in (("train", "t"), ("heldout", "h")):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": f"{prefix}{i}", "topic": "x"}) + "\n"
                                                        for i in range(5)))
    tok = load_tokenizer("model.name", tiny["policy"], padding_side="left")
    cfg = DataConfig(name=str(tmp_path / "train.jsonl"), eval_name=str(tmp_path / "heldout.jsonl"), eval_split=None,
                     eval_size=3, topic_field="topic")
    prompts = load_prompts(cfg, tok, seed=0)
    assert [p.text for p in prompts.train] == [f"t{i}" for i in range(5)]
    assert [p.text for p in prompts.eval] == ["h0", "h1", "h2"]
    with pytest.raises(ConfigError, match="data.eval_name=.* is not allowed: expected another file than data.name"):
        DataConfig(name=cfg.name, eval_name=cfg.name)
