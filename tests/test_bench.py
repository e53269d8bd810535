"""`make bench` and `python -m mindprint.bench gpu`: like-for-like settings, and the GPU path run small on a CPU."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import run_cli
from rich.console import Console
from transformers import AutoConfig, AutoTokenizer

from mindprint.bench.cli import CPU_OVERRIDES, SEVEN, compare_runs, print_cpu
from mindprint.bench.runs import trl_batching, trl_setup
from mindprint.cli import compose
from mindprint.synthetic.tokenizers import synthetic_tokenizer


def test_trl_gets_the_settings_mindprint_runs(tiny):
    """TRL's setup is read off the composed config, so both trainers run the same numbers."""
    cfg = compose([*CPU_OVERRIDES, f"reward.name={tiny['classifier']}"])
    setup = trl_setup(cfg, device="cpu", bf16=False)
    assert (setup["batch_size"], setup["mini_batch_size"], setup["micro_batch_size"]) == (32, 8, 8)
    assert (setup["ppo_epochs"], setup["response_length"], setup["lora_rank"], setup["steps"]) == (4, 12, 8, 10)
    assert setup["rollout_batch_size"] == cfg.ppo.rollout_batch_size == 64  # TRL's local_rollout_forward_batch_size
    assert setup["reward"] == tiny["classifier"] and setup["reward_quantization"] == "none"
    assert setup["policy"] == tiny["policy"] and setup["target_modules"] == SEVEN
    assert setup["kl_coef"] == cfg.ppo.init_kl_coef and not cfg.ppo.adaptive_kl  # TRL's β is fixed
    assert cfg.ppo.value_learning_rate == cfg.ppo.learning_rate == setup["learning_rate"]  # TRL has one lr
    assert setup["gradient_checkpointing"] is False
    checkpointed = compose([*CPU_OVERRIDES, f"reward.name={tiny['classifier']}", "model.gradient_checkpointing=true"])
    assert trl_setup(checkpointed, device="cpu", bf16=False)["gradient_checkpointing"] is True
    # one optimizer step per minibatch of 8, as mindprint takes: TRL walks the batch of 32 in 4 minibatches
    assert setup["trl"] == {"per_device_train_batch_size": 32, "gradient_accumulation_steps": 1,
                            "num_mini_batches": 4, "optimizer_steps_per_epoch": 4}


def test_trl_batching_follows_trl_1_12_arithmetic():
    """TRL: batch = per_device × accumulation; minibatches walked in micro-batches of min(per_device, minibatch);
    a step every `accumulation` micro-batches. With micro < mini it can keep the micro-batch, not the steps."""
    for batch, mini, micro in [(32, 8, 8), (64, 16, 8), (64, 64, 16)]:
        t = trl_batching(batch, mini, micro)
        assert t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] == batch
        minibatch = batch // t["num_mini_batches"]
        assert minibatch == mini and min(t["per_device_train_batch_size"], minibatch) == micro
        micro_batches_per_epoch = batch // micro
        assert t["optimizer_steps_per_epoch"] == micro_batches_per_epoch // t["gradient_accumulation_steps"]
    assert trl_batching(64, 16, 8)["optimizer_steps_per_epoch"] == 1  # mindprint takes 4


def test_cpu_bench_prints_both_ratios(capsys):
    """The ratio of medians and, less exposed to the machine's drift, the median of back-to-back pairs."""
    side = {"episodes_per_s": 60.0, "runs": [50.0, 60.0, 70.0], "peak_rss_gib": 0.5}
    result = {"mindprint": {**side, "phases": {"generate": 0.2, "update": 0.8}},
              "trl": {**side, "episodes_per_s": 30.0, "runs": [20.0, 30.0, 40.0], "gc_share": 0.5},
              "ratio": 2.0, "ratio_per_rep": [2.5, 2.0, 1.75]}
    print_cpu(result, Console(width=200))
    out = capsys.readouterr().out
    assert "ratio mindprint / TRL = 2.00× (per repetition 1.75–2.50×, median 2.00×)" in out
    assert "generate 20%, update 80%" in out and "gc.collect: 50%" in out


def test_cpu_bench_compares_medians_pairs_and_trls_loop_alone(capsys):
    """Ratio of medians, ratio of each back-to-back pair, and against TRL's steady state (its train() without the
    one-off gc.collect and set-up), so a short run's one-off costs cannot flatter mindprint unseen."""
    ours = [{"episodes_per_s": e, "phases": {"update": u}, "peak_rss_gib": 0.5} for e, u in [(100, .7), (120, .8), (90, .6)]]
    theirs = [{"episodes_per_s": e, "episodes_per_s_loop": e * 1.25, "gc_s": 1.0, "wall_s": w, "peak_rss_gib": 0.6,
               "phases": {"generate": e / 1000}} for e, w in [(40, 10.0), (60, 4.0), (50, 5.0)]]
    result = compare_runs(ours, theirs)
    assert result["ratio"] == 100 / 50 and result["ratio_per_rep"] == [100 / 40, 120 / 60, 90 / 50]
    assert result["trl"]["episodes_per_s_loop"] == 62.5 and result["ratio_loop"] == 100 / 62.5
    assert result["mindprint"]["phases"] == {"update": .7} and result["trl"]["phases"] == {"generate": .05}
    assert result["trl"]["gc_share"] == 0.2 and result["mindprint"]["peak_rss_gib"] == 0.5
    print_cpu(result, Console(width=250))
    assert "median 2.00×; 1.60× against TRL's loop alone)" in capsys.readouterr().out
    del theirs[0]["episodes_per_s_loop"]  # TRL 1.12's PPO script reports no loop-alone figure
    assert "ratio_loop" not in compare_runs(ours, theirs)


@pytest.mark.slow
def test_peak_host_memory_counts_what_the_process_allocates():
    """Peak host memory (the run summary's and the bench's `peak_rss_gib`) rises by what the process allocates."""
    code = ("from mindprint.engine.hostmem import peak_rss_gib; a = peak_rss_gib(); "
            "x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096]); print(a, peak_rss_gib())")
    before, after = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout.split())
    assert 0.28 < after - before < 0.35


def test_synthetic_tokenizer_has_the_full_vocabulary_and_round_trips():
    tok = synthetic_tokenizer(151936)
    assert len(tok) == 151936
    text = "The ferry left at dawn; gulls followed it out past the breakwater.\n"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert len(text) / 3 < len(ids) < len(text)  # about two bytes a token
    assert tok.decode([len(tok) - 4]) != ""  # the last regular token decodes to text
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


@pytest.mark.slow
def test_gpu_bench_code_path_runs_small_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDPRINT_RANDOM_DIR", str(tmp_path / "random"))
    proc = run_cli("gpu", "--shapes", "small", "--device", "cpu", "--steps", "1", "--prompt-tokens", "48",
                   "--precisions", "8bit", "--no-trl", "--out", str(tmp_path / "bench"), module="mindprint.bench")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "bench" / "gpu_small.json").read_text())
    assert list(result["results"]) == ["8bit", "8bit+static"]  # each precision with both KV caches by default
    for row in result["results"].values():
        run = row["mindprint"]
        assert run["episodes_per_s"] > 0 and run["generate_s"] > 0
        assert abs(sum(run["phases"].values()) - 1) < 1e-6
    static = yaml.safe_load((tmp_path / "bench" / "runs" / "gpu-small-8bit+static" / ".hydra" / "config.yaml").read_text())
    assert static["ppo"]["kv_cache"] == "static"
    assert result["setup"]["batch_size"] == 64 and result["setup"]["response_length"] == 53  # the baseline's
    policy = tmp_path / "random" / "v1" / "policy-small"
    assert len(AutoTokenizer.from_pretrained(policy)) == AutoConfig.from_pretrained(policy).vocab_size
    prompts = [json.loads(line)["prompt"] for line in (tmp_path / "bench" / "prompts-small-48.jsonl").open()]
    lengths = [len(AutoTokenizer.from_pretrained(policy)(p)["input_ids"]) for p in prompts]
    assert len(prompts) == 256 and 30 <= min(lengths) and max(lengths) <= 48


@pytest.mark.slow
@pytest.mark.parametrize("option, value, expected", [
    ("--precisions", "8bit,3bit", "error: --precisions='3bit' is not allowed: expected some of 8bit, 4bit, bf16"),
    ("--kv-cache", "static,paged", "error: --kv-cache='paged' is not allowed: expected some of dynamic, static"),
])
def test_gpu_bench_refuses_an_unknown_precision_or_cache(tmp_path, option, value, expected):
    proc = run_cli("gpu", option, value, "--no-trl", "--out", str(tmp_path), module="mindprint.bench")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == expected
    assert not any(tmp_path.iterdir())
