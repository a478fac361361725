"""The wheel ships builders/, baselines/, leaderboard/ and data_cards/ inside the cmrbench namespace only."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True)
    return next(out.glob("cmrbench-*.whl"))


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for must in ("cmrbench/builders/assemble.py", "cmrbench/baselines/reference.py",
                 "cmrbench/leaderboard/board.py", "cmrbench/data_cards/dataset_card.md",
                 "cmrbench/leaderboard/schema/results.schema.json", "cmrbench/baselines/configs/carve.yaml",
                 "cmrbench/baselines/configs/plugins/anchoring.yaml"):
        assert must in names, must
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"builders", "baselines", "leaderboard", "data_cards", "tests"}


def test_wheel_installs_into_a_fresh_venv_and_imports(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    target = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    zipfile.ZipFile(wheel).extractall(target)  # a wheel install is an unzip plus metadata
    # dependencies come from the test interpreter's site-packages, appended after the fresh venv's own
    deps = sysconfig.get_paths()["purelib"]
    code = ("import sys; sys.path.append(%r)\n"
            "import cmrbench.builders, cmrbench.baselines, cmrbench.leaderboard, cmrbench.builders.huggingbench\n"
            "from cmrbench.builders.card import render_card\n"
            "from cmrbench.baselines.trainable.config import load_config\n"
            "assert load_config('carve')['anchoring'] == 'both'  # a strategy's plugin settings ship too\n"
            "assert cmrbench.builders.__file__.startswith(%r), cmrbench.builders.__file__\n"
            "import importlib.util\n"
            "assert importlib.util.find_spec('builders') is None and importlib.util.find_spec('baselines') is None\n"
            "print('ok')" % (deps, target))
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
