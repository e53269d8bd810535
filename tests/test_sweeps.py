"""Hydra sweeps: one directory per job, offline W&B runs, failures reported, compare report."""

from pathlib import Path

import pytest
from conftest import REPO, run_cli
from wandb_file import read_run, wandb_file

from mindprint.analysis.compare import main as compare_main
from mindprint.cli import register
from mindprint.records import read_metrics

SHORT = ["+experiment=smoke"]

pytestmark = pytest.mark.slow  # sweeps of full CLI runs


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/.hydra"))


def job(sweep: Path, prefix: str) -> Path:
    (found,) = sweep.glob(prefix + "*")
    return found


@pytest.fixture(scope="module")
def rank_sweep(tmp_path_factory, tiny):
    sweep = tmp_path_factory.mktemp("sweep") / "ranks"
    env_proc = run_cli(*SHORT, "lora.rank=2,8", "logger=wandb", f"hydra.sweep.dir={sweep}", "-m")
    return sweep, env_proc


def test_two_job_rank_sweep_completes_with_offline_wandb_runs(rank_sweep):
    sweep, proc = rank_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert [j.name.split(",")[0] for j in jobs] == ["0_lora.rank=2", "1_lora.rank=8"]
    for job_dir, rank in zip(jobs, (2, 8)):
        assert len(read_metrics(job_dir / "metrics.jsonl")) == 2
        run = read_run(wandb_file(job_dir))
        assert run["config"]["lora.rank"] == rank  # the resolved config, flattened: lora group included
        assert run["name"] == f"lora.rank={rank}"  # run name: only the override the sweep varies
        # group: the experiment and the overrides that make the setting (seed would not be one)
        assert run["group"] == f"smoke/lora.rank={rank}"  # the experiment and the overrides, seed left out
    assert "2 of 2 jobs completed" in proc.stdout


def test_compare_writes_report_and_plots_with_both_ranks(rank_sweep):
    sweep, _ = rank_sweep
    compare_main([str(sweep)])
    report = (sweep / "report.md").read_text()
    rows = [ln for ln in report.splitlines() if ln.startswith("| lora.rank=")]
    assert [r.split("|")[1].strip() for r in rows] == ["lora.rank=2", "lora.rank=8"]
    assert len(rows) == 2
    assert rows[0].split("|")[2].strip() == "1" and rows[1].split("|")[2].strip() == "1"  # n: one seed each
    # trainable LoRA parameters grow linearly with the rank: 2 × 2,048 and 8 × 2,048 on the tiny model
    assert rows[0].split("|")[3].strip() == "4,096" and rows[1].split("|")[3].strip() == "16,384"
    for png in ("reward.png", "kl.png", "clipfrac.png", "reward_vs_kl.png"):
        data = (sweep / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
        assert f"]({png})" in report


def test_compare_on_a_path_without_runs_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        compare_main([str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: PATH=")


def test_a_failing_job_does_not_stop_the_sweep(tmp_path, tiny):
    sweep = tmp_path / "sweep"
    proc = run_cli(*SHORT, "lora.rank=0,2", f"hydra.sweep.dir={sweep}", "-m")
    assert proc.returncode != 0
    assert "error: job 0_lora.rank=0" in proc.stderr and "failed: lora.rank=0 is not allowed" in proc.stderr
    assert len(read_metrics(job(sweep, "1_lora.rank=2") / "metrics.jsonl")) == 2
    assert "1 of 2 jobs completed" in proc.stdout


def test_sweep_through_submitit_local_launcher(tmp_path, tiny):
    """The code path a SLURM sweep takes (hydra-submitit-launcher), on this machine."""
    sweep = tmp_path / "sweep"
    proc = run_cli(*SHORT, "lora.rank=1,2", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                   f"hydra.sweep.dir={sweep}", "-m")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for prefix in ("0_lora.rank=1", "1_lora.rank=2"):
        assert len(read_metrics(job(sweep, prefix) / "metrics.jsonl")) == 2


def test_rank_sweep_experiment_declares_its_sweep(tiny):
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=rank_sweep"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params["lora.rank"] == "1,8,32"
    assert cfg.hydra.sweeper.params["seed"] == "0,1,2"  # a study: three seeds of each rank
    assert cfg.model.name.endswith("policy")  # built on the demo experiment


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.partition == "gpu"


def test_optuna_experiment_declares_its_search():
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=optuna_lr"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
    assert cfg.hydra.sweeper.params["ppo.learning_rate"] == "tag(log, interval(1e-4, 1e-2))"
    assert cfg.objective.name == "held_out_reward"


def test_a_sweep_job_with_many_overrides_gets_a_short_distinct_directory_name():
    from mindprint.cli import job_dirname

    assert job_dirname("lora.rank=8,seed=1") == "lora.rank=8,seed=1"
    many = ",".join(f"voice.key_{i}=value_{i}" for i in range(20))  # ~400 characters: over the 255-byte limit
    a, b = job_dirname(many + ",lora.rank=1"), job_dirname(many + ",lora.rank=2")
    assert len(a.encode()) <= 160 and len(b.encode()) <= 160 and a != b
    assert a.startswith("voice.key_0=value_0,") and a == job_dirname(many + ",lora.rank=1")
