"""TRL 1.16's GRPOTrainer or RLOOTrainer on the setup `mindprint.bench` passes (critic-free counterpart of trl_ppo.py).

Usage: python mindprint/bench/trl_grpo.py '<json setup>'   (runs in .venv: trl==1.16.0)

Prints one JSON line (the last line of stdout):
  {"episodes_per_s", "wall_s", "gc_s", "gc_share", "peak_rss_gib", "episodes_per_s_loop", "phases": {phase: share of wall_s},
   "phase_s": {phase: seconds}, "gc_by_phase": {phase: seconds}, "calls": {phase: count}, "episodes",
   "generation_rounds", "optimizer_steps", "trainer", "trl_version", "trl": {the batch mapping}}
plus "peak_mem_gib" on a GPU. Only `trainer.train()` is timed (as trl_ppo.py does): not the model loading.
episodes = completions generated. gc_s is the time spent in Python's garbage collector (gc.callbacks).

Setup keys (required unless a default is given):
  trainer             "grpo" (GRPOTrainer) or "rloo" (RLOOTrainer)
  policy              causal LM path (mindprint.synthetic.tiny.ensure_tiny("policy")); a LoRA is trained on it
  reward              1-label sequence classifier sharing the policy's tokenizer (ensure_tiny("classifier"))
  prompts             JSONL file of prompts (mindprint/assets/demo_prompts.jsonl)
  prompt_field        field of the prompt in each line; default "prompt"
  chat_template       false: plain-text prompts (TRL scores prompt + completion text); true: conversational
                      prompts, which TRL renders with each tokenizer's chat template. Default false
  num_generations     G, responses per prompt (>= 2)
  batch_size          episodes (completions) per generation round = G x prompts per round
  mini_batch_size     episodes per optimizer step (divides batch_size)
  micro_batch_size    episodes per forward/backward (divides mini_batch_size); default mini_batch_size
  ppo_epochs          passes over each generation batch (TRL's num_iterations, mu)
  steps               generation rounds (mindprint's iterations)
  response_length     max_completion_length
  temperature         default 1.0
  learning_rate
  lr_scheduler        default "constant" (TRL's own default is "linear")
  weight_decay        default 0.0
  max_grad_norm       default 1.0
  beta                KL coefficient (GRPO: k3 per token in the loss; RLOO: k1 summed per sequence, in the reward)
  cliprange           epsilon, symmetric; default 0.2
  loss_type           grpo only: a TRL loss_type ("grpo", "dapo", "bnpo", "dr_grpo", ...) or mindprint's name
                      ("seq_mean_token_mean" -> "grpo", "token_mean" -> "dapo", "seq_mean_token_sum_norm" ->
                      "dr_grpo"); default "grpo" (TRL's default is "dapo")
  scale_rewards       grpo only: "group" (divide by the group's std; True), "batch" or "none" (False). Default "group"
  normalize_advantages  rloo only: whiten advantages over the generation batch; default false
  lora_rank, lora_alpha, target_modules, lora_dropout (default 0.0)
  seed                default 0
  device              "cpu" or "cuda"; default "cpu"
  bf16                default false (fp32; TRL's configs default to bf16)
  gradient_checkpointing  default false (TRL's configs default to true)
  logging_steps       optimizer steps between TRL's log() calls; default: once per generation round
  profile_top         > 0: also run cProfile and write the top functions (cumulative) to stderr; inflates timings

Everything mindprint does not do is off: no evaluation, no checkpoints, report_to="none", no log_completions,
no vLLM (HF generate), dropout disabled (mindprint zeroes it), no gradient checkpointing unless asked.
"""

import cProfile
import gc
import io
import json
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import trl
from datasets import Dataset
from peft import LoraConfig
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mindprint.engine.hostmem import peak_rss_gib

LOSS_TYPES = {"seq_mean_token_mean": "grpo", "token_mean": "dapo", "seq_mean_token_sum_norm": "dr_grpo"}


def trl_batching(batch: int, mini: int, micro: int, epochs: int, num_generations: int, steps: int) -> dict:
    """TRL 1.16 GRPOConfig/RLOOConfig batch arguments that reproduce mindprint's critic-free loop, one process.

    mindprint, per iteration: generate `batch` episodes (batch / G prompts x G), then `epochs` passes, each over
    batch / mini minibatches, one optimizer step per minibatch, each minibatch walked in micro-batches.
    TRL 1.16: a training_step consumes per_device_train_batch_size episodes; the optimizer steps every
    gradient_accumulation_steps training_steps; it generates generation_batch_size = per_device x
    steps_per_generation completions at once and reuses them for steps_per_generation x num_iterations
    training_steps (the batch shuffled once, split into steps_per_generation slices, walked num_iterations times).
    So: per_device = micro, accumulation = mini / micro, steps_per_generation = batch / micro (the generation batch
    is `batch`), num_iterations = epochs: per round epochs x batch / mini optimizer steps of `mini` episodes each,
    as mindprint. max_steps counts optimizer steps: steps x epochs x batch / mini gives exactly `steps` rounds.

    Exact in counts and sizes. Not matched: TRL keeps one minibatch partition for all num_iterations passes
    (mindprint redraws it every epoch); TRL's no-grad forwards (old and reference log-probs) run in chunks of
    per_device (micro), not mindprint's rollout_batch_size; TRL generates the whole generation batch in one
    generate() call (mindprint in chunks of rollout_batch_size).
    """
    if batch % num_generations:
        raise ValueError(f"batch_size={batch} is not a multiple of num_generations={num_generations}")
    if batch % mini or mini % micro:
        raise ValueError(f"need micro_batch_size={micro} | mini_batch_size={mini} | batch_size={batch}")
    steps_per_round = epochs * batch // mini
    return {"per_device_train_batch_size": micro, "gradient_accumulation_steps": mini // micro,
            "steps_per_generation": batch // micro, "num_iterations": epochs,
            "max_steps": steps * steps_per_round, "optimizer_steps_per_generation": steps_per_round}


class Phases:
    """Exclusive wall time per phase: a timed call nested in another is taken out of its parent's time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.gc_seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [name, start, seconds of timed children]

    def current(self) -> str:
        return self._stack[-1][0] if self._stack else "other"

    def begin(self, name: str) -> None:
        self._stack.append([name, time.perf_counter(), 0.0])

    def end(self) -> None:
        name, start, children = self._stack.pop()
        elapsed = time.perf_counter() - start
        self.seconds[name] += elapsed - children
        self.calls[name] += 1
        if self._stack:
            self._stack[-1][2] += elapsed

    def wrap(self, fn, name):
        """fn timed as phase `name` (a string, or a function of no arguments returning one, read at the call)."""

        def timed(*args, **kwargs):
            self.begin(name() if callable(name) else name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.end()

        return timed


class GcTimer:
    """Seconds spent in garbage collections, explicit or automatic, through gc's public callbacks, by phase."""

    def __init__(self, phases: Phases) -> None:
        self.seconds, self._start, self.phases = 0.0, 0.0, phases
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            spent = time.perf_counter() - self._start
            self.seconds += spent
            self.phases.gc_seconds[self.phases.current()] += spent


class OptimizerTimer(TrainerCallback):
    """Times optimizer.step() through the callbacks the Trainer calls around it."""

    def __init__(self, phases: Phases) -> None:
        self.phases = phases

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.phases.begin("optimizer")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.phases.end()


def instrument(trainer, phases: Phases) -> None:
    """Wrap TRL's phases on the trainer instance (instance attributes shadow the methods)."""
    lora_layer = next((m for m in trainer.model.modules() if hasattr(m, "_disable_adapters")), None)

    def logps_phase() -> str:
        if torch.is_grad_enabled():
            return "policy_forward"  # inside _compute_loss: the training forward
        # no-grad: the reference (adapters disabled) or the old log-probs before any update
        return "reference" if lora_layer is not None and lora_layer.disable_adapters else "old_logprobs"

    wrapped = {
        "_prepare_inputs": "prepare_inputs",  # split/shuffle/buffer of the generation batch (exclusive part)
        "_generate_and_score_completions": "score_other",  # padding, advantages, metric gathers (exclusive)
        "_generate": "generate",  # tokenize prompts, HF generate, decode, length metrics
        "_calculate_rewards": "reward",  # re-tokenize prompt + completion text, reward model forward
        "_compute_loss": "loss",  # loss arithmetic and metric gathers (exclusive of policy_forward)
        "training_step": "training_step_other",
        "_clip_grad_norm": "clip_grad",
        "get_batch_samples": "dataloader",
        "log": "log",
    }
    for attr, name in wrapped.items():
        setattr(trainer, attr, phases.wrap(getattr(trainer, attr), name))
    trainer._get_per_token_logps_and_entropies = phases.wrap(trainer._get_per_token_logps_and_entropies, logps_phase)
    trainer.accelerator.backward = phases.wrap(trainer.accelerator.backward, "backward")
    # once per train(): the Trainer's accelerator.free_memory() runs a full gc.collect() before the loop
    trainer.accelerator.free_memory = phases.wrap(trainer.accelerator.free_memory, "free_memory")
    for attr in ("create_optimizer_and_scheduler", "get_train_dataloader"):  # once per train()
        setattr(trainer, attr, phases.wrap(getattr(trainer, attr), "setup"))
    trainer.add_callback(OptimizerTimer(phases))


def build(s: dict):
    kind = s["trainer"]
    if kind not in ("grpo", "rloo"):
        raise ValueError(f"trainer={kind!r}: expected 'grpo' or 'rloo'")
    dtype = torch.bfloat16 if s.get("bf16", False) else torch.float32
    device = s.get("device", "cpu")
    tok = AutoTokenizer.from_pretrained(s["policy"])
    field = s.get("prompt_field", "prompt")
    prompts = [json.loads(line)[field] for line in Path(s["prompts"]).read_text().splitlines() if line.strip()]
    if s.get("chat_template", False):
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    dataset = Dataset.from_dict({"prompt": prompts})
    micro = s.get("micro_batch_size", s["mini_batch_size"])
    b = trl_batching(s["batch_size"], s["mini_batch_size"], micro, s["ppo_epochs"], s["num_generations"], s["steps"])
    common = {
        "output_dir": tempfile.mkdtemp(),
        "per_device_train_batch_size": b["per_device_train_batch_size"],
        "gradient_accumulation_steps": b["gradient_accumulation_steps"],
        "steps_per_generation": b["steps_per_generation"],
        "num_iterations": b["num_iterations"],
        "max_steps": b["max_steps"],
        "num_generations": s["num_generations"],
        "max_completion_length": s["response_length"],
        "temperature": s.get("temperature", 1.0),
        "learning_rate": s["learning_rate"],
        "lr_scheduler_type": s.get("lr_scheduler", "constant"),
        "weight_decay": s.get("weight_decay", 0.0),
        "max_grad_norm": s.get("max_grad_norm", 1.0),
        "beta": s["beta"],
        "epsilon": s.get("cliprange", 0.2),
        "disable_dropout": True,
        "use_vllm": False,
        "log_completions": False,
        "report_to": "none",
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": s.get("logging_steps", b["optimizer_steps_per_generation"]),
        "disable_tqdm": True,
        "use_cpu": device == "cpu",
        "bf16": s.get("bf16", False),
        "gradient_checkpointing": s.get("gradient_checkpointing", False),
        "dataloader_pin_memory": device != "cpu",
        "seed": s.get("seed", 0),
    }
    if kind == "grpo":
        loss_type = s.get("loss_type", "grpo")
        scale = s.get("scale_rewards", "group")
        args = GRPOConfig(**common, loss_type=LOSS_TYPES.get(loss_type, loss_type),
                          scale_rewards={True: "group", False: "none"}.get(scale, scale))
        trainer_cls = GRPOTrainer
    else:
        if s.get("loss_type") is not None or s.get("scale_rewards") is not None:
            raise ValueError("loss_type and scale_rewards are GRPO settings: RLOOTrainer has a sequence-level loss "
                             "and a leave-one-out baseline (normalize_advantages whitens over the batch)")
        args = RLOOConfig(**common, normalize_advantages=s.get("normalize_advantages", False))
        trainer_cls = RLOOTrainer
    lora = LoraConfig(r=s["lora_rank"], lora_alpha=s["lora_alpha"], target_modules=s["target_modules"],
                      lora_dropout=s.get("lora_dropout", 0.0), task_type="CAUSAL_LM")
    reward = AutoModelForSequenceClassification.from_pretrained(s["reward"], num_labels=1, dtype=dtype)
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(s["policy"], dtype=dtype),
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        reward_processing_classes=AutoTokenizer.from_pretrained(s["reward"]),
        peft_config=lora,
    )
    return trainer, b


def main() -> None:
    s = json.loads(sys.argv[1])
    torch.manual_seed(s.get("seed", 0))
    trainer, b = build(s)
    phases = Phases()
    instrument(trainer, phases)
    gc_timer = GcTimer(phases)
    profiler = cProfile.Profile() if s.get("profile_top", 0) > 0 else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    trainer.train()
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - start
    gc.callbacks.remove(gc_timer)

    rounds, steps = phases.calls["score_other"], trainer.state.global_step
    if rounds != s["steps"] or steps != b["max_steps"]:
        raise RuntimeError(f"TRL ran {rounds} generation rounds and {steps} optimizer steps, expected "
                           f"{s['steps']} and {b['max_steps']}")
    episodes = rounds * s["batch_size"]
    seconds = dict(phases.seconds)
    seconds["other"] = wall - sum(seconds.values())  # Trainer loop: callbacks, scheduler, zero_grad, flops count
    order = sorted(seconds, key=seconds.get, reverse=True)
    result = {
        "episodes_per_s": episodes / wall, "wall_s": wall, "gc_s": gc_timer.seconds, "gc_share": gc_timer.seconds / wall,
        "peak_rss_gib": peak_rss_gib(),
        # without the once-per-train() costs (the full gc.collect of free_memory, optimizer and dataloader setup)
        "episodes_per_s_loop": episodes / (wall - seconds.get("free_memory", 0.0) - seconds.get("setup", 0.0)),
        "phases": {p: seconds[p] / wall for p in order},
        "phase_s": {p: seconds[p] for p in order},
        "gc_by_phase": {p: v for p, v in sorted(phases.gc_seconds.items(), key=lambda kv: -kv[1])},
        "calls": dict(phases.calls),
        "episodes": episodes, "generation_rounds": rounds, "optimizer_steps": steps,
        "trainer": s["trainer"], "trl_version": trl.__version__, "trl": b,
    }
    if torch.cuda.is_available():
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(s["profile_top"])
        print(out.getvalue(), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
