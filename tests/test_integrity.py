"""Integrity: nothing is deleted that cmrbench did not create, the answer key stays out of routers' reach,
results are verified against their predictions and the build, and runs resume exactly or not at all.
Each test is one probe a careless or dishonest user could try."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmrbench.builders.folder import NotOurFolderError
from cmrbench.builders.synthetic import make_synthetic_hub


# ------------------------------------------------------------------------------------------ --overwrite

def test_overwrite_never_deletes_a_folder_cmrbench_did_not_create(tmp_path):
    victim = tmp_path / "thesis"
    victim.mkdir()
    (victim / "chapter1.tex").write_text("years of work")
    with pytest.raises(NotOurFolderError, match="not a CMRBench build"):
        make_synthetic_hub(victim, overwrite=True)
    assert (victim / "chapter1.tex").read_text() == "years of work"


def test_overwrite_refuses_a_build_holding_someone_elses_file(tmp_path):
    hub = make_synthetic_hub(tmp_path / "hub")
    (hub / "experience_1" / "notes.txt").write_text("mine")
    with pytest.raises(NotOurFolderError, match="experience_1/notes.txt"):
        make_synthetic_hub(hub, overwrite=True)
    assert (hub / "experience_1" / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_file_and_follows_links_to_the_folder_they_name(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotOurFolderError, match="not a folder"):
        make_synthetic_hub(target, overwrite=True)
    victim = tmp_path / "thesis"
    victim.mkdir()
    (victim / "chapter1.tex").write_text("years of work")
    link = tmp_path / "link"
    link.symlink_to(victim, target_is_directory=True)
    with pytest.raises(NotOurFolderError, match="not a CMRBench build"):
        make_synthetic_hub(link, overwrite=True)
    assert (victim / "chapter1.tex").is_file()


def test_overwrite_replaces_a_clean_build_and_refuses_without_the_flag(tmp_path):
    hub = make_synthetic_hub(tmp_path / "hub")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_synthetic_hub(hub)
    assert make_synthetic_hub(hub, overwrite=True, seed=1) == hub
    assert (hub / "manifest.json").is_file()


def test_cli_build_overwrite_refuses_the_sources_mirror_itself(tmp_path, capsys):
    from cmrbench.cli import main

    mirror = tmp_path / "mirror"
    (mirror / "apibench").mkdir(parents=True)
    (mirror / "apibench" / "huggingface_eval.json").write_text("{}")
    code = main(["build", "--sources", str(mirror), "--out", str(mirror), "--overwrite", "--offline"])
    assert code == 1 and "not a CMRBench build" in capsys.readouterr().err
    assert (mirror / "apibench" / "huggingface_eval.json").read_text() == "{}"


# ------------------------------------------------------------------------------------------ the answer key

def _domain(res) -> float:
    return res.summary["model"].final_average_accuracy


def test_a_router_asking_for_the_answer_key_is_refused_unless_it_is_a_reference_row(synthetic_hub, tmp_path):
    from cheaters import AskingForGold

    from cmrbench.data import Benchmark
    from cmrbench.harness import RouterCallError, evaluate
    from cmrbench.registry import load_router

    with pytest.raises(RouterCallError, match="asks for the answer key .* not a reference row"):
        evaluate(AskingForGold(), Benchmark(synthetic_hub), tmp_path, progress=False)
    oracle = evaluate(load_router("oracle"), Benchmark(synthetic_hub), tmp_path, progress=False)
    assert oracle.answer_key and oracle.router.reference_row and oracle.isolation == "none"


@pytest.mark.parametrize("cheater", ["StackCheater", "GcCheater", "FileCheater"])
def test_isolated_workers_cannot_reach_the_answer_key(cheater, synthetic_hub, tmp_path):
    """In the evaluating process each trick reads the gold labels; in an isolated worker none does."""
    import cheaters

    from cmrbench.data import Benchmark
    from cmrbench.harness import evaluate
    from cmrbench.isolation import isolate

    bench = Benchmark(synthetic_hub)
    in_process = evaluate(getattr(cheaters, cheater)(), bench, tmp_path / "in", progress=False)
    assert _domain(in_process) > 0.95 and in_process.isolation == "none"     # what isolation protects against
    router = isolate(f"cheaters:{cheater}")
    try:
        isolated = evaluate(router, bench, tmp_path / "iso", progress=False)
    finally:
        router.close()
    assert isolated.isolation == "process" and _domain(isolated) < 0.3


def test_isolated_worker_exit_and_hang_are_clear_errors(synthetic_hub, tmp_path):
    from cmrbench.data import Benchmark
    from cmrbench.harness import RouterCallError, evaluate
    from cmrbench.isolation import isolate

    bench = Benchmark(synthetic_hub)
    for hard, message in ((False, "sys.exit"), (True, "worker process ended")):
        router = isolate("cheaters:Exiting", {"hard": hard})
        with pytest.raises(RouterCallError, match=f"experience 2: learn.*{message}"):
            evaluate(router, bench, tmp_path / str(hard), progress=False)
        router.close()
        saved = list((tmp_path / str(hard)).glob("*.json"))
        assert len(saved) == 1 and '"finished_experiences": 1' in saved[0].read_text()   # E1 kept
    router = isolate("cheaters:Sleeping", learn_timeout=2)
    with pytest.raises(RouterCallError, match="did not answer within 2 s; the worker was stopped"):
        evaluate(router, bench, tmp_path / "sleep", progress=False)
    assert not router.worker._proc.is_alive()


def test_in_process_exits_and_slow_learning_stop_the_run_with_an_error(synthetic_hub, tmp_path, capsys):
    from cmrbench.cli import main

    code = main(["evaluate", "--router", "cheaters:Exiting", "--data", str(synthetic_hub), "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 1 and "learn() called sys.exit(0)" in capsys.readouterr().err
    code = main(["evaluate", "--router", "cheaters:Sleeping", "--data", str(synthetic_hub), "--out",
                 str(tmp_path / "slow"), "--learn-timeout", "1", "--no-progress"])
    assert code == 1 and "learn() did not return within --timeout 1 s" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ verified results

@pytest.fixture(scope="module")
def scored(synthetic_hub, tmp_path_factory):
    """A finished run of a real (zero-shot) router and a reference row, to tamper with."""
    from cmrbench.data import Benchmark
    from cmrbench.harness import evaluate
    from cmrbench.registry import load_router

    out = tmp_path_factory.mktemp("scored")
    evaluate(load_router("bm25"), Benchmark(synthetic_hub), out, progress=False)
    evaluate(load_router("random"), Benchmark(synthetic_hub), out, progress=False)
    return out


def _copy(scored: Path, tmp_path: Path, router: str = "bm25") -> Path:
    import shutil
    for p in scored.glob(f"{router}__*"):
        shutil.copy(p, tmp_path / p.name)
    return next(tmp_path.glob(f"{router}__*.json"))


@pytest.mark.parametrize("edit", ["99", "500", "nan", "matrix", "status"])
def test_edited_numbers_are_refused_by_every_reader(edit, scored, synthetic_hub, tmp_path):
    import json

    from cmrbench.analysis import ResultsMismatchError, compare, verify
    from cmrbench.leaderboard.board import build_leaderboard

    path = _copy(scored, tmp_path)
    data = json.loads(path.read_text())
    if edit == "matrix":
        data["matrices"]["domain"]["acc@1"][0][0] = 1.0
        data["summary"]["domain"]["final_average_accuracy"] = 1.0
    elif edit == "status":
        data["finished_experiences"] = 2
    else:
        data["summary"]["domain"]["final_average_accuracy"] = {"99": 0.99, "500": 5.0, "nan": float("nan")}[edit]
    path.write_text(json.dumps(data))
    with pytest.raises((ResultsMismatchError, ValueError)):
        verify(path, synthetic_hub)
    with pytest.raises((ResultsMismatchError, ValueError)):
        build_leaderboard(tmp_path, data=synthetic_hub)
    with pytest.raises((ResultsMismatchError, ValueError)):
        compare(path, path, synthetic_hub, n_resamples=10)


def test_a_file_verified_once_is_verified_again_once_edited(scored, synthetic_hub, tmp_path, monkeypatch):
    """A page reads each results file twice; the second read is not recomputed, unless the bytes changed."""
    import json

    from cmrbench import analysis
    from cmrbench.data import Benchmark

    bench = Benchmark(synthetic_hub)
    path = _copy(scored, tmp_path)
    first = analysis.verify(path, bench)
    calls = []
    recompute = analysis.recompute
    monkeypatch.setattr(analysis, "recompute", lambda *a: calls.append(a) or recompute(*a))
    assert analysis.verify(path, Benchmark(synthetic_hub)) == first and not calls
    data = json.loads(path.read_text())
    data["summary"]["domain"]["final_average_accuracy"] = 0.99
    path.write_text(json.dumps(data))
    with pytest.raises(analysis.ResultsMismatchError):
        analysis.verify(path, bench)
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["duplicate", "drop", "redirect", "missing-file", "corrupt-file"])
def test_damaged_predictions_are_refused(damage, scored, synthetic_hub, tmp_path):
    import polars as pl

    from cmrbench.analysis import verify

    path = _copy(scored, tmp_path)
    preds_path = next(tmp_path.glob("*.predictions.parquet"))
    preds = pl.read_parquet(preds_path)
    if damage == "duplicate":
        preds = pl.concat([preds, preds.head(3)])
    elif damage == "drop":
        preds = preds.slice(1)
    elif damage == "redirect":
        preds = preds.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(2, dtype=pl.Int8))
                                   .otherwise(pl.col("test_experience")).alias("test_experience"))
    if damage == "missing-file":
        preds_path.unlink()
    elif damage == "corrupt-file":
        preds_path.write_bytes(b"PAR1 not really")
    else:
        preds.write_parquet(preds_path)
    with pytest.raises((ValueError, FileNotFoundError), match="predictions|prompt"):
        verify(path, synthetic_hub)


def test_rescore_write_recomputes_every_number(scored, synthetic_hub, tmp_path, capsys):
    import json

    from cmrbench.analysis import verify
    from cmrbench.cli import main

    path = _copy(scored, tmp_path)
    data = json.loads(path.read_text())
    data["matrices"]["model"]["acc@1"][0][0] = 0.5
    data["summary"]["model"]["final_average_accuracy"] = 0.123
    path.write_text(json.dumps(data))
    assert main(["rescore", str(path), "--data", str(synthetic_hub)]) == 2
    assert "matrices, summary DIFFER" in capsys.readouterr().out
    assert main(["rescore", str(path), "--data", str(synthetic_hub), "--write"]) == 0
    assert verify(path, synthetic_hub).summary["model"].final_average_accuracy != 0.123


def test_an_edited_dataset_file_is_refused_when_the_benchmark_opens(synthetic_hub, tmp_path):
    import shutil

    from cmrbench.data import Benchmark, DatasetFolderError

    hub = tmp_path / "hub"
    shutil.copytree(synthetic_hub, hub)
    with open(hub / "experience_2" / "test.parquet", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(DatasetFolderError, match="experience_2/test.parquet differs from the file manifest.json"):
        Benchmark(hub)


def test_a_crafted_manifest_cannot_steer_output_paths(synthetic_hub, tmp_path):
    import json
    import shutil

    from cmrbench.data import Benchmark, DatasetFolderError

    hub = tmp_path / "hub"
    shutil.copytree(synthetic_hub, hub)
    manifest = json.loads((hub / "manifest.json").read_text())
    manifest["stream"] = "../../outside"
    (hub / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetFolderError, match="stream"):
        Benchmark(hub)


# ------------------------------------------------------------------------------------------ resume

def test_random_router_resumed_after_a_kill_gives_the_uninterrupted_numbers(synthetic_hub, tmp_path):
    import polars as pl

    from cmrbench.data import Benchmark
    from cmrbench.harness import evaluate
    from cmrbench.registry import load_router

    bench = Benchmark(synthetic_hub)
    whole = evaluate(load_router("random", seed=3), bench, tmp_path / "whole", seed=3, progress=False)
    broken = tmp_path / "broken"
    router = load_router("random", seed=3)
    learn = router.learn

    def killed(experience):
        if experience.current_experience == 3:
            raise KeyboardInterrupt            # as close to kill -9 as a test gets: nothing after E2 is written
        learn(experience)
    router.learn = killed
    with pytest.raises(KeyboardInterrupt):
        evaluate(router, bench, broken, seed=3, progress=False)
    resumed = evaluate(load_router("random", seed=3), bench, broken, seed=3, progress=False, resume=True)
    assert resumed.summary == whole.summary
    a = pl.read_parquet(tmp_path / "whole" / whole.predictions_file)
    assert a.equals(pl.read_parquet(broken / resumed.predictions_file))


def test_resume_refuses_changed_settings_and_says_when_there_is_nothing_to_do(synthetic_hub, tmp_path, capsys):
    from cmrbench.cli import main

    base = ["evaluate", "--router", "dense", "--data", str(synthetic_hub), "--out", str(tmp_path), "--no-progress"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base + ["--resume", "--router-arg", "template=description"]) == 1
    assert "other router settings (template differ)" in capsys.readouterr().err
    assert main(base + ["--resume"]) == 0
    assert "already complete; nothing to resume" in capsys.readouterr().out


def test_a_second_process_on_a_running_run_stops_and_deletes_nothing(synthetic_hub, tmp_path, capsys):
    """Two `cmrbench evaluate` of the same run (an orphan of a killed launcher, a double-click) must not
    interleave or --overwrite each other's files; a holder that dies leaves no stale lock behind."""
    import subprocess
    import sys

    from cmrbench.cli import main
    from cmrbench.data import Benchmark
    from cmrbench.fileio import exclusive_lock
    from cmrbench.harness import RunPaths

    base = ["evaluate", "--router", "random", "--data", str(synthetic_hub), "--out", str(tmp_path), "--no-progress"]
    assert main(base) == 0
    paths = RunPaths.for_run(tmp_path, "random", Benchmark(synthetic_hub), 0)
    before = {p: p.read_bytes() for p in (paths.results, paths.predictions)}
    capsys.readouterr()
    with exclusive_lock(paths.lock, "the first run"):            # the first process, still writing
        assert main(base + ["--overwrite"]) == 1
        assert "being written by pid" in capsys.readouterr().err
        assert {p: p.read_bytes() for p in before} == before
    assert not paths.lock.exists()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from cmrbench.fileio import exclusive_lock\n"
                               "with exclusive_lock(sys.argv[1], 'x'):\n print('held', flush=True); time.sleep(60)",
                               str(paths.lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()                                                # kill -9: no cleanup runs
    holder.wait()
    assert main(base + ["--overwrite"]) == 0                     # the dead holder's lock went with it
    assert not paths.lock.exists()


# ------------------------------------------------------------------------------------------ names and folders

def test_router_names_that_sanitise_alike_never_share_a_file(synthetic_hub, tmp_path):
    from cmrbench.data import Benchmark
    from cmrbench.harness import RunPaths

    bench = Benchmark(synthetic_hub)
    stems = {RunPaths.for_run(tmp_path, name, bench, 0).results.name for name in ("a/b", "a?b", "a-b", ".hidden")}
    assert len(stems) == 4 and not any(s.startswith(".") for s in stems)
    assert RunPaths.for_run(tmp_path, "carve-10", bench, 0).results.name == "carve-10__CMRBench-v1-synthetic__seed0.json"


def test_folder_scans_skip_checkpoints_and_leaderboards_and_refuse_a_run_counted_twice(scored, synthetic_hub,
                                                                                      tmp_path):
    import shutil

    from cmrbench.leaderboard.board import build_leaderboard
    from cmrbench.results import find_results_files

    _copy(scored, tmp_path)
    (tmp_path / "bm25__CMRBench-v1-synthetic__seed0.checkpoints" / "after_1").mkdir(parents=True)
    (tmp_path / "bm25__CMRBench-v1-synthetic__seed0.checkpoints" / "after_1" / "router.json").write_text("{}")
    (tmp_path / "leaderboard.json").write_text("{}")
    assert [p.name for p in find_results_files(tmp_path)] == ["bm25__CMRBench-v1-synthetic__seed0.json"]
    board = build_leaderboard(tmp_path, data=synthetic_hub)
    assert [e.router for e in board.entries] == ["bm25"]
    (tmp_path / "reproduce").mkdir()
    for p in tmp_path.glob("bm25__*seed0.*"):
        if p.is_file():
            shutil.copy(p, tmp_path / "reproduce" / p.name)
    with pytest.raises(ValueError, match="both 'bm25' with seed 0: one run counted twice"):
        build_leaderboard(tmp_path, data=synthetic_hub)


def test_ranking_follows_each_metrics_direction_and_keeps_references_apart(scored, synthetic_hub, tmp_path):
    from cmrbench.leaderboard.board import build_leaderboard, sort_key

    _copy(scored, tmp_path)
    _copy(scored, tmp_path, "random")
    board = build_leaderboard(tmp_path, "domain.forgetting", synthetic_hub)
    assert [e.router for e in board.entries] == ["bm25"] and [e.router for e in board.references] == ["random"]
    key = sort_key("domain.forgetting")
    a, b = board.entries[0].model_copy(deep=True), board.entries[0].model_copy(deep=True)
    a.scores["domain"]["forgetting"].mean, b.scores["domain"]["forgetting"].mean = 0.30, 0.05
    assert sorted([a, b], key=key)[0] is b            # less forgetting ranks first
    with pytest.raises(ValueError, match="--sort-by"):
        sort_key("domain.speed")


# ------------------------------------------------------------------------------------------ small things

@pytest.mark.parametrize("bad", [("m", True), ("m", "0.5"), ("m", 10 ** 400), (None, 1.0)])
def test_malformed_scores_and_ids_are_refused_naming_the_router(bad):
    from cmrbench.harness import RouterCallError, check_rankings

    class Sub(str):
        pass
    with pytest.raises(RouterCallError, match="router 'r', experience 1, prompt index 0"):
        check_rankings([[bad]], 1, 10, frozenset({"m"}), "error", "router 'r', experience 1", 0)
    with pytest.raises(RouterCallError, match="not a str"):
        check_rankings([[(Sub("m"), 1.0)]], 1, 10, frozenset({"m"}), "error", "router 'r', experience 1", 0)


@pytest.mark.parametrize("flag", [["--batch-size", "0"], ["--top-k", "-1"], ["--timeout", "-5"]])
def test_nonsense_options_are_refused_before_anything_runs(flag, synthetic_hub, capsys):
    from cmrbench.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--router", "random", "--data", str(synthetic_hub)] + flag)
    assert "must be greater than 0" in capsys.readouterr().err


def test_precomputed_folders_refuse_null_ids_and_conflicting_lines(synthetic_hub, tmp_path):
    import json

    from cmrbench.baselines.precomputed import PrecomputedRouter
    from cmrbench.data import Benchmark

    exp = Benchmark(synthetic_hub).train_stream[0]
    (tmp_path / "meta.json").write_text(json.dumps({"name": "x", "zero_shot": True}))
    line = {"prompt": "p", "predictions": [[None, 1.0]]}
    (tmp_path / "after_experience_1.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match="after_experience_1.jsonl:1: .*not a string"):
        PrecomputedRouter(tmp_path).learn(exp)
    lines = [{"prompt": "p", "predictions": [["a", 1.0]]}, {"prompt": "p", "predictions": [["b", 1.0]]}]
    (tmp_path / "after_experience_1.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(ValueError, match=":2: the prompt of line 1 again, with another ranking"):
        PrecomputedRouter(tmp_path).learn(exp)


def test_a_folder_named_like_a_registered_router_is_not_silently_shadowed(tmp_path, monkeypatch):
    from cmrbench.registry import RouterLoadError, load_router

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bm25").mkdir()
    with pytest.raises(RouterLoadError, match="both a registered router and a folder here; write ./bm25"):
        load_router("bm25")
