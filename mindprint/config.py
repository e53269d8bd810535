"""Typed run configuration: one dataclass per Hydra config group, and `RunConfig` holding them.

This module is the single home of defaults. The YAML files under `conf/` only choose between
presets; every key they set must exist here, with the type given here, or Hydra refuses it.
Value checks run in `__post_init__`, so they fire when Hydra's composed config becomes objects
(`OmegaConf.to_object`), and raise `ConfigError` with a one-line message that names the key,
the bad value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore


class ConfigError(ValueError):
    """A user mistake in the configuration; reported as one line, exit code 2."""


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


QUANTIZATIONS = ("8bit", "4bit", "none")
# Rules mindprint ships that have moved: a config written before the move still composes, resumes and compares.
MOVED_RULES = {"mindprint.rewards:vowel_share": "mindprint.synthetic.rules:vowel_share"}
KV_CACHES = ("dynamic", "static")  # ppo.kv_cache
DTYPES = ("auto", "float32", "bfloat16", "float16")
# transformers.get_scheduler names that need nothing beyond the step count: the loop steps the schedule once per
# iteration, with no metric (reduce_lr_on_plateau, greedy) and no extra arguments (*_with_min_lr, warmup_stable_decay)
LR_SCHEDULERS = ("constant", "linear", "cosine", "cosine_with_restarts", "polynomial", "inverse_sqrt")


@dataclass
class ModelConfig:
    """Base model for the policy, the value model and the reference."""

    name: str = "Qwen/Qwen3-0.6B"  # hub name or local directory
    value_name: Optional[str] = None  # value model's base; None = same as `name`
    dtype: str = "auto"  # auto: bfloat16 on a GPU that supports it, float32 on CPU
    reference: str = "adapter_disabled"  # or "copy": a separate frozen model
    gradient_checkpointing: bool = False
    # fp32 matmuls (the trained value model and LoRA are kept in fp32) on tensor cores, as TF32, on GPUs
    # from Ampere on; roughly 8× the fp32 rate for a 10-bit mantissa in the inputs. No effect on CPU.
    tf32: bool = True

    def __post_init__(self) -> None:
        _require(self.dtype in DTYPES, "model.dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        _require(
            self.reference in ("adapter_disabled", "copy"),
            "model.reference",
            self.reference,
            "adapter_disabled or copy",
        )


@dataclass
class LoraConfig:
    """LoRA adapter of the policy (and, with `value_rank` > 0, of the value model)."""

    rank: int = 32
    alpha: float = 64.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    dropout: float = 0.0  # > 0 makes the PPO ratio differ from 1 even before any update
    value_rank: int = 0  # 0: the value model is trained fully; r > 0: through its own rank-r LoRA

    def __post_init__(self) -> None:
        _require(self.rank >= 1, "lora.rank", self.rank, "an integer >= 1")
        _require(self.alpha > 0, "lora.alpha", self.alpha, "a number > 0")
        _require(0 <= self.dropout < 1, "lora.dropout", self.dropout, "a number in [0, 1)")
        _require(len(self.target_modules) > 0, "lora.target_modules", self.target_modules, "a non-empty list")
        _require(self.value_rank >= 0, "lora.value_rank", self.value_rank, "an integer >= 0 (0 = full training)")


@dataclass
class PPOConfig:
    """PPO hyper-parameters; names follow TRL's PPOConfig where they exist."""

    steps: int = 200  # PPO iterations (rollout + update) in the run
    batch_size: int = 64  # episodes (prompt, response) per iteration, per process
    mini_batch_size: int = 16  # episodes per optimizer step
    micro_batch_size: int = 8  # episodes per forward/backward (gradient accumulation inside a minibatch)
    # episodes per generate() call and per no-grad rollout forward (TRL's local_rollout_forward_batch_size)
    rollout_batch_size: int = 64
    # static: a KV cache of fixed size (data.max_prompt_length + response_length, so keep that near the longest
    # prompt: every decoding step attends over all of it), whose decoding step transformers compiles on a GPU
    # (torch.compile with CUDA graphs: no per-kernel launch cost, which bounds a small model's decoding).
    # The first rollout pays the compile; one GPU, DDP or ZeRO-1/2.
    kv_cache: str = "dynamic"
    ppo_epochs: int = 4
    learning_rate: float = 1.41e-5  # policy (LoRA) learning rate, seed 000
    value_learning_rate: float = 1.41e-5
    lr_scheduler: str = "constant"  # one of LR_SCHEDULERS (transformers.get_scheduler), stepped once per iteration
    # AdamW's decoupled weight decay, on every trained tensor: the policy's LoRA and the value model
    # (its whole weights, or its LoRA and head with lora.value_rank > 0). 0 as in TRL and HF Trainer.
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    init_kl_coef: float = 0.2  # β at the start (seed 000)
    adaptive_kl: bool = True  # Ziegler et al.'s controller; False keeps β = init_kl_coef
    target_kl: float = 6.0  # seed 000
    horizon: int = 10000
    kl_estimator: str = "k1"  # k1: log π − log π_ref; k3: (r − 1) − log r with r = π_ref/π
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False
    response_length: int = 53
    temperature: float = 0.7
    missing_eos_penalty: Optional[float] = None  # replaces the score of responses without a stop token
    steps_per_topic: int = 50  # with data.topic_field: iterations per topic before moving on (seed 000)
    eval_every: int = 0  # iterations between evaluations on held-out prompts; 0 = only at the end
    eval_temperature: float = 0.0  # 0 = greedy
    num_sample_generations: int = 4  # rows of the (prompt, response, score) table per evaluation
    max_bad_updates: int = 3  # iterations in a row with NaN/Inf in scores, advantages or losses before stopping

    def __post_init__(self) -> None:
        pos = "an integer >= 1"
        for key in ("steps", "batch_size", "mini_batch_size", "micro_batch_size", "rollout_batch_size", "ppo_epochs",
                    "horizon"):
            _require(getattr(self, key) >= 1, f"ppo.{key}", getattr(self, key), pos)
        _require(self.response_length >= 1, "ppo.response_length", self.response_length, pos)
        _require(
            self.batch_size % self.mini_batch_size == 0,
            "ppo.mini_batch_size",
            self.mini_batch_size,
            f"a divisor of ppo.batch_size={self.batch_size}",
        )
        _require(
            self.mini_batch_size % self.micro_batch_size == 0,
            "ppo.micro_batch_size",
            self.micro_batch_size,
            f"a divisor of ppo.mini_batch_size={self.mini_batch_size}",
        )
        _require(0 < self.cliprange < 1, "ppo.cliprange", self.cliprange, "a number in (0, 1)")
        _require(self.cliprange_value > 0, "ppo.cliprange_value", self.cliprange_value, "a number > 0")
        _require(self.learning_rate > 0, "ppo.learning_rate", self.learning_rate, "a number > 0")
        _require(self.value_learning_rate > 0, "ppo.value_learning_rate", self.value_learning_rate, "a number > 0")
        _require(self.max_grad_norm > 0, "ppo.max_grad_norm", self.max_grad_norm, "a number > 0")
        _require(self.lr_scheduler in LR_SCHEDULERS, "ppo.lr_scheduler", self.lr_scheduler,
                 f"one of {', '.join(LR_SCHEDULERS)}")
        _require(self.weight_decay >= 0, "ppo.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.init_kl_coef >= 0, "ppo.init_kl_coef", self.init_kl_coef, "a number >= 0")
        _require(self.target_kl > 0, "ppo.target_kl", self.target_kl, "a number > 0")
        _require(self.kv_cache in KV_CACHES, "ppo.kv_cache", self.kv_cache, " or ".join(KV_CACHES))
        _require(self.kl_estimator in ("k1", "k3"), "ppo.kl_estimator", self.kl_estimator, "k1 or k3")
        _require(0 <= self.gamma <= 1, "ppo.gamma", self.gamma, "a number in [0, 1]")
        _require(0 <= self.lam <= 1, "ppo.lam", self.lam, "a number in [0, 1]")
        _require(self.vf_coef >= 0, "ppo.vf_coef", self.vf_coef, "a number >= 0")
        _require(self.temperature > 0, "ppo.temperature", self.temperature, "a number > 0")
        _require(self.eval_temperature >= 0, "ppo.eval_temperature", self.eval_temperature, "a number >= 0")
        _require(self.steps_per_topic >= 1, "ppo.steps_per_topic", self.steps_per_topic, pos)
        _require(self.eval_every >= 0, "ppo.eval_every", self.eval_every, "an integer >= 0")
        _require(self.max_bad_updates >= 1, "ppo.max_bad_updates", self.max_bad_updates, pos)
        _require(self.num_sample_generations >= 0, "ppo.num_sample_generations", self.num_sample_generations,
                 "an integer >= 0")


ALGORITHMS = ("ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp")
CRITIC_FREE = ("grpo", "dr_grpo", "rloo", "reinforce_pp")  # no value model: not built, trained or saved
GROUP_BASELINES = ("grpo", "dr_grpo", "rloo")  # a baseline from the other responses to the same prompt
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")  # estimators.aggregate
# Keys that only the value model reads: set on the command line with a critic-free algorithm, they get a warning.
CRITIC_KEYS = ("ppo.vf_coef", "ppo.cliprange_value", "ppo.value_learning_rate", "ppo.lam", "lora.value_rank",
               "model.value_name")


@dataclass
class AlgoConfig:
    """The advantage estimator and what goes with it; conf/algo/NAME.yaml holds each paper's estimator, group
    size, loss aggregation and KL placement (β stays ppo.init_kl_coef for all: one KL budget to compare at).

    ppo           GAE(γ, λ) on per-token rewards with a value model          Schulman et al. 2017
    grpo          Â = (r − mean_group)/(std_group + ε) on every token        Shao et al. 2024 (arXiv:2402.03300)
    dr_grpo       Â = r − mean_group, token sums over a constant             Liu et al. 2025 (arXiv:2503.20783)
    rloo          Â = r_i − mean_{j≠i} r_j                                   Ahmadian et al. 2024 (arXiv:2402.14740)
    reinforce_pp  Â = whitened token returns, no critic, no group            Hu 2025 (arXiv:2501.03262)
    Every algorithm updates through the clipped surrogate (ppo.cliprange, ppo.ppo_epochs) and is anchored to the
    reference by β (ppo.init_kl_coef, adaptive with ppo.adaptive_kl), placed where `kl_in` says.
    """

    name: str = "ppo"
    # G responses sampled per prompt. ppo.batch_size counts episodes (prompt, response), so an iteration holds
    # batch_size / G prompts and budgets compare at equal episodes whatever G is.
    group_size: int = 1
    # How per-token losses become one number: token_mean (Σ over the minibatch's real tokens / their count),
    # seq_mean_token_mean (each response's token mean, then the mean over responses: GRPO's 1/G Σ 1/|o| Σ_t),
    # seq_mean_token_sum_norm (token sums / (responses × ppo.response_length): Dr. GRPO's constant normaliser).
    loss_aggregation: str = "token_mean"
    # reward: −β·KL per token in the reward (PPO, REINFORCE++), or −β·Σ_t KL on the score before a group baseline
    # (RLOO; GRPO as verl's use_kl_in_reward); loss: β·k3 per token added to the policy loss (GRPO, Dr. GRPO).
    kl_in: str = "reward"
    std_eps: float = 1e-4  # grpo: added to the group's std (TRL 1.16; OpenRLHF uses 1e-9, verl 1e-6)
    unbiased_std: bool = True  # grpo: the group's std with G − 1 (TRL, OpenRLHF, verl); false: with G

    def __post_init__(self) -> None:
        _require(self.name in ALGORITHMS, "algo.name", self.name, f"one of {', '.join(ALGORITHMS)}")
        _require(self.group_size >= 1, "algo.group_size", self.group_size, "an integer >= 1")
        if self.name in GROUP_BASELINES:
            _require(self.group_size >= 2, "algo.group_size", self.group_size,
                     f"an integer >= 2 with algo={self.name} (its baseline is the other responses to the same prompt)")
        _require(self.loss_aggregation in AGGREGATIONS, "algo.loss_aggregation", self.loss_aggregation,
                 f"one of {', '.join(AGGREGATIONS)}")
        _require(self.kl_in in ("reward", "loss"), "algo.kl_in", self.kl_in, "reward or loss")
        _require(self.std_eps >= 0, "algo.std_eps", self.std_eps, "a number >= 0")

    @property
    def critic(self) -> bool:
        """Whether the algorithm has a value model."""
        return self.name not in CRITIC_FREE


@dataclass
class RewardConfig:
    """What scores a (prompt, response): a sequence-classification reward model, or a rule."""

    name: Optional[str] = "Skywork/Skywork-Reward-V2-Qwen3-8B"  # hub name or local dir of a sequence classifier
    quantization: str = "8bit"  # 8bit | 4bit | none (bitsandbytes)
    dtype: str = "auto"
    rule: Optional[str] = None  # "module:function" scoring (prompts, responses) -> list[float]; replaces the model
    path: Optional[str] = None  # reward=local: a saved classifier's directory (reward.name follows it)
    batch_size: int = 16
    max_length: int = 2048  # reward-model tokens per conversation; longer ones are cut from the left

    def __post_init__(self) -> None:
        self.rule = MOVED_RULES.get(self.rule, self.rule)
        _require(
            self.quantization in QUANTIZATIONS,
            "reward.quantization",
            self.quantization,
            f"one of {', '.join(QUANTIZATIONS)}",
        )
        _require(self.dtype in DTYPES, "reward.dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        _require(
            (self.name is None) != (self.rule is None),
            "reward.name",
            self.name,
            "exactly one of reward.name or reward.path (with reward=local) for a reward model, and reward.rule "
            "for a callable",
        )
        _require(self.batch_size >= 1, "reward.batch_size", self.batch_size, "an integer >= 1")
        _require(self.max_length >= 8, "reward.max_length", self.max_length, "an integer >= 8")


@dataclass
class DataConfig:
    """Prompts: a hub dataset or a local .jsonl/.json/.csv/.parquet/.txt file."""

    name: str = "trl-lib/tldr"  # hub name or local file
    split: str = "train"
    prompt_field: str = "prompt"
    topic_field: Optional[str] = None  # group prompts by this column, ppo.steps_per_topic iterations each
    eval_split: Optional[str] = "validation"  # held-out prompts from this split; None = the last `eval_size` prompts
    eval_name: Optional[str] = None  # held-out prompts from another file (or hub dataset); data.eval_split is its split
    eval_size: int = 16
    max_prompt_length: int = 512  # tokens; longer prompts are skipped and counted
    apply_chat_template: bool = False  # wrap each prompt as a user turn of the policy's chat template
    shuffle: bool = True

    def __post_init__(self) -> None:
        _require(self.eval_size >= 0, "data.eval_size", self.eval_size, "an integer >= 0")
        _require(self.max_prompt_length >= 1, "data.max_prompt_length", self.max_prompt_length, "an integer >= 1")
        _require(self.eval_name != self.name, "data.eval_name", self.eval_name,
                 "another file than data.name (held-out prompts are not the training prompts)")


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl: nowhere, or W&B (WANDB_MODE=offline works)."""

    backend: str = "none"  # none | wandb
    project: str = "mindprint"
    entity: Optional[str] = None
    group: Optional[str] = None  # None: the sweep (multirun) or the experiment, so a dashboard groups them
    name: Optional[str] = None  # None: the overrides that set this run apart, e.g. "lora.rank=8"
    tags: list[str] = field(default_factory=list)
    job_type: str = "ppo"
    mode: Optional[str] = None  # online | offline | disabled; None: WANDB_MODE or wandb's default

    def __post_init__(self) -> None:
        _require(self.backend in ("none", "wandb"), "logger.backend", self.backend, "none or wandb")
        _require(
            self.mode in (None, "online", "offline", "disabled"),
            "logger.mode",
            self.mode,
            "online, offline, disabled or null",
        )


@dataclass
class CheckpointConfig:
    """Checkpoints in RUN_DIR/checkpoints: everything needed to continue the run exactly."""

    every: int = 50  # iterations between checkpoints; 0 = only on SIGTERM/SIGINT
    keep: int = 2  # newest checkpoints kept

    def __post_init__(self) -> None:
        _require(self.every >= 0, "checkpoint.every", self.every, "an integer >= 0 (0 = only on a signal)")
        _require(self.keep >= 1, "checkpoint.keep", self.keep, "an integer >= 1")


@dataclass
class ObjectiveConfig:
    """The float a run returns to a sweeper (hydra/sweeper=optuna maximises it); defined in mindprint.analysis.stats.

    held_out_reward: eval/scores at the run's last evaluation. reward_minus_kl: final reward − kl_weight · final
    KL (means over the last fifth of iterations of objective/scores and objective/kl, as the compare report).
    """

    name: str = "held_out_reward"  # held_out_reward | reward_minus_kl
    kl_weight: float = 0.05  # λ of reward_minus_kl, reward units per nat of KL

    def __post_init__(self) -> None:
        _require(self.name in ("held_out_reward", "reward_minus_kl"), "objective.name", self.name,
                 "held_out_reward or reward_minus_kl")
        _require(self.kl_weight >= 0, "objective.kl_weight", self.kl_weight, "a number >= 0")


@dataclass
class EvalConfig:
    """What a run's evaluations measure on the held-out prompts besides the reward's score (eval/scores) and KL.

    scorers: extra judges of the same generations, logged as eval/NAME (a proxy-versus-gold study, Gao et al. 2022:
    train against one reward model, watch another): "module:function" (a rule, as reward.rule) or the hub name or
    directory of a sequence-classification reward model (loaded unquantized).
    style: a style target written by the voice pipeline (data/style.json): eval/style_delta, the Burrows' Delta of
    the generations to the author's held-out text, a distance the reward model cannot move by being fooled.
    """

    scorers: dict[str, str] = field(default_factory=dict)
    style: Optional[str] = None

    def __post_init__(self) -> None:
        for name in self.scorers:
            _require(name.replace("_", "").isalnum() and name not in ("scores", "kl", "style_delta"),
                     f"eval.scorers.{name}", self.scorers[name],
                     "a name of letters, digits and _ other than scores, kl and style_delta (logged as eval/NAME)")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    dry_run: bool = False  # build every model, print the table, exit
    device: str = "auto"  # auto | cpu | cuda
    resume: bool = False  # continue from the newest checkpoint in the run directory (same hydra.run.dir)

    def __post_init__(self) -> None:
        _require(self.device in ("auto", "cpu", "cuda"), "device", self.device, "auto, cpu or cuda")
        _require(self.ppo.batch_size % self.algo.group_size == 0, "ppo.batch_size", self.ppo.batch_size,
                 f"a multiple of algo.group_size={self.algo.group_size} (it counts episodes: prompts × responses "
                 "per prompt)")


@dataclass
class PairsConfig:
    """Preference pairs: prompt/chosen/rejected (strings or TRL's conversational lists), hub or local file."""

    name: str = "outputs/voice/pairs.jsonl"  # hub name or local .jsonl/.json/.csv/.parquet
    split: str = "train"
    eval_split: Optional[str] = None  # None: hold out the last `eval_size` pairs after a seeded shuffle
    eval_size: int = 100
    eval_name: Optional[str] = None  # held-out pairs from another local file, all of them (eval_split, eval_size unused)

    def __post_init__(self) -> None:
        _require(self.eval_size >= 1, "pairs.eval_size", self.eval_size, "an integer >= 1")


@dataclass
class RewardTrainingConfig:
    """TRL RewardTrainer settings (Bradley-Terry loss on chosen vs rejected)."""

    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 1e-5
    max_length: int = 1024
    lora_rank: int = 0  # 0: train the whole classifier; r > 0: a rank-r LoRA (merged into the saved model)
    center_rewards_coefficient: Optional[float] = None
    KEY: ClassVar[str] = "training"  # where the keys live, for messages: voice.reward_training in the voice pipeline

    def __post_init__(self) -> None:
        _require(self.epochs > 0, f"{self.KEY}.epochs", self.epochs, "a number > 0")
        _require(self.batch_size >= 1, f"{self.KEY}.batch_size", self.batch_size, "an integer >= 1")
        _require(self.learning_rate > 0, f"{self.KEY}.learning_rate", self.learning_rate, "a number > 0")
        _require(self.lora_rank >= 0, f"{self.KEY}.lora_rank", self.lora_rank, "an integer >= 0 (0 = full training)")


@dataclass
class VoiceRewardTrainingConfig(RewardTrainingConfig):
    """The voice pipeline's reward stage: `voice.reward_training`, the keys of mindprint.train_reward's `training`."""

    KEY: ClassVar[str] = "voice.reward_training"


@dataclass
class TrainRewardConfig:
    """`python -m mindprint.train_reward`: a reward model from preference pairs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    training: RewardTrainingConfig = field(default_factory=RewardTrainingConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _require(self.device in ("auto", "cpu", "cuda"), "device", self.device, "auto, cpu or cuda")


@dataclass
class SFTConfig:
    """The voice pipeline's SFT stage: TRL's SFTTrainer through a LoRA (merged after), loss on the completions."""

    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 2e-4
    max_length: int = 512
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def __post_init__(self) -> None:
        _require(self.epochs > 0, "voice.sft.epochs", self.epochs, "a number > 0")
        for key in ("batch_size", "max_length", "lora_rank"):
            _require(getattr(self, key) >= 1, f"voice.sft.{key}", getattr(self, key), "an integer >= 1")
        _require(self.learning_rate > 0, "voice.sft.learning_rate", self.learning_rate, "a number > 0")
        _require(self.lora_alpha > 0, "voice.sft.lora_alpha", self.lora_alpha, "a number > 0")
        _require(len(self.lora_targets) > 0, "voice.sft.lora_targets", self.lora_targets, "a non-empty list")


VOICE_STAGES = ("prepare", "sft", "pairs", "reward", "ppo", "evaluate", "report")


@dataclass
class VoiceConfig:
    """`python -m mindprint.voice`: from a folder of writing (`texts`) to a policy in its author's voice.

    Passages are paragraphs joined to min_tokens..max_tokens policy tokens; each becomes a prompt (`template`, with
    the passage's opening: its first sentences up to opening_tokens) and a completion (the rest). Whole documents
    are held out (heldout_fraction, seeded by `seed`).
    """

    min_tokens: int = 64
    max_tokens: int = 256
    opening_tokens: int = 48
    heldout_fraction: float = 0.2
    template: str = "Go on with this passage on {topic}, in its author's words.\n\n{opening}"
    text_field: str = "text"  # the text column of a .jsonl/.csv in texts
    topic_field: Optional[str] = "topic"  # its topic column (a row without one takes its folder's topic)
    rejected_from: str = "base"  # which model writes the rejected side of the pairs: base or sft
    delta_words: int = 100  # Burrows' Delta over the author's most frequent words
    topic_passes: int = 1  # PPO: ppo.steps = ppo.steps_per_topic × topics × topic_passes
    reward_base: Optional[str] = None  # the reward model's base (a sequence classifier from it); None: model.name
    stages: list[str] = field(default_factory=lambda: list(VOICE_STAGES))  # a subset runs those (finished inputs)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward_training: VoiceRewardTrainingConfig = field(default_factory=VoiceRewardTrainingConfig)

    def __post_init__(self) -> None:
        pos = "an integer >= 1"
        for key in ("min_tokens", "opening_tokens", "delta_words", "topic_passes"):
            _require(getattr(self, key) >= 1, f"voice.{key}", getattr(self, key), pos)
        _require(self.max_tokens > self.min_tokens, "voice.max_tokens", self.max_tokens,
                 f"an integer > voice.min_tokens={self.min_tokens}")
        _require(self.opening_tokens < self.min_tokens, "voice.opening_tokens", self.opening_tokens,
                 f"an integer < voice.min_tokens={self.min_tokens} (the rest of a passage is its completion)")
        _require(0 < self.heldout_fraction < 1, "voice.heldout_fraction", self.heldout_fraction, "a number in (0, 1)")
        _require(self.rejected_from in ("base", "sft"), "voice.rejected_from", self.rejected_from, "base or sft")
        try:
            formatted = self.template.format(topic="\0", opening="\1")
        except (KeyError, IndexError, ValueError, AttributeError):  # {x}, {0}, {, {topic.x}
            formatted = ""
        _require("\1" in formatted, "voice.template", self.template,
                 "a text with {opening} (and optionally {topic}) and no other {field}")
        bad = [s for s in self.stages if s not in VOICE_STAGES]
        _require(not bad and self.stages, "voice.stages", bad[0] if bad else self.stages,
                 f"a non-empty list of {', '.join(VOICE_STAGES)}")


@dataclass
class VoiceRunConfig(RunConfig):
    """The whole voice pipeline: a run's groups (the PPO stage's) with `texts` and the `voice` group."""

    texts: Optional[str] = None  # a folder of writing, or one .jsonl/.csv table
    voice: VoiceConfig = field(default_factory=VoiceConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(bool(self.texts), "texts", self.texts, "a folder of your writing: texts=~/my_writing")
        _require(not self.dry_run, "dry_run", self.dry_run, "false for the voice pipeline (dry_run=true is "
                 "python -m mindprint.run's: it builds a run's models and stops)")
        _require(not self.resume, "resume", self.resume, "false for the voice pipeline: it continues by itself when "
                 "started again in its directory (hydra.run.dir=RUN_DIR)")


def store_schemas() -> None:
    """Register the schema of every config with Hydra (the config files name them: `run_schema`, ...)."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="train_reward_schema", node=TrainRewardConfig)
    cs.store(name="voice_schema", node=VoiceRunConfig)
