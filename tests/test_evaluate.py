"""The continual protocol on the synthetic hub: results, resume, hidden information and bad routers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from cmrbench.data import Benchmark, HiddenInformationError
from cmrbench.harness import RouterCallError, evaluate
from cmrbench.scoring import score_predictions
from cmrbench.protocol import RouterMeta
from cmrbench.registry import load_router
from cmrbench.results import load_results


class KeywordRouter:
    """A third-party router (not registered): ranks seen models by word overlap with their cards."""

    def __init__(self, seed: int = 0):
        self.meta = RouterMeta(name="keyword-test", zero_shot=True)
        self.cards: dict[str, set[str]] = {}
        self.learned: list[int] = []

    def learn(self, experience) -> None:
        self.learned.append(experience.current_experience)
        for model_id, card in experience.cards.select("model_id", "card").rows():
            self.cards.setdefault(model_id, set()).update(json.loads(card)["description"].split())

    def route(self, prompts, top_k):
        out = []
        for p in prompts:
            words = set(p.split())
            ranked = sorted(self.cards, key=lambda m: (-len(words & self.cards[m]), m))[:top_k]
            out.append([(m, float(len(words & self.cards[m]))) for m in ranked])
        return out


class BadRouter(KeywordRouter):
    """Misbehaves in one chosen way on experience ``when``."""

    def __init__(self, mode: str, when: int = 2):
        super().__init__()
        self.meta = RouterMeta(name=f"bad-{mode}", zero_shot=True)
        self.mode, self.when, self.t = mode, when, 0

    def learn(self, experience) -> None:
        super().learn(experience)
        self.t = experience.current_experience
        if self.mode == "learn-raises" and self.t == self.when:
            raise ValueError("boom in learn")

    def route(self, prompts, top_k):
        out = super().route(prompts, top_k)
        if self.t != self.when:
            return out
        if self.mode == "route-raises":
            raise RuntimeError("boom in route")
        if self.mode == "too-few":
            return out[:-1]
        if self.mode == "non-string":
            out[3] = [(42, 1.0)]
        if self.mode == "unknown-id":
            out[3] = [("nobody/never-seen", 1.0)]
        if self.mode == "duplicate":
            out[3] = [out[3][0], out[3][0]]
        if self.mode == "nan":
            out[3] = [(out[3][0][0], math.nan)]
        if self.mode == "slow":
            time.sleep(2)
        return out


def test_third_party_router_scores_well_above_random(synthetic_hub, tmp_path):
    bench = Benchmark(synthetic_hub)
    res = evaluate(KeywordRouter(), bench, tmp_path, progress=False)
    assert res.status == "complete" and res.finished_experiences == bench.n_experiences
    model = res.summary["model"].final_average_accuracy
    assert model > 3 * res.reference_rows["random"]["model"].final_average_accuracy
    assert res.reference_rows["oracle"]["domain"].final_average_accuracy == 1.0
    A = res.matrices["model"]["acc@1"]
    assert A[0][1] is None and A[2][0] is not None  # NaN (None) above the diagonal only
    acc10 = res.matrices["model"]["acc@10"]
    assert all(acc10[t][j] >= A[t][j] for t in range(3) for j in range(t + 1))


def test_module_class_router_from_the_command_line(synthetic_hub, tmp_path):
    out = subprocess.run([sys.executable, "-m", "cmrbench.cli", "evaluate", "--data", str(synthetic_hub),
                          "--router", "test_evaluate:KeywordRouter", "--out", str(tmp_path), "--no-progress"],
                         capture_output=True, text=True, cwd=Path(__file__).parent)
    assert out.returncode == 0, out.stderr
    assert "keyword-test" in out.stdout
    assert len(list(tmp_path.glob("*.predictions.parquet"))) == 1


def test_results_can_be_rescored_from_predictions(synthetic_hub, tmp_path):
    bench = Benchmark(synthetic_hub)
    res = evaluate(KeywordRouter(), bench, tmp_path, progress=False)
    preds = pl.read_parquet(tmp_path / res.predictions_file)
    again = score_predictions(preds, bench, bench.n_experiences)
    assert again.matrices["domain"]["acc@1"][2, 0] == pytest.approx(res.matrices["domain"]["acc@1"][2][0])


def test_learner_cannot_see_test_or_future(synthetic_hub):
    bench = Benchmark(synthetic_hub)
    exp = bench.train_stream[0]
    with pytest.raises(HiddenInformationError, match="hidden from the learner"):
        exp.test
    assert not hasattr(exp, "_benchmark")
    later = set(bench.experience_models(2)) - set(bench.experience_models(1))
    assert later and not later & set(exp.models["model_id"])
    assert not later & set(exp.cards["model_id"])
    assert set(exp.train["prompt_id"]).isdisjoint(set(bench.test_set(1)["prompt_id"]))


def test_validation_protocol_scores_withheld_validation_prompts(synthetic_hub, tmp_path):
    from cmrbench.leaderboard.board import build_leaderboard
    dev = Benchmark(synthetic_hub, eval_split="validation")
    exp = dev.train_stream[0]
    scored = dev.test_set(1)
    assert exp.validation.height == 0 and scored.height > 0
    assert set(scored["prompt_id"]) == set(Benchmark(synthetic_hub).train_stream[0].validation["prompt_id"])
    assert set(scored["prompt_id"]).isdisjoint(exp.train["prompt_id"])
    res = evaluate(KeywordRouter(), dev, tmp_path, progress=False)
    assert res.dataset.eval_split == "validation" and dev.name.endswith("-validation")
    assert len(list(tmp_path.glob("*-validation__seed0.json"))) == 1
    with pytest.raises(ValueError, match="validation split .*leaderboards rank test-split runs only"):
        build_leaderboard(tmp_path, data=synthetic_hub)
    with pytest.raises(ValueError, match="eval_split must be one of"):
        Benchmark(synthetic_hub, eval_split="train")


@pytest.mark.parametrize("mode, message", [
    ("learn-raises", "learn\\(\\) raised ValueError: boom in learn"),
    ("route-raises", "route\\(\\) raised RuntimeError: boom in route"),
    ("too-few", "returned 15 rankings for 16 prompts"),
    ("non-string", "prompt index 3: model id 42 is a int"),
    ("unknown-id", "prompt index 3: 'nobody/never-seen' is not a model seen so far"),
    ("duplicate", "prompt index 3: model id .* appears twice"),
    ("nan", "prompt index 3: score for .* is nan"),
])
def test_bad_router_errors_name_router_experience_and_prompt(synthetic_hub, tmp_path, mode, message):
    bench = Benchmark(synthetic_hub)
    with pytest.raises(RouterCallError, match=message) as info:
        evaluate(BadRouter(mode), bench, tmp_path, progress=False)
    assert f"router 'bad-{mode}', experience 2" in str(info.value)
    kept = load_results(next(tmp_path.glob("*.json")))  # experience 1 survives
    assert kept.status == "partial" and kept.finished_experiences == 1


def test_timeout_stops_a_slow_router(synthetic_hub, tmp_path):
    with pytest.raises(RouterCallError, match="did not return within --timeout 0.5 s"):
        evaluate(BadRouter("slow"), Benchmark(synthetic_hub), tmp_path, progress=False, timeout=0.5)


def test_unknown_ids_can_be_scored_as_hallucinations(synthetic_hub, tmp_path):
    res = evaluate(BadRouter("unknown-id"), Benchmark(synthetic_hub), tmp_path, progress=False,
                   on_unknown_id="count")
    assert res.hallucination_rate[1] == pytest.approx(2 / 32)  # prompt 3 of each of the two test sets
    assert res.hallucination_rate[0] == 0.0


def test_resume_continues_after_a_failure_and_matches_a_clean_run(synthetic_hub, tmp_path):
    bench = Benchmark(synthetic_hub)
    clean = evaluate(KeywordRouter(), bench, tmp_path / "clean", progress=False)
    flaky = BadRouter("route-raises")
    flaky.meta = RouterMeta(name="keyword-test", zero_shot=True)
    with pytest.raises(RouterCallError):
        evaluate(flaky, bench, tmp_path / "resumed", progress=False)
    fresh = KeywordRouter()
    res = evaluate(fresh, bench, tmp_path / "resumed", progress=False, resume=True)
    assert fresh.learned == [1, 2, 3]  # re-learned experience 1, then went on
    assert res.matrices == clean.matrices


def test_resume_after_killing_the_process(synthetic_hub, tmp_path):
    """SIGKILL the evaluator mid-stream; --resume finishes it with the same numbers as a clean run."""
    script = tmp_path / "slow_router.py"
    script.write_text(
        "import time\nfrom test_evaluate import KeywordRouter\n"
        "class SlowRouter(KeywordRouter):\n"
        "    def learn(self, experience):\n"
        "        if experience.current_experience == 3: time.sleep(60)\n"
        "        super().learn(experience)\n")
    env_path = f"{tmp_path}:{Path(__file__).parent}"
    cmd = [sys.executable, "-m", "cmrbench.cli", "evaluate", "--data", str(synthetic_hub), "--router",
           "slow_router:SlowRouter", "--out", str(tmp_path / "runs"), "--no-progress"]
    import os
    env = {**os.environ, "PYTHONPATH": env_path}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    results = tmp_path / "runs"
    while time.time() < deadline:
        files = list(results.glob("*.json"))
        if files and load_results(files[0]).finished_experiences == 2:
            break
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert load_results(files[0]).finished_experiences == 2
    script.write_text("from test_evaluate import KeywordRouter as SlowRouter\n")
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = load_results(files[0])
    clean = evaluate(KeywordRouter(), Benchmark(synthetic_hub), tmp_path / "clean", progress=False)
    assert resumed.status == "complete" and resumed.matrices == clean.matrices


def test_rerun_without_resume_refuses_to_overwrite(synthetic_hub, tmp_path):
    bench = Benchmark(synthetic_hub)
    evaluate(load_router("random"), bench, tmp_path, progress=False)
    with pytest.raises(Exception, match="--resume"):
        evaluate(load_router("random"), bench, tmp_path, progress=False)


def test_same_seed_same_predictions(synthetic_hub, tmp_path):
    bench = Benchmark(synthetic_hub)
    a = evaluate(load_router("random", seed=3), bench, tmp_path / "a", seed=3, progress=False)
    b = evaluate(load_router("random", seed=3), bench, tmp_path / "b", seed=3, progress=False)
    pa = pl.read_parquet(tmp_path / "a" / a.predictions_file)
    pb = pl.read_parquet(tmp_path / "b" / b.predictions_file)
    assert pa.equals(pb)
