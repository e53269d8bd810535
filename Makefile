# One venv per checkout; torch pinned so pip takes the CPU wheel on our machines instead of a
# multi-GB CUDA build. On a GPU machine: make install TORCH_SPEC="torch==2.13.0" PIP_EXTRA="--index-url ..."
VENV        ?= .venv
TRL_VENV    ?= .venv-trl
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast baseline sweep algo-sweep voice-demo bench bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# DeepSpeed ships as source only: built against the torch above (an isolated build would fetch another torch),
	# its kernels compiled on first use. On CPUs that is one small op, about 40 s, cached in ~/.cache/torch_extensions.
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation "deepspeed==0.19.8"
	touch $@

demo: install  ## the main job, offline on CPU: tiny models, a learnable reward, a few minutes at most
	$(PY) -m mindprint.run +experiment=demo

test: install  ## the full test suite: offline, CPU, tiny models (what CI runs)
	$(PY) -m pytest -q --durations=15

test-fast: install  ## the quick loop: math, config, errors, models and short training runs; no test marked slow
	$(PY) -m pytest -q -m "not slow" --durations=10

baseline: install  ## seed 004 on a GPU with hub access: Qwen3-0.6B + rank-32 LoRA vs Skywork-Reward-V2-Qwen3-8B (8-bit), trl-lib/tldr
	HF_HUB_OFFLINE=0 $(PY) -m mindprint.run +experiment=baseline

SWEEP_DIR ?= outputs/sweeps/rank_sweep
sweep: install  ## the study of LoRA rank (1, 8, 32) × seed (0, 1, 2) on the demo models, offline, then the report
	@test ! -e $(SWEEP_DIR) || { echo "error: $(SWEEP_DIR) exists: move it away, or make sweep SWEEP_DIR=another/dir" >&2; exit 2; }
	$(PY) -m mindprint.run +experiment=rank_sweep hydra.sweep.dir=$(SWEEP_DIR) -m
	$(PY) -m mindprint.compare $(SWEEP_DIR)

algo-sweep: install  ## PPO, GRPO, RLOO and REINFORCE++ on the demo, 3 seeds each at equal episodes, then the report
	$(PY) -m mindprint.run +experiment=algo_sweep hydra.sweep.dir=outputs/sweeps/algo_sweep -m
	$(PY) -m mindprint.compare outputs/sweeps/algo_sweep

voice-demo: install  ## the voice pipeline offline: synthetic pairs → tiny voice reward model (TRL) → PPO against it
	$(PY) -m mindprint.voice outputs/voice/pairs.jsonl 1000
	$(PY) -m mindprint.train_reward model=tiny pairs.name=outputs/voice/pairs.jsonl device=cpu \
		training.learning_rate=1e-3 training.batch_size=16 hydra.run.dir=outputs/voice/reward
	$(PY) -m mindprint.run +experiment=voice_demo hydra.run.dir=outputs/voice/ppo

# TRL's PPOTrainer was removed in trl 1.13: the comparison runs trl 1.12.0 from a venv of its own.
$(TRL_VENV)/.installed:
	test -x $(TRL_VENV)/bin/python || python3 -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(TRL_VENV)/bin/python -m pip install -q "trl==1.12.0" "transformers==5.23.0" peft accelerate datasets "bitsandbytes==0.50.2"
	touch $@

bench: install $(TRL_VENV)/.installed  ## PPO vs TRL 1.12, GRPO and RLOO vs TRL 1.16, tiny models on CPU, 5 reps → outputs/bench/cpu_tiny.json
	$(PY) -m mindprint.bench cpu --reps 5

bench-gpu: install $(TRL_VENV)/.installed  ## on a GPU: random models at Qwen3-0.6B/8B shapes, RM in 8bit/4bit/bf16 → outputs/bench/gpu_real.json
	$(PY) -m mindprint.bench gpu

clean:
	rm -rf outputs multirun
