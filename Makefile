# One venv per checkout, installed from requirements.lock: every machine gets the same versions. torch is pinned
# by TORCH_SPEC so pip takes the CPU wheel on our machines instead of a multi-GB CUDA build; the lock pins its
# version, not its build. On a GPU machine: make install PIP_EXTRA="--index-url https://download.pytorch.org/whl/cu128"
VENV        ?= .venv
TRL_VENV    ?= .venv-trl
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.13.0
PIP_SPEC    ?= pip==26.3
PIP_TOOLS   ?= pip-tools==7.7.0
LOCK        ?= requirements.lock
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install lock demo test test-fast baseline sweep algo-sweep voice-demo bench bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(PIP_SPEC)"
	$(PY) -m pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	# DeepSpeed, in the lock, ships as source only: built against the torch above (an isolated build would fetch
	# another torch), its kernels compiled on first use (on CPUs one small op, about 40 s, in ~/.cache/torch_extensions).
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# pip-tools, not uv: it resolves with pip, so it sees what pip sees here (the CPU build of torch on local disk, and
# the pip.conf of the machine); uv resolves against PyPI alone and would lock torch's CUDA dependencies.
# Keeps the lock's pins where the ranges allow: make lock LOCK_ARGS=--upgrade moves every pin to the newest allowed.
lock:  ## requirements.lock anew from pyproject.toml's ranges, every transitive version (torch: TORCH_SPEC's)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(PIP_SPEC)" "$(PIP_TOOLS)" $(PIP_EXTRA) "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" | DS_BUILD_OPS=0 $(VENV)/bin/pip-compile -q --no-build-isolation --extra dev --extra deepspeed \
		--strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) -o $(LOCK) pyproject.toml -
	sed -i 's/^torch==\([^+]*\)+.*/torch==\1/' $(LOCK)  # the version, whichever build TORCH_SPEC takes

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

VOICE_DIR ?= outputs/voice-demo
voice-demo: install  ## the voice pipeline offline on CPU: Python's Language Reference as the author → SFT → pairs → reward model → PPO → report
	@test ! -e $(VOICE_DIR) || { echo "error: $(VOICE_DIR) exists: move it away, or make voice-demo VOICE_DIR=another/dir" >&2; exit 2; }
	$(PY) -m mindprint.synthetic.pydoc_texts $(VOICE_DIR)/texts
	$(PY) -m mindprint.voice +experiment=voice_demo texts=$(VOICE_DIR)/texts hydra.run.dir=$(VOICE_DIR)/run

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
