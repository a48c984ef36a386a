"""The built wheel carries the configs: installed outside the repo, genlab composes and trains."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_ships_configs_and_runs_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = dist.glob("genlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("genlab/configs/train.yaml", "genlab/configs/sample.yaml", "genlab/configs/model/wgan_gp.yaml",
                     "genlab/configs/dataset/fashion_mnist.yaml", "genlab/configs/trainer/debug.yaml",
                     "genlab/cli.py", "genlab/engine/trainer.py"):
        assert required in names, required
    assert not any(n.startswith(("tests/", "configs/")) for n in names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import genlab, genlab.configs; print(genlab.__file__); "
                            "print(list(genlab.configs.__path__)[0])"], cwd=work, env=env, capture_output=True,
                           text=True, check=True)
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    r = subprocess.run([sys.executable, "-m", "genlab", "train", "model=gan", "dataset=grid25", "trainer=debug",
                        "trainer.progress=false", "dataset.n_train=256", "dataset.n_test=64", "hydra.run.dir=run"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (work / "run" / "checkpoints" / "last.pt").is_file()
    assert "name: gan" in (work / "run" / ".hydra" / "config.yaml").read_text()
