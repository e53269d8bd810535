"""Peak GPU memory of experiments/baseline.yaml, estimated on a CPU.

    python -m mindprint.bench.memory_estimate [--layers 2,3] [--variants default,gc,rollout16,value_lora]

What it measures: live tensor bytes (each tensor storage counted once, from its allocation until it is
freed, by a TorchDispatchMode) while mindprint's own PPOTrainer runs one iteration of the baseline
experiment (batch 64, minibatch 16, micro-batch 8, rollout batch 64, 53 new tokens, ~512-token prompts) with
policy and value model at Qwen3-0.6B width (hidden 1024, vocabulary 151,936) but only L decoder layers:
frozen weights bf16, trained tensors fp32, as `model.dtype=auto` gives on a GPU. Each variant and L runs in
a fresh process. The peak of each phase (generate; the rollout's no-grad forwards for old log-probs,
reference and values; the update) is extrapolated linearly to 28 layers through the two largest L:
peak(28) = peak(L₂) + (28 − L₂)·(peak(L₂) − peak(L₁))/(L₂ − L₁). Use L ≥ 2: with a single layer some
phases peak at a different moment (one hidden state less), so L = 1 sits off the line.

Variants (join with '+'): default = the baseline without gradient checkpointing (pinned off, whatever
baseline.yaml says), gc = model.gradient_checkpointing=true, rollout16 = ppo.rollout_batch_size=16,
value_lora = lora.value_rank=32 (value model through a LoRA instead of fully trained).

A rule scores instead of the reward model (Skywork-Reward-V2-Qwen3-8B); its weights are counted per
precision from its architecture on the meta device, and its forward (reward.batch_size rows, no grad) is
estimated from its shapes. Total = max over phases (reward forward included) of the phase's peak at 28
layers, plus the reward model's weights.

Shortcuts, none of which changes a peak: Adam's state is made before the measured iteration by one
optimizer step on zero gradients (the real run has it from its second iteration on); the update runs on
the first minibatch only (all four are alike and free their gradients in between; --full-update runs all);
ppo.ppo_epochs=1; the LM head folds its input to 2-D (`fold_lm_head`: a CPU-only copy the GPU never makes).

Limits: tensor bytes only. A GPU adds the CUDA context (~0.5 GiB, outside torch's counters), cuBLAS
workspaces, kernels' scratch space and the caching allocator's rounding and fragmentation (often 5-15% of
the peak: max_memory_reserved − max_memory_allocated). Tensors made outside the dispatcher (e.g.
`torch.tensor` from a Python list) are missed (kilobytes here). Random weights rarely sample a stop token,
so every response runs the full 53 tokens: the worst case, which real runs also reach. CPU attention
kernels may keep other scratch tensors than CUDA's (both O(sequence) here, not O(sequence²)).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import subprocess
import sys
import time
import warnings
import weakref
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

GiB = 2**30
FULL_LAYERS = 28  # Qwen3-0.6B
VARIANTS = {  # name -> overrides; join names with '+' to combine them (later names win)
    "default": {},  # experiments/baseline.yaml as the brief gave it: no gradient checkpointing
    "gc": {"model.gradient_checkpointing": "true"},
    "rollout16": {"ppo.rollout_batch_size": "16"},
    "value_lora": {"lora.value_rank": "32"},
    # critic-free algorithms: no value model (GRPO, Dr. GRPO and RLOO alike at equal episodes; their group
    # size changes which prompts are drawn, not the shapes)
    "grpo": {"algo": "grpo"},
    "rloo": {"algo": "rloo"},
    "reinforce_pp": {"algo": "reinforce_pp"},
}
PHASES = ("rest", "generate", "old_logprobs", "reference", "values", "update")


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages: those alive on entry (found through gc and `roots`) and every op
    output's, each storage counted once (views share it) until it is freed; with a peak per phase."""

    def __init__(self, roots=()):
        super().__init__()
        self.index = WeakIdKeyDictionary()  # storage -> [bytes counted]
        self.refs = {}  # id(weakref) -> (weakref, cell): keeps the weakrefs whose callbacks subtract
        self.live = self.peak = 0
        self.peaks: dict[str, int] = {}
        gc.collect()
        with warnings.catch_warnings():  # isinstance() on some deprecated torch objects warns
            warnings.simplefilter("ignore")
            for obj in [*gc.get_objects(), *roots]:
                if isinstance(obj, torch.Tensor):
                    self.add(obj)

    def add(self, t: torch.Tensor) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        st = t.untyped_storage()
        cell = self.index.get(st)
        if cell is None:
            cell = self.index[st] = [0]
            ref = weakref.ref(st, self._freed)
            self.refs[id(ref)] = (ref, cell)
        self.live += st.nbytes() - cell[0]  # new storage, or one resized in place (out=, resize_)
        cell[0] = st.nbytes()
        self.peak = max(self.peak, self.live)

    def _freed(self, ref) -> None:
        _, cell = self.refs.pop(id(ref))
        self.live -= cell[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            self.add(t)
        return out

    @contextmanager
    def phase(self, name: str):
        outer, self.peak = self.peak, self.live
        try:
            yield
        finally:
            self.peaks[name] = max(self.peaks.get(name, 0), self.peak)
            self.peak = max(outer, self.peak)


def sanity_check() -> None:
    """The counter sees a known allocation, a view (no new bytes), a free, and a backward's gradients."""
    x = None
    with LiveBytes() as lb:
        start = lb.live
        x = torch.empty(1000, 1000)
        view = x[10:]  # noqa: F841
        assert lb.live - start == 4_000_000, lb.live - start
        del x, view
        assert lb.live == start, lb.live - start
        w = torch.zeros(1000, 1000, requires_grad=True)
        (torch.ones(10, 1000) @ w).sum().backward()
        assert lb.live - start >= 8_000_000  # w and w.grad
        del w
        assert lb.live == start, lb.live - start


# ------------------------------------------------------------------ one measurement (own process)

def fold_lm_head(model: torch.nn.Module) -> None:
    """CPU shim, same bytes as a GPU: with no grad, torch.matmul does not fold a non-contiguous 3-D input
    (the logits_to_keep slice of the hidden states) into one mm but runs bmm on the weight expanded over the
    batch, and the CPU bmm copies that expansion (B × 151,936 × 1024 bf16: 19 GiB at B = 64, unseen by the
    counter as it is kernel-internal); CUDA's bmm reads it with batch stride 0. Folding it here costs one
    B × T × 1024 copy of the input (7 MiB at B = 64) and makes the run minutes faster."""
    head = model.get_output_embeddings()

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and not x.is_contiguous():
            return torch.nn.functional.linear(x.reshape(-1, x.shape[-1]), head.weight, head.bias).view(
                *x.shape[:-1], -1)
        return torch.nn.functional.linear(x, head.weight, head.bias)

    head.forward = forward


def overrides(model_dir: str, prompts: Path, variant: str) -> list[str]:
    """bench_gpu's baseline overrides, on the CPU in bf16, a rule instead of the reward model, one epoch.
    Gradient checkpointing is pinned (off unless the variant turns it on), whatever baseline.yaml says."""
    extra = {"model.gradient_checkpointing": "false"}
    for name in variant.split("+"):
        extra.update(VARIANTS[name])
    return [
        "+experiment=baseline", f"model.name={model_dir}", "model.dtype=bfloat16", "device=cpu",
        "reward.name=null", "reward.rule=mindprint.synthetic.rules:vowel_share",
        f"data.name={prompts}", "data.eval_split=null", "data.eval_size=0", "data.max_prompt_length=512",
        "ppo.steps=1", "ppo.ppo_epochs=1", "ppo.eval_every=0", "checkpoint.every=0",
        *(f"{k}={v}" for k, v in extra.items()),
    ]


def measure(model_dir: str, prompts: Path, variant: str, full_update: bool = False) -> dict:
    from accelerate import Accelerator

    from mindprint.cli import compose
    from mindprint.engine.data import load_prompts
    from mindprint.engine.models import build_models
    from mindprint.engine.rewards import build_scorer
    from mindprint.engine.trainer import Trainer

    torch.manual_seed(0)
    cfg = compose(overrides(model_dir, prompts, variant))
    models = build_models(cfg, torch.device("cpu"))
    fold_lm_head(models.policy)
    trainer = Trainer(cfg, models, load_prompts(cfg.data, models.tokenizer, cfg.seed),
                         build_scorer(cfg.reward, None, None), Path("/tmp/memory_estimate_run"),
                         Accelerator(cpu=True))
    learner, actor = trainer.learner, trainer.actor
    trained = learner.policy_params + learner.value_params
    for p in trained:  # Adam's moments, as they exist from the second iteration on
        p.grad = torch.zeros_like(p)
    learner.optimizer.step()
    learner.optimizer.zero_grad(set_to_none=True)
    value_params = [*models.value.parameters()] if models.value is not None else []
    value_buffers = [*models.value.buffers()] if models.value is not None else []
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    parts = {
        "policy_frozen": nbytes(p for p in models.policy.parameters() if not p.requires_grad),
        "policy_trained": nbytes(learner.policy_params),
        "value_frozen": nbytes(p for p in value_params if not p.requires_grad),
        "value_trained": nbytes(learner.value_params),
        "adam_state": nbytes(v for s in learner.optimizer.state.values() for v in s.values()
                             if isinstance(v, torch.Tensor)),
    }
    roots = [*models.policy.parameters(), *value_params, *models.policy.buffers(), *value_buffers,
             *(v for s in learner.optimizer.state.values() for v in s.values())]
    seconds = {}
    with LiveBytes(roots) as lb:
        lb.peaks["rest"] = lb.live

        def tracked(name, fn):
            def run(*args, **kwargs):
                start = time.perf_counter()
                with lb.phase(name):
                    out = fn(*args, **kwargs)
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
                print(f"{name}: {seconds[name]:.0f} s, peak {lb.peaks[name] / GiB:.2f} GiB", file=sys.stderr, flush=True)
                return out
            return run

        # rollout() calls batched() three times (twice without a critic): old log-probs, reference, values
        names = iter(("old_logprobs", "reference", "values"))
        batched = actor.batched
        actor.batched = lambda fn, rows: tracked(next(names), batched)(fn, rows)
        actor.generate = tracked("generate", actor.generate)
        update = learner.update
        if not full_update:  # minibatches are alike and free their gradients between them: the first has the peak
            def update(r, adv, returns, kl_coef, n=cfg.ppo.mini_batch_size, update=learner.update):
                tensors = {f.name: getattr(r, f.name)[:n] for f in dataclasses.fields(r)
                           if getattr(r, f.name) is not None}
                return update(dataclasses.replace(r, **tensors), adv[:n], None if returns is None else returns[:n],
                              kl_coef)
        learner.update = tracked("update", update)
        start = time.perf_counter()
        with lb.phase("step"):
            metrics = trainer.step()
        seconds["step"] = time.perf_counter() - start
    return {"peaks": lb.peaks, "parts": parts, "seconds": seconds,
            "response_length": metrics["env/response_length"], "prompts": len(trainer.prompts.train)}


# ------------------------------------------------------------------ reward model, analytically

def reward_model_bytes() -> dict[str, int]:
    """Skywork-Reward-V2-Qwen3-8B's weights per precision. Quantized: every decoder Linear (bitsandbytes
    keeps the score head, embeddings and norms in bf16). int8 (LLM.int8): 1 byte/weight + an fp32 scale per
    output row; nf4: ½ byte/weight + an fp32 absmax per 64-weight block (no double quantization)."""
    from transformers import AutoModelForSequenceClassification

    from mindprint.synthetic.shapes import QWEN3_8B, qwen3_config

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(qwen3_config(QWEN3_8B, num_labels=1),
                                                               dtype=torch.bfloat16)
    linear = rows = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "score":
            linear += module.weight.numel()
            rows += module.out_features
    total = sum(p.numel() for p in model.parameters())
    other = 2 * (total - linear)
    return {"params": total, "8bit": linear + 4 * rows + other, "4bit": linear // 2 + 4 * (linear // 64) + other,
            "bf16": 2 * total}


def reward_forward_bytes(rows: int = 16, tokens: int = 600, quantized: str = "8bit") -> int:
    """Rough transient of one scoring batch (reward.batch_size rows of prompt + response + template), no grad.
    Qwen3's config has use_cache=True and rewards.py does not pass use_cache=False, so the forward fills a
    KV cache of all 36 layers (bf16). On top, the MLP at its widest: residual and normed input, gate, up
    and act·up outputs in bf16; int8 (bitsandbytes LLM.int8) adds, inside a 12288-wide matmul, its int32
    result and fp16 dequantized copy, and an fp16 copy of the input with its int8 quantization; nf4 adds
    one dequantized bf16 weight."""
    n, hidden, mlp, layers, kv = rows * tokens, 4096, 12288, 36, 2 * 8 * 128
    cache = layers * n * kv * 2
    working = 2 * n * hidden * 2 + 3 * n * mlp * 2
    extra = {"8bit": n * mlp * 6 + n * hidden * 3, "4bit": hidden * mlp * 2, "bf16": 0}[quantized]
    return cache + working + extra


# ------------------------------------------------------------------ driver

def extrapolate(by_layers: dict[int, float], target: int = FULL_LAYERS) -> float:
    """Linear through the two largest layer counts (L = 1 sits off the line: see the module docstring)."""
    (l1, y1), (l2, y2) = sorted(by_layers.items())[-2:]
    return y1 + (target - l1) * (y2 - y1) / (l2 - l1)


def ensure_model(workdir: Path, layers: int) -> str:
    from mindprint.synthetic.shapes import QWEN3_0_6B, build_random

    path = workdir / "models" / f"L{layers}"
    if not (path / "config.json").exists():
        build_random(path, {**QWEN3_0_6B, "num_hidden_layers": layers}, "causal", "cpu")
    return str(path)


def ensure_prompts(workdir: Path, model_dir: str, tokens: int = 512) -> Path:
    from mindprint.bench.gpu import write_prompts

    path = workdir / f"prompts-{tokens}.jsonl"
    if not path.exists():
        write_prompts(model_dir, path, n=256, tokens=tokens)
    return path


def run_one(workdir: Path, variant: str, layers: int, full_update: bool = False) -> dict:
    cache = workdir / "results" / f"{variant}-L{layers}{'-full' if full_update else ''}.json"
    for path in (cache, cache.with_name(f"{variant}-L{layers}-full.json")):  # a full update has the same peaks
        if path.exists():
            return json.loads(path.read_text())
    model_dir = ensure_model(workdir, layers)
    prompts = ensure_prompts(workdir, model_dir)
    start = time.perf_counter()
    print(f"measuring {variant} at L={layers} ...", file=sys.stderr, flush=True)
    flags = ["--full-update"] if full_update else []
    proc = subprocess.run([sys.executable, __file__, "--measure", variant, model_dir, str(prompts), *flags],
                          stdout=subprocess.PIPE, text=True)  # its progress goes to our stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} L={layers} failed (exit code {proc.returncode}; see its output above)")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=1))
    return result


def report(results: dict[str, dict[int, dict]], target_gib: float) -> None:
    rm = reward_model_bytes()
    rf = {q: reward_forward_bytes(quantized=q) for q in ("8bit", "4bit", "bf16")}
    print(f"reward model, {rm['params'] / 1e9:.2f} B params; weights: "
          + ", ".join(f"{q} {rm[q] / GiB:.2f} GiB" for q in rf)
          + "; forward transient (16 rows × 600 tokens, estimated): " + ", ".join(f"{q} {v / GiB:.2f} GiB"
                                                                              for q, v in rf.items()))
    for variant, runs in results.items():
        layers = sorted(runs)
        slopes = list(zip(layers, layers[1:]))
        print(f"\n== {variant} ==  peak live bytes per phase: measured MiB at L layers, MiB per layer between "
              f"them, GiB extrapolated to {FULL_LAYERS} layers from L = {layers[-2]}, {layers[-1]}")
        print(f"{'phase':<14}" + "".join(f"{'L=' + str(L):>9}" for L in layers)
              + "".join(f"{f'/L {a}-{b}':>10}" for a, b in slopes) + f"{'@28 GiB':>9}")
        at28 = {}
        phases = [p for p in PHASES if p in runs[layers[0]]["peaks"]]  # no "values" without a critic
        for phase in phases:
            ys = {L: runs[L]["peaks"][phase] for L in layers}
            at28[phase] = extrapolate(ys)
            print(f"{phase:<14}" + "".join(f"{ys[L] / 2**20:>9.0f}" for L in layers)
                  + "".join(f"{(ys[b] - ys[a]) / (b - a) / 2**20:>10.1f}" for a, b in slopes)
                  + f"{at28[phase] / GiB:>9.2f}")
        parts = {k: extrapolate({L: runs[L]["parts"][k] for L in layers}) for k in runs[layers[0]]["parts"]}
        print(f"at rest, {FULL_LAYERS} layers: " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in parts.items()) + " GiB")
        train = max((at28[p], p) for p in phases[1:])
        for q in rf:
            peak, where = max(train, (at28["rest"] + rf[q], "reward forward"))
            total = (peak + rm[q]) / GiB
            print(f"total with the {q:>4} reward model: {total:6.2f} GiB (peak in {where}), "
                  f"{target_gib - total:+.2f} GiB to {target_gib:g} GiB")
        print("wall seconds per run: " + ", ".join(f"L={L} {runs[L].get('wall_s', 0):.0f}" for L in layers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="2,3", help="comma-separated layer counts (the two largest extrapolate)")
    parser.add_argument("--variants", default="default,gc,rollout16,value_lora",
                        help=f"comma-separated; each one of {', '.join(VARIANTS)} or several joined by '+'")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/memory_estimate"),
                        help="random models, prompts and cached results (delete results/ to re-measure)")
    parser.add_argument("--target-gib", type=float, default=24.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--full-update", action="store_true",
                        help="run the update on all minibatches (default: the first, which has the same peak)")
    parser.add_argument("--measure", nargs=3, metavar=("VARIANT", "MODEL_DIR", "PROMPTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure:
        from mindprint.console import hide_progress_bars

        hide_progress_bars()
        variant, model_dir, prompts = args.measure
        print(json.dumps(measure(model_dir, Path(prompts), variant, args.full_update)))
        return
    sanity_check()
    layers = [int(x) for x in args.layers.split(",")]
    variants = args.variants.split(",")
    for v in variants:
        unknown = [n for n in v.split("+") if n not in VARIANTS]
        if unknown:
            parser.exit(2, f"error: --variants: {unknown[0]!r} is not one of {', '.join(VARIANTS)}\n")
    results = {}
    for v in variants:
        results[v] = {}
        for L in layers:
            results[v][L] = run_one(args.workdir, v, L, args.full_update)
            print(f"measured {v} L={L} in {results[v][L]['wall_s']:.0f} s", file=sys.stderr, flush=True)
    report(results, args.target_gib)


if __name__ == "__main__":
    main()
