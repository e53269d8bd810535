"""mindprint installs as a package: the wheel holds the configs, and runs compose from any directory."""

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # multi-process launches, full CLI runs


def test_the_wheel_holds_the_configs_and_composes_a_run_from_another_directory(tmp_path, tiny):
    source = tmp_path / "source"  # built from a copy: setuptools writes build/ and egg-info beside the sources
    shutil.copytree(REPO / "mindprint", source / "mindprint", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("mindprint-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mindprint/conf/config.yaml", "mindprint/conf/ppo/default.yaml", "mindprint/conf/experiment/demo.yaml",
            "mindprint/conf/experiment/baseline.yaml", "mindprint/assets/demo_prompts.jsonl"} <= names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "mindprint-run = mindprint.run:main" in entry_points and "mindprint-compare" in entry_points
    # installed from the wheel alone (no checkout on the path), run from an unrelated directory
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "MINDPRINT_TINY_DIR": str(tiny["policy"]).rsplit("/v1/", 1)[0]}
    code = "import mindprint, sys; print(mindprint.__file__); sys.argv[1:] = ['+experiment=demo', '--cfg', 'job', '--resolve']; " \
           "import mindprint.run; mindprint.run.main()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].startswith(str(site))  # the installed copy, not the checkout
    assert "steps: 40" in proc.stdout and f"name: {tiny['policy']}" in proc.stdout  # the demo experiment, resolved
    assert not (elsewhere / "outputs").exists()  # --cfg job only prints
