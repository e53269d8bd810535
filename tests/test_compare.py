"""Comparisons you can trust: seeds grouped with confidence intervals, equal budgets, the reward–KL frontier,
what differs, mixed runs refused, Optuna sweeps, and W&B holding the report's numbers.

Most tests build run directories by hand (metrics.jsonl, summary.json, .hydra/) and check the report against a
computation written out here; two sweeps run the real thing on the tiny models.
"""

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from wandb_file import read_run, wandb_file

from mindprint.analysis import stats
from mindprint.analysis.compare import main as compare_main
from mindprint.records import read_metrics

T_975 = {1: 12.706204736174698, 2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}  # textbook table
SHORT = ["+experiment=smoke"]


# ------------------------------------------------------------------------------------------- helpers

def make_run(path: Path, overrides: list[str], config: dict, rows: list[dict], **summary) -> Path:
    """A finished run as mindprint.run leaves it, written by hand."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(json.dumps({"lora/trainable_params": 2048 * config["lora"]["rank"], **summary}))
    return path


def config_of(rank=8, lr=0.005, seed=0, reward="tiny", steps=3) -> dict:
    return {"model": {"name": "${tiny:policy}"}, "lora": {"rank": rank, "target_modules": ["q_proj", "v_proj"]},
            "ppo": {"learning_rate": lr, "steps": steps, "batch_size": 8, "lr_scheduler": "constant"},
            "reward": {"name": reward}, "logger": {"backend": "none"}, "checkpoint": {"every": 50},
            "objective": {"name": "held_out_reward"}, "seed": seed, "device": "cpu"}


def rows_of(scores, kls, clips=None, batch=8, length=12.0, eps=4.0, eval_every=None) -> list[dict]:
    rows = []
    for i, (s, k) in enumerate(zip(scores, kls), 1):
        row = {"iteration": i, "episode": batch * i, "objective/scores": s, "objective/kl": k,
               "policy/clipfrac_avg": (clips or [0.5] * len(scores))[i - 1], "env/response_length": length,
               "eps": eps}
        if i == len(scores) or (eval_every and i % eval_every == 0):
            row["eval/scores"] = s + 0.5
        rows.append(row)
    return rows


def hand_ci(values: list[float]) -> tuple[float, float, float]:
    """mean, and the 95% t interval written out: mean ± t(0.975, n−1) · s / √n."""
    n = len(values)
    mean = sum(values) / n
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T_975[n - 1] * s / math.sqrt(n)
    return mean, mean - half, mean + half


def table_rows(report: str) -> dict[str, list[str]]:
    """setting → its cells, from report.md's table."""
    lines = [ln for ln in report.splitlines() if ln.startswith("| ") and not ln.startswith("| setting")]
    return {cells[0]: cells for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)}


HEADER = ["setting", "n", "LoRA params", "final reward", "best reward", "final KL", "mean clipfrac",
          "held-out reward", "wall time (s)", "frontier"]


def cell(row: list[str], column: str) -> str:
    return row[HEADER.index(column)]


def numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))]


def compare(*args) -> None:
    compare_main([str(a) for a in args])


def one_line_exit_2(capsys, *args) -> str:
    with pytest.raises(SystemExit) as info:
        compare(*args)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


# ------------------------------------------------------------------------------------------- statistics

def test_t_quantiles_match_the_table():
    for df, value in T_975.items():
        assert stats.t_quantile(df) == pytest.approx(value, rel=1e-9)


def test_mean_ci_t_bootstrap_and_one_seed():
    iv = stats.mean_ci([1.0, 2.0, 4.0])
    assert (iv.mean, iv.lo, iv.hi, iv.n, iv.method) == pytest.approx((*hand_ci([1.0, 2.0, 4.0]), 3, "t"))
    one = stats.mean_ci([2.5, None, float("nan")])
    assert (one.mean, one.lo, one.hi, one.n) == (2.5, None, None, 1)
    few = stats.mean_ci([1.0, 2.0, 4.0, 3.0], "bootstrap")
    assert few.method == "t"  # fewer than 5 seeds: the t interval
    boot = stats.mean_ci([1.0, 2.0, 4.0, 3.0, 2.5, 3.5], "bootstrap")
    assert boot.method == "bootstrap" and boot.lo < boot.mean < boot.hi
    assert boot == stats.mean_ci([1.0, 2.0, 4.0, 3.0, 2.5, 3.5], "bootstrap")  # seeded: the same every time
    t = stats.mean_ci([1.0, 2.0, 4.0, 3.0, 2.5, 3.5])
    assert boot.hi - boot.lo < t.hi - t.lo  # percentile bootstrap is narrower than t at n = 6


def test_frontier_definition():
    #          A: low KL    B: more reward  C: dominated by A   D: dominated by B   E: ties B
    points = [(1.0, 10.0), (2.0, 20.0), (0.5, 15.0), (2.0, 25.0), (2.0, 20.0)]
    assert stats.frontier(points) == [True, True, False, False, True]
    assert stats.frontier([(1.0, 5.0), (1.0, 3.0)]) == [False, True]  # same reward, less KL wins


# ------------------------------------------------------------------------------------------- groups and CIs

def seeds_study(root: Path, ranks=(1, 8), seeds=(0, 1, 2), start=0) -> Path:
    """ranks × seeds runs of 3 iterations, as one sweep directory writes them."""
    sweep = root
    job = start
    for rank in ranks:
        for seed in seeds:
            scores = [0.1 * rank + 0.3 * seed + 0.05 * i * (seed + 1) for i in range(3)]
            kls = [1.0 + rank * 0.2 * i + 0.1 * seed for i in range(3)]
            clips = [0.4 + 0.01 * (seed + i) for i in range(3)]
            make_run(sweep / f"{job}_lora.rank={rank},seed={seed}", [f"lora.rank={rank}", f"seed={seed}",
                     "+experiment=demo", "ppo.steps=3"], config_of(rank=rank, seed=seed),
                     rows_of(scores, kls, clips, eps=2.0 + seed), name=f"lora.rank={rank},seed={seed}")
            job += 1
    return sweep


def hand_values(run_dir: Path) -> dict:
    """The report's definitions, written out on metrics.jsonl."""
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    k = max(1, len(rows) // 5)
    scores = [r["objective/scores"] for r in rows]
    return {
        "final_reward": sum(scores[-k:]) / k,
        "best_reward": max(scores),
        "final_kl": sum(r["objective/kl"] for r in rows[-k:]) / k,
        "mean_clipfrac": sum(r["policy/clipfrac_avg"] for r in rows) / len(rows),
        "held_out_reward": [r["eval/scores"] for r in rows if "eval/scores" in r][-1],
        # the run's training clock; rows written without it: episode / eps
        "wall_s": rows[-1].get("time/elapsed_s", rows[-1]["episode"] / rows[-1]["eps"]),
    }


COLUMN_OF = {"final_reward": "final reward", "best_reward": "best reward", "final_kl": "final KL",
             "mean_clipfrac": "mean clipfrac", "held_out_reward": "held-out reward", "wall_s": "wall time (s)"}
DECIMALS = {"final_kl": 2, "wall_s": 1}


def check_against_hand(sweep_dirs: list[Path], out: Path, settings: dict[str, list[Path]]) -> None:
    report = (out / "report.md").read_text()
    data = json.loads((out / "comparison.json").read_text())
    rows = table_rows(report)
    assert set(rows) == set(settings)
    for label, runs in settings.items():
        (group,) = [g for g in data["groups"] if g["label"] == label]
        assert group["n"] == len(runs) and cell(rows[label], "n") == str(len(runs))
        hand = [hand_values(r) for r in runs]
        for key, column in COLUMN_OF.items():
            mean, lo, hi = hand_ci([h[key] for h in hand])
            assert (group[key]["mean"], group[key]["lo"], group[key]["hi"]) == pytest.approx((mean, lo, hi), rel=1e-9)
            d = DECIMALS.get(key, 3)
            shown = numbers(cell(rows[label], column))
            assert shown == [round(mean, d), round(lo, d), round(hi, d)], (label, column)
    assert "t(0.975, n−1)" in report


def test_seeds_group_with_t_intervals_matching_a_hand_computation(tmp_path):
    sweep = seeds_study(tmp_path / "sweep")
    compare(sweep)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    check_against_hand([sweep], sweep, {
        "lora.rank=1": [j for j in jobs if "rank=1," in j.name],
        "lora.rank=8": [j for j in jobs if "rank=8," in j.name],
    })
    report = (sweep / "report.md").read_text()
    assert "6 runs in 2 group(s)" in report and "ppo.steps" not in table_rows(report)["lora.rank=1"][0]


def test_one_study_launched_as_two_sweeps_and_a_list_of_run_dirs(tmp_path):
    first = seeds_study(tmp_path / "a", seeds=(0, 1))
    second = seeds_study(tmp_path / "b", seeds=(2,), start=4)
    out = tmp_path / "cmp"
    compare(first, second, "--out", out)
    runs = sorted(p for d in (first, second) for p in d.iterdir() if p.is_dir())
    settings = {"lora.rank=1": [r for r in runs if "rank=1," in r.name],
                "lora.rank=8": [r for r in runs if "rank=8," in r.name]}
    check_against_hand([first, second], out, settings)
    # the same runs named one by one
    out2 = tmp_path / "cmp2"
    compare(*runs, "--out", out2)
    check_against_hand([], out2, settings)


def test_curves_show_the_mean_with_a_band(tmp_path):
    sweep = seeds_study(tmp_path / "sweep")
    compare(sweep)
    from mindprint.analysis.groups import group_runs
    from mindprint.analysis.plots import group_curve
    from mindprint.analysis.runs import discover
    runs, _ = discover([sweep])
    for r in runs:
        r.history = r.metrics
    groups, _ = group_runs(runs)
    grid, ivs = group_curve(groups[0], "objective/scores", "episodes", "t")
    assert list(grid) == [8, 16, 24]
    first = [r.metrics[0]["objective/scores"] for r in groups[0].runs]
    assert (ivs[0].mean, ivs[0].lo, ivs[0].hi) == pytest.approx(hand_ci(first))
    for png in ("reward.png", "kl.png", "clipfrac.png", "reward_vs_kl.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------- budgets

def test_runs_of_different_lengths_are_cut_at_the_shortest_common_budget(tmp_path):
    long_scores = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    make_run(tmp_path / "s/0_lora.rank=1", ["lora.rank=1"], config_of(rank=1, steps=10),
             rows_of(long_scores, [1.0] * 10))
    make_run(tmp_path / "s/1_lora.rank=8", ["lora.rank=8"], config_of(rank=8, steps=5),
             rows_of([0.5] * 5, [2.0] * 5))
    compare(tmp_path / "s")
    report = (tmp_path / "s/report.md").read_text()
    assert "shortest common budget, 40 episodes (--x episodes)" in report and "1 run(s) went further" in report
    rows = table_rows(report)
    # rank 1 read over its first 5 iterations: final = last fifth (1 iteration) = 4.0, best 4.0
    assert numbers(cell(rows["lora.rank=1"], "final reward")) == [4.0]
    assert numbers(cell(rows["lora.rank=1"], "best reward")) == [4.0]
    # held-out reward: its last evaluation within the budget is none (it evaluated at iteration 10 only)
    assert cell(rows["lora.rank=1"], "held-out reward") == "—"


def test_equal_tokens_and_equal_seconds(tmp_path):
    # rank 1: 8 episodes × 12 tokens per iteration; rank 8: 8 × 6 tokens, so it reaches 96 tokens at iteration 2
    make_run(tmp_path / "s/0_lora.rank=1", ["lora.rank=1"], config_of(rank=1),
             rows_of([1.0, 2.0, 3.0, 4.0], [1.0] * 4, length=12.0, eps=8.0))
    make_run(tmp_path / "s/1_lora.rank=8", ["lora.rank=8"], config_of(rank=8),
             rows_of([5.0, 6.0, 7.0, 8.0, 9.0], [1.0] * 5, length=6.0, eps=2.0))
    compare(tmp_path / "s", "--x", "tokens")
    report = (tmp_path / "s/report.md").read_text()
    assert "shortest common budget, 240 generated tokens (--x tokens)" in report  # rank 8: 5 × 8 × 6
    rows = table_rows(report)
    assert numbers(cell(rows["lora.rank=1"], "best reward")) == [2.0]  # 96, 192 tokens ≤ 240 < 288
    assert numbers(cell(rows["lora.rank=8"], "best reward")) == [9.0]
    compare(tmp_path / "s", "--x", "seconds")
    report = (tmp_path / "s/report.md").read_text()
    # seconds = episode / eps: rank 1 ends at 32/8 = 4 s; rank 8 reaches 4 s at iteration 1 (8/2)
    assert "shortest common budget, 4.0 wall-clock seconds (--x seconds)" in report
    assert numbers(cell(table_rows(report)["lora.rank=8"], "best reward")) == [5.0]


def test_seconds_follow_the_runs_clock_across_a_resume(tmp_path):
    """A resumed run's eps restarts at the resume, so episode / eps would put its later iterations back near 0 s;
    time/elapsed_s, which checkpoints carry, keeps counting."""
    resumed = rows_of([1.0, 2.0, 3.0, 4.0], [1.0] * 4, eps=8.0)  # episode / eps: 1, 2, 3, 4 s...
    for row, elapsed in zip(resumed, [1.0, 2.0, 3.5, 4.5]):  # ...but the run was killed after 2 and resumed
        row["time/elapsed_s"] = elapsed
    make_run(tmp_path / "s/0_lora.rank=1", ["lora.rank=1"], config_of(rank=1), resumed)
    make_run(tmp_path / "s/1_lora.rank=8", ["lora.rank=8"], config_of(rank=8),
             rows_of([5.0, 6.0, 7.0, 8.0, 9.0], [1.0] * 5, eps=2.0))  # no clock: 4, 8, ... s
    compare(tmp_path / "s", "--x", "seconds")
    report = (tmp_path / "s/report.md").read_text()
    assert "shortest common budget, 4.5 wall-clock seconds (--x seconds)" in report
    rows = table_rows(report)
    assert numbers(cell(rows["lora.rank=1"], "wall time (s)")) == [4.5]
    assert numbers(cell(rows["lora.rank=8"], "best reward")) == [5.0]  # 4 s ≤ 4.5 < 8 s


# ------------------------------------------------------------------------------------------- frontier

def test_frontier_marks_the_right_rows(tmp_path):
    # (setting, final reward, final KL): A and B are on the frontier; C is beaten by A, D by B
    cases = [("lora.rank=1", 1.0, 10.0), ("lora.rank=2", 2.0, 20.0), ("lora.rank=4", 0.5, 15.0),
             ("lora.rank=8", 2.0, 25.0)]
    for job, (label, reward, kl) in enumerate(cases):
        rank = int(label.split("=")[1])
        for seed in (0, 1):
            make_run(tmp_path / f"s/{job}{seed}_{label},seed={seed}", [label, f"seed={seed}"],
                     config_of(rank=rank, seed=seed), rows_of([reward + 0.1 * seed] * 3, [kl + seed] * 3))
    compare(tmp_path / "s")
    report = (tmp_path / "s/report.md").read_text()
    rows = table_rows(report)
    assert {label: cell(rows[label], "frontier") for label, _, _ in cases} == {
        "lora.rank=1": "★", "lora.rank=2": "★", "lora.rank=4": "", "lora.rank=8": ""}
    assert "frontier" in report and "`lora.rank=1`, `lora.rank=2`." in report
    data = json.loads((tmp_path / "s/comparison.json").read_text())
    assert [g["on_frontier"] for g in data["groups"]] == [True, True, False, False]


# ------------------------------------------------------------------------------------------- what differs

def test_setting_column_holds_only_the_overrides_that_differ(tmp_path):
    job = 0
    for rank in (1, 8):
        for lr in (0.001, 0.01):
            for reward_choice, reward in (("tiny", "tiny"), ("vowels", None)):
                overrides = ["+experiment=demo", "ppo.steps=3", f"lora.rank={rank}", f"ppo.learning_rate={lr}",
                             f"reward={reward_choice}", "seed=0", "logger=wandb"]
                make_run(tmp_path / f"s/{job}", overrides, config_of(rank=rank, lr=lr, reward=reward),
                         rows_of([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]))
                job += 1
    compare(tmp_path / "s")
    labels = set(table_rows((tmp_path / "s/report.md").read_text()))
    assert labels == {f"lora.rank={r},ppo.learning_rate={lr},reward={c}"
                      for r in (1, 8) for lr in (0.001, 0.01) for c in ("tiny", "vowels")}


def test_runs_differing_in_a_key_nobody_varied_are_refused_unless_allowed(tmp_path, capsys):
    # the same study launched twice, but the second launch read another reward model from its config files
    make_run(tmp_path / "a/0_seed=0", ["seed=0"], config_of(seed=0), rows_of([1.0] * 3, [1.0] * 3))
    make_run(tmp_path / "b/0_seed=1", ["seed=1"], config_of(seed=1, reward="other/reward"),
             rows_of([2.0] * 3, [1.0] * 3))
    out = tmp_path / "cmp"
    line = one_line_exit_2(capsys, tmp_path / "a", tmp_path / "b", "--out", out)
    assert line.startswith("error: runs differ in reward.name, which no override varies: tiny in ")
    assert line.endswith("add --allow-mixed")
    assert not out.exists()  # nothing written, half or whole
    compare(tmp_path / "a", tmp_path / "b", "--out", out, "--allow-mixed")
    report = (out / "report.md").read_text()
    assert set(table_rows(report)) == {"reward.name=tiny", "reward.name=other/reward"}
    assert "mixed (--allow-mixed): runs also differ in `reward.name`" in report


def test_user_mistakes_are_one_line_exit_2_and_write_nothing(tmp_path, capsys):
    sweep = seeds_study(tmp_path / "sweep")
    before = sorted(p.name for p in sweep.iterdir())
    assert one_line_exit_2(capsys, tmp_path / "nope").startswith("error: PATH=")
    assert one_line_exit_2(capsys, sweep, "--x", "steps") == (
        "error: --x=steps is not allowed: expected one of episodes, tokens, seconds")
    assert one_line_exit_2(capsys, sweep, "--ci", "z").startswith("error: --ci=z is not allowed")
    assert one_line_exit_2(capsys, sweep, "--bogus").startswith("error: unrecognized arguments: --bogus")
    (sweep / "0_lora.rank=1,seed=0" / "metrics.jsonl").write_text("{not json\n")
    assert "line 1 is not JSON" in one_line_exit_2(capsys, sweep)
    assert sorted(p.name for p in sweep.iterdir()) == before


def test_a_run_killed_mid_line_is_read_to_its_last_whole_line_and_named(tmp_path, capsys):
    sweep = seeds_study(tmp_path / "sweep", ranks=(1,), seeds=(0, 1))
    killed = sweep / "1_lora.rank=1,seed=1" / "metrics.jsonl"
    whole = killed.read_text().splitlines(keepends=True)
    killed.write_text("".join(whole[:2]) + whole[2][:17])  # iteration 3 cut short, as a SIGKILL leaves it
    compare(sweep)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == [f"warning: {killed} ends in a cut line (the run was stopped while writing it, or is still "
                   "running): read up to its last complete line"]
    report = (sweep / "report.md").read_text()
    assert "2 runs in 1 group(s)" in report and f"`{killed.parent}`" in report
    assert json.loads((sweep / "comparison.json").read_text())["budget"] == 16  # the 2 iterations both runs reached


def test_out_keeps_what_it_holds_and_a_file_there_is_one_line(tmp_path, capsys):
    sweep = seeds_study(tmp_path / "sweep", ranks=(1,), seeds=(0, 1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    compare(sweep, "--out", out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.md").exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(SystemExit) as info:
        compare(sweep, "--out", a_file)
    assert info.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: the report could not be written: File exists"), err
    assert a_file.read_text() == "x"


def test_failed_runs_are_listed_and_left_out(tmp_path):
    sweep = seeds_study(tmp_path / "sweep", ranks=(1,), seeds=(0, 1))
    failed = sweep / "2_lora.rank=0,seed=0"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "FAILED").write_text("lora.rank=0 is not allowed: expected an integer >= 1\n")
    compare(sweep)
    report = (sweep / "report.md").read_text()
    assert "2 runs in 1 group(s), 1 failed" in report
    assert "- `2_lora.rank=0,seed=0`: lora.rank=0 is not allowed" in report


# ------------------------------------------------------------------------------------------- real sweeps

@pytest.fixture(scope="module")
def seeds_sweep(tmp_path_factory, tiny):
    """2 settings × 3 seeds, 3 iterations each, with offline W&B runs."""
    sweep = tmp_path_factory.mktemp("seeds") / "study"
    proc = run_cli(*SHORT, "ppo.steps=3", "lora.rank=2,8", "seed=0,1,2", "logger=wandb",
                   f"hydra.sweep.dir={sweep}", "-m")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


@pytest.mark.slow
def test_seeds_sweep_ci_columns_match_a_hand_computation(seeds_sweep):
    compare(seeds_sweep)
    jobs = sorted(p.parent for p in seeds_sweep.glob("*/.hydra"))
    assert len(jobs) == 6 and all(len(read_metrics(j / "metrics.jsonl")) == 3 for j in jobs)
    check_against_hand([seeds_sweep], seeds_sweep, {
        "lora.rank=2": [j for j in jobs if "lora.rank=2" in j.name],
        "lora.rank=8": [j for j in jobs if "lora.rank=8" in j.name],
    })


@pytest.mark.slow
def test_wandb_holds_the_report_values_flat_config_and_seedless_groups(seeds_sweep):
    compare(seeds_sweep)
    data = json.loads((seeds_sweep / "comparison.json").read_text())
    groups = {}
    for g in data["groups"]:
        for run in g["runs"]:
            w = read_run(wandb_file(Path(run)))
            hand = hand_values(Path(run))
            # the summary holds the report's values: final (last-fifth means), best and held-out
            for key in ("final_reward", "best_reward", "final_kl", "mean_clipfrac", "held_out_reward"):
                assert w["summary"][f"report/{key}"] == pytest.approx(hand[key], rel=1e-9), key
            assert w["summary"]["report/objective"] == pytest.approx(hand["held_out_reward"], rel=1e-9)
            # ...and W&B's own aggregations (define_metric) agree: best = max, held-out = last evaluation
            assert w["metrics"]["objective/scores"] >= {"max", "last"} and "last" in w["metrics"]["eval/scores"]
            assert w["summary"]["objective/scores"]["max"] == pytest.approx(hand["best_reward"], rel=1e-9)
            assert w["summary"]["eval/scores"]["last"] == pytest.approx(hand["held_out_reward"], rel=1e-9)
            # flat config: a parallel-coordinates panel offers lora.rank, ppo.learning_rate, seed
            config = w["config"]
            assert {"lora.rank", "ppo.learning_rate", "seed", "objective.name"} <= set(config)
            assert not {"lora", "ppo"} & set(config)
            assert config["lora.rank"] == int(g["label"].split("=")[1])
            assert w["name"] == f"lora.rank={config['lora.rank']},seed={config['seed']}"
            groups.setdefault(g["label"], set()).add(w["group"])
            assert "seed" not in w["group"]
    # one W&B group per report group: W&B's grouped mean and band are over the same seeds
    assert all(len(v) == 1 for v in groups.values()) and len(set.union(*groups.values())) == 2


@pytest.mark.slow
def test_optuna_sweep_runs_offline_names_its_best_trial_and_compare_reads_it(tmp_path, tiny):
    sweep = tmp_path / "optuna"
    proc = run_cli(*SHORT, "ppo.steps=2", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                   "hydra.sweeper.sampler.seed=0", "ppo.learning_rate=tag(log, interval(1e-4, 1e-2))",
                   f"hydra.sweep.dir={sweep}", "-m")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    assert len(jobs) == 3
    held_out = {j.name: hand_values(j)["held_out_reward"] for j in jobs}
    best = max(held_out, key=held_out.get)  # maximised: the objective is a reward
    assert f"best trial: {best} (objective held_out_reward = " in proc.stdout
    assert "3 of 3 jobs completed" in proc.stdout
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(held_out[best], rel=1e-9)
    hydra_cfg = yaml.safe_load((jobs[0] / ".hydra" / "hydra.yaml").read_text())["hydra"]["sweeper"]
    assert hydra_cfg["direction"] == "maximize"
    compare(sweep)
    report = (sweep / "report.md").read_text()
    assert f"best trial `{best}`" in report
    assert len(table_rows(report)) == 3 and all(k.startswith("ppo.learning_rate=") for k in table_rows(report))


@pytest.mark.slow
def test_optuna_failed_trials_are_reported_as_in_grid_sweeps(tmp_path, tiny):
    sweep = tmp_path / "optuna"
    # TPE's first trials are random; with this seed they draw lora.rank 2, 0, 2, and rank 0 is refused
    proc = run_cli(*SHORT, "ppo.steps=1", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                   "hydra.sweeper.n_jobs=1", "hydra.sweeper.sampler.seed=0", "lora.rank=choice(0,2)",
                   f"hydra.sweep.dir={sweep}", "-m")
    jobs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    failed = [j for j in jobs if "_lora.rank=0," in j.name]
    assert len(jobs) == 3 and 1 <= len(failed) < 3, [j.name for j in jobs]
    assert proc.returncode == 1, proc.stderr[-3000:]
    for job in failed:
        assert f"error: job {job.name} failed: lora.rank=0 is not allowed" in proc.stderr
    assert f"{3 - len(failed)} of 3 jobs completed" in proc.stdout
    assert re.search(r"best trial: \d_lora\.rank=2,", proc.stdout)


@pytest.mark.slow
def test_optuna_sweep_whose_every_trial_failed_names_them_without_a_traceback(tmp_path, tiny):
    """Optuna raises "No trials are completed yet." when asked for the best of none, before Hydra's multirun end."""
    sweep = tmp_path / "optuna"
    proc = run_cli(*SHORT, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "lora.rank=choice(0)",
                   f"hydra.sweep.dir={sweep}", "-m")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "No trials are completed" not in proc.stderr
    jobs = sorted(p.parent for p in sweep.glob("*/.hydra"))
    assert len(jobs) == 2 and "0 of 2 jobs completed" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: job {j.name} failed: lora.rank=0 is not allowed: expected an integer >= 1" for j in jobs]
    assert "setup plugin" not in proc.stdout  # alembic (imported by optuna) logs at import: not our console's


@pytest.mark.slow
def test_optuna_asked_to_minimise_a_reward_is_refused(tmp_path):
    sweep = tmp_path / "optuna"
    proc = run_cli(*SHORT, "hydra/sweeper=optuna", "hydra.sweeper.direction=minimize", "lora.rank=choice(1,2)",
                   f"hydra.sweep.dir={sweep}", "-m")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.direction=minimize is not allowed: expected maximize "
        "(objective.name=held_out_reward is higher-is-better)")
    assert not list(sweep.glob("*/.hydra"))
