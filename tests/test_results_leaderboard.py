"""Results files, their committed JSON Schemas, the leaderboard and paired comparisons."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cmrbench.analysis import compare, ranking_agreement, verify
from cmrbench.cli import main
from cmrbench.data import Benchmark
from cmrbench.harness import evaluate
from cmrbench.leaderboard.board import build_leaderboard, leaderboard_json_schema, to_markdown
from cmrbench.manifest import manifest_json_schema
from cmrbench.registry import load_router
from cmrbench.results import load_results, results_json_schema

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "leaderboard" / "schema"


def test_committed_schemas_match_the_code():
    assert (SCHEMAS / "results.schema.json").read_text() == results_json_schema(), \
        "regenerate leaderboard/schema/*.json (see docs/metrics.md, 'Results and leaderboard')"
    assert (SCHEMAS / "leaderboard.schema.json").read_text() == leaderboard_json_schema()
    assert (SCHEMAS / "manifest.schema.json").read_text() == manifest_json_schema()


@pytest.fixture(scope="module")
def runs(synthetic_hub, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    bench = Benchmark(synthetic_hub)
    for seed in (0, 1):
        evaluate(load_router("random", seed=seed), bench, out, seed=seed, progress=False)
    evaluate(load_router("domain-oracle"), bench, out, progress=False)
    evaluate(load_router("most-frequent"), bench, out, progress=False)
    return out


def test_unknown_fields_are_rejected(runs, tmp_path):
    path = next(runs.glob("random__*seed0.json"))
    data = json.loads(path.read_text())
    data["surprise"] = 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="(?s)bad.json.*surprise"):
        load_results(bad)


def test_leaderboard_merges_seeds_and_ranks(runs, synthetic_hub, tmp_path):
    board = build_leaderboard(runs, "domain.final_average_accuracy", synthetic_hub)
    # harness references (random, most-frequent, the oracles) are shown apart, never ranked
    assert board.entries == [] and [e.router for e in board.references] == ["domain-oracle", "most-frequent", "random"]
    random_entry = next(e for e in board.references if e.router == "random")
    assert random_entry.seeds == [0, 1] and random_entry.scores["domain"]["final_average_accuracy"].n == 2
    md = to_markdown(board)
    assert "| – | domain-oracle | reference |" in md and "| 1 | " not in md
    assert main(["leaderboard", str(runs), "--out", str(tmp_path / "lb"), "--data", str(synthetic_hub)]) == 0
    written = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert written["references"][0]["router"] == "domain-oracle"
    assert (tmp_path / "lb" / "leaderboard.md").read_text() == md


def test_seeds_with_different_settings_are_not_merged(runs, synthetic_hub, tmp_path):
    import shutil
    for path in runs.glob("random__*seed*"):
        shutil.copy(path, tmp_path / path.name)
    one = next(tmp_path.glob("random__*seed1.json"))
    data = json.loads(one.read_text())
    data["router"]["parameters"]["candidates"] = "all"
    one.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="both 'random' but differ in candidates.*--router-arg name="):
        build_leaderboard(tmp_path, data=synthetic_hub)


def test_every_stored_number_is_recomputed_from_the_predictions(runs, synthetic_hub):
    path = next(runs.glob("most-frequent__*.json"))
    assert verify(path, synthetic_hub) == load_results(path)


def test_compare_is_a_paired_bootstrap(runs, synthetic_hub):
    a = next(runs.glob("domain-oracle__*.json"))
    b = next(runs.glob("random__*seed0.json"))
    out = compare(a, b, synthetic_hub, n_resamples=2000)
    assert out["domain"]["mean_diff"] > 0 and out["domain"]["p_value"] < 0.05
    same = compare(b, b, synthetic_hub, n_resamples=500)
    assert same["model"]["mean_diff"] == 0 and same["model"]["p_value"] == 1.0


def test_ranking_agreement(runs, synthetic_hub, capsys):
    a, b = next(runs.glob("random__*seed0.json")), next(runs.glob("random__*seed1.json"))
    bench = Benchmark(synthetic_hub)
    n = sum(bench.test_set(j).height for j in range(1, bench.n_experiences + 1))   # every prompt, last row
    assert ranking_agreement(a, a, synthetic_hub) == {"top1": 1.0, "overlap@10": 1.0, "n": n}
    other = ranking_agreement(a, b, synthetic_hub)
    assert other["n"] == n and other["top1"] < 0.5 and 0 < other["overlap@10"] < 1
    assert main(["compare", str(a), str(b), "--data", str(synthetic_hub), "--resamples", "100"]) == 0
    assert "ranking agreement: same first model" in capsys.readouterr().out


def test_slices_and_show(runs, synthetic_hub, capsys):
    from cmrbench.analysis import per_prompt_correct, slices
    path = next(runs.glob("domain-oracle__*.json"))
    found = slices(path, synthetic_hub)
    bench = Benchmark(synthetic_hub)
    n = sum(bench.test_set(j).height for j in range(1, bench.n_experiences + 1))
    overall = per_prompt_correct(path, bench)["model"].mean()
    for name, groups in found.items():
        assert sum(g["n"] for g in groups.values()) == n, name          # every slice partitions the prompts
        assert sum(g["n"] * g["model"] for g in groups.values()) / n == pytest.approx(overall)
    assert all(g["domain"] == 1.0 for g in found["domain"].values())      # the domain oracle never misses one
    assert set(found["gold_model"]) <= {"new in its experience", "seen before"}
    assert main(["show", str(path), "--data", str(synthetic_hub)]) == 0
    out = capsys.readouterr().out
    assert "by source:" in out and "by gold model:" in out and "domain-oracle on CMRBench" in out


def benchmark_script(name: str):
    """A script of benchmarks/ (not a package) loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_shows_the_results_of_record_as_a_fresh_leaderboard_of_them(real_build, tmp_path):
    """The committed results files re-score from their predictions on a fresh build to exactly the committed
    leaderboard.md, and README's tables are its tables (written by ``benchmarks/record.py --readme``): no number
    there is typed by hand or left behind by a newer run."""
    record = benchmark_script("record")
    assert main(["leaderboard", str(record.OUT), "--out", str(tmp_path), "--data", str(real_build)]) == 0
    assert (tmp_path / "leaderboard.md").read_text() == (record.OUT / "leaderboard.md").read_text(), \
        "run: cmrbench leaderboard results/CMRBench-v1-paper, then python benchmarks/record.py --readme"
    assert record.readme_parts()[1] == record.leaderboard_tables(tmp_path), "run: python benchmarks/record.py --readme"


def test_the_cost_table_is_read_from_the_results_of_record(tmp_path):
    """benchmarks/out/costs.json (time, memory, prompts/s of every row, quoted in docs/results.md) is what
    ``benchmarks/costs.py`` reads from the committed results now, and it judges the learning rows against their
    budget (15 minutes, CARvE 20) and no retrieval or reference row."""
    costs = benchmark_script("costs")
    assert costs.main(["--out", str(tmp_path / "costs.json")]) == 0
    fresh = json.loads((tmp_path / "costs.json").read_text())
    assert fresh == json.loads(costs.OUT.read_text()), "run: python benchmarks/costs.py"
    rows = fresh["rows"]
    assert rows["naive"]["budget_s"] == 900 and rows["carve-10"]["budget_s"] == 1200
    assert rows["bm25"]["budget_s"] is None and rows["oracle"]["budget_s"] is None
    assert rows["ncm-mpnet"]["budget_s"] is None, "the larger encoder's cost is reported, not bounded"
    assert rows["naive"]["seeds"] == [0, 1, 2] and rows["naive"]["wall_s_fastest"] <= rows["naive"]["wall_s"]
    spread = fresh["experience_1_same_work"]
    assert spread["fastest_s"] <= spread["median_s"] <= spread["slowest_s"]


def test_old_model_capture_is_read_from_the_results_of_record(real_build, tmp_path):
    """benchmarks/out/old_model_capture.json (finding 5 of docs/results.md) is what the script reads from the
    committed predictions now: the fine-tuned rows send experience 2's prompts to older models far more than ncm."""
    capture = benchmark_script("old_model_capture")
    assert capture.main(["--data", str(real_build), "--out", str(tmp_path / "capture.json")]) == 0
    fresh = json.loads((tmp_path / "capture.json").read_text())
    assert fresh == json.loads(capture.OUT.read_text()), "run: python benchmarks/old_model_capture.py --data DIR"
    share = {row: per["2"]["share_to_older_models"] for row, per in fresh["rows"].items()}
    assert min(share["naive"], share["carve-10"]) > 2 * max(share["ncm"], share["cumulative"])


def test_replay_forgetting_is_read_from_the_results_of_record(real_build, tmp_path):
    """benchmarks/out/replay_forgetting.json (finding 3 of docs/results.md) is what the script reads from the
    committed predictions now: replayed prompts scored against every model forget the unreplayed old models
    (replay-20-ace), scored against the models with an example they no longer do (replay-20)."""
    forgetting = benchmark_script("replay_forgetting")
    assert forgetting.main(["--data", str(real_build), "--out", str(tmp_path / "forgetting.json")]) == 0
    fresh = json.loads((tmp_path / "forgetting.json").read_text())
    assert fresh == json.loads(forgetting.OUT.read_text()), "run: python benchmarks/replay_forgetting.py --data DIR"
    drop = {row: {group: per[f"domain/{group}"]["forgetting"] for group in ("buffered", "not_buffered")}
            for row, per in fresh["rows"].items()}
    assert drop["replay-20-ace"]["not_buffered"] > 3 * max(drop["replay-20-ace"]["buffered"], drop["naive"]["not_buffered"])
    assert drop["replay-20"]["not_buffered"] < drop["naive"]["not_buffered"]
