"""The command line as users meet it: help texts, smoke runs, reproductions, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cmrbench.cli import build_parser, main

COMMANDS = ["build", "info", "sources", "evaluate", "mock-run", "mock-data", "routers", "rescore", "compare", "show",
            "leaderboard", "reproduce", "plot", "publish", "models"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    assert len(capsys.readouterr().out) > 200


def test_mock_run_smoke_test_in_seconds():
    done = subprocess.run([sys.executable, "-m", "cmrbench.cli", "mock-run", "--router", "random", "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "random on CMRBench-v1-synthetic" in done.stdout and "discarded" in done.stdout


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["info", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is not a CMRBench folder" in err and "Traceback" not in err
    assert main(["evaluate", "--data", str(tmp_path), "--router", "nope"]) == 1


def test_unknown_router_lists_the_registered_ones(synthetic_hub, capsys):
    assert main(["evaluate", "--data", str(synthetic_hub), "--router", "does-not-exist"]) == 1
    assert "registered: " in capsys.readouterr().err


def test_reference_reproductions_match_their_expected_scores(real_build, tmp_path, capsys):
    assert main(["reproduce", "random", "most-frequent", "oracle", "domain-oracle", "bm25", "bm25-lower", "--data",
                 str(real_build), "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count(" OK") == 24 and "FAIL" not in out


def test_lucene_reproduction_on_the_real_build(real_build, tmp_path, capsys):
    """Lucene BM25 through pyserini and Java 21 (the 'lucene' extra, which CI installs); about 2 minutes."""
    pytest.importorskip("pyserini", reason="optional extra 'lucene' is not installed")
    # in a child process: a JVM in the test process conflicts with pytest's fault handler (later tests crash)
    done = subprocess.run([sys.executable, "-m", "cmrbench.cli", "reproduce", "lucene-bm25", "--data", str(real_build),
                           "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(" OK") == 4 and "FAIL" not in done.stdout


def test_readme_example_router_runs(tmp_path, synthetic_hub):
    """The 20-line router in README.md is real code: extract it and evaluate it."""
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("# my_router.py")[1].split("```")[0]
    (tmp_path / "my_router.py").write_text("# my_router.py" + code)
    assert len(code.strip().splitlines()) <= 25
    done = subprocess.run([sys.executable, "-m", "cmrbench.cli", "evaluate", "--data", str(synthetic_hub),
                           "--router", "my_router:OverlapRouter", "--out", str(tmp_path / "runs"), "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "overlap on CMRBench-v1-synthetic" in done.stdout
    # as the README says it, with the installed command (no PYTHONPATH): my_router.py is found in the folder
    script = Path(sys.executable).with_name("cmrbench")
    done = subprocess.run([str(script), "mock-run", "--router", "my_router:OverlapRouter", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_output_into_a_closed_pipe_is_not_an_error():
    script = Path(sys.executable).with_name("cmrbench")
    done = subprocess.run(f"'{script}' sources | head -1", shell=True, capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "Broken pipe" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense", "splade", "replay-10", "carve-10"])
def test_neural_reproductions(name, real_build, tmp_path, capsys, monkeypatch):
    """Minutes each on 2 cores with a cold embedding cache (trained rows 8-16): the README's numbers,
    recomputed."""
    monkeypatch.setenv("CMRBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["reproduce", name, "--data", str(real_build), "--out", str(tmp_path), "--no-progress"]) == 0
    assert "FAIL" not in capsys.readouterr().out


def test_every_reproduction_names_a_registered_router():
    from cmrbench.registry import REGISTRY
    from cmrbench.reproduce import reproductions
    specs = reproductions()
    assert {"bm25", "ncm", "ranpac", "replay-10", "carve-10", "carve-20"} <= set(specs)
    for spec in specs.values():
        assert spec.router in REGISTRY, spec.name
        assert spec.command.startswith(f"cmrbench evaluate --router {spec.router}"), spec.name
        assert spec.run_name is None or f"--run-name {spec.run_name}" in spec.command, spec.name


def test_router_args_parse_like_the_yaml_configs():
    from cmrbench.registry import parse_router_args
    assert parse_router_args(["anchoring=none", "dim=1024", "tau=0.08", "two-phase=false", "model=null"]) == {
        "anchoring": "none", "dim": 1024, "tau": 0.08, "two_phase": False, "model": None}


def test_run_name_names_the_results_of_one_configuration(synthetic_hub, tmp_path):
    from cmrbench.results import load_results

    assert main(["evaluate", "--router", "dense", "--router-arg", "template=description", "--run-name",
                 "dense-description", "--data", str(synthetic_hub), "--out", str(tmp_path), "--no-progress"]) == 0
    results = load_results(tmp_path / "dense-description__CMRBench-v1-synthetic__seed0.json")
    assert results.router.name == "dense-description" and results.router.parameters["template"] == "description"


def test_routers_are_listed_with_metadata_and_other_packages_can_add_some(monkeypatch, capsys, tmp_path):
    import importlib.metadata as md

    from cmrbench.registry import KINDS, REGISTRY, load_router, registered
    assert all(e.kind in KINDS and e.summary and ":" in e.target for e in REGISTRY.values())
    (tmp_path / "ext_router_package.py").write_text(
        "from cmrbench.baselines.reference import RandomRouter\n"
        "def toy(seed=0):\n    return RandomRouter(seed=seed)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = md.EntryPoint(name="toy", value="ext_router_package:toy", group="cmrbench.routers")
    clash = md.EntryPoint(name="bm25", value="ext_router_package:toy", group="cmrbench.routers")
    monkeypatch.setattr(md, "entry_points", lambda group=None: [toy, clash] if group == "cmrbench.routers" else [])
    names = registered()
    assert names["toy"].kind == "external" and names["bm25"] == REGISTRY["bm25"]   # ours are never replaced
    assert load_router("toy").meta.name == "random"
    assert main(["routers", "--kind", "external", "--names"]) == 0
    assert capsys.readouterr().out.split() == ["toy"]
    assert main(["routers"]) == 0
    assert "lucene" in capsys.readouterr().out


def test_mock_run_hub_separates_learning_routers_from_card_overlap(tmp_path):
    import cmrbench
    from cmrbench.builders.synthetic import make_synthetic_hub
    from test_api import KeywordRouter
    from toy_routers import OverlapRouter
    hub = make_synthetic_hub(tmp_path / "hard", hard=True)
    overlap = cmrbench.evaluate(OverlapRouter(), hub, progress=False).summary["model"].final_average_accuracy
    learner = cmrbench.evaluate(KeywordRouter(), hub, progress=False).summary["model"].final_average_accuracy
    assert overlap < 0.4 and learner > 0.8
