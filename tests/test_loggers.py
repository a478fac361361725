"""Loggers: each experience's metrics reach CSV, TensorBoard, Weights & Biases (offline) and Trackio (local)."""

from __future__ import annotations

import csv

import pytest

from cmrbench.cli import main
from cmrbench.data import Benchmark
from cmrbench.harness import evaluate
from cmrbench.loggers import CSVLogger, experience_metrics, make_logger
from cmrbench.registry import load_router


def test_csv_logger_holds_every_experience_even_after_a_resume(synthetic_hub, tmp_path):
    bench = Benchmark(synthetic_hub)
    log = tmp_path / "log.csv"
    results = evaluate(load_router("bm25"), bench, tmp_path / "runs", progress=False, loggers=[CSVLogger(log)])
    rows = list(csv.DictReader(log.read_text().splitlines()))
    assert [int(r["experience"]) for r in rows] == [1, 2, 3]
    A = results.matrices["domain"]["acc@1"]
    assert float(rows[2]["domain/current"]) == pytest.approx(100 * A[2][2], abs=1e-3)
    assert float(rows[2]["domain/average"]) == pytest.approx(100 * results.summary["domain"].final_average_accuracy,
                                                             abs=1e-3)
    assert rows[0]["domain/forgetting"] == "" and float(rows[2]["domain/forgetting"]) == pytest.approx(
        100 * results.summary["domain"].forgetting, abs=1e-3)
    assert experience_metrics(1, results)["time/learn_seconds"] == results.timings.learn_seconds[0]


def test_cli_logs_to_tensorboard_wandb_and_trackio(synthetic_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")          # nothing leaves the machine; `wandb sync` would upload
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))   # read when trackio is imported
    for name in ("tensorboard", "wandb", "trackio"):
        pytest.importorskip(name, reason="the 'loggers' extra is not installed")
    (tmp_path / "wandb").mkdir()
    assert main(["evaluate", "--data", str(synthetic_hub), "--router", "most-frequent", "--out", str(tmp_path / "r"),
                 "--no-progress", "--log", f"tensorboard:{tmp_path / 'tb'}", "--log", "wandb:cmrbench-test",
                 "--log", "trackio:cmrbench-test", "--log", f"csv:{tmp_path / 'log.csv'}"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("domain/average")] == [1, 2, 3]
    assert list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert (tmp_path / "trackio" / "cmrbench-test.db").is_file()
    assert (tmp_path / "log.csv").read_text().count("\n") == 4


def test_bad_logger_specs_are_refused_before_anything_runs(synthetic_hub, tmp_path, capsys):
    with pytest.raises(ValueError, match="KIND:TARGET"):
        make_logger("csv")
    assert main(["evaluate", "--data", str(synthetic_hub), "--router", "random", "--out", str(tmp_path),
                 "--no-progress", "--log", "mlflow:x"]) == 1
    assert "expected KIND:TARGET" in capsys.readouterr().err and not list(tmp_path.glob("*.json"))
