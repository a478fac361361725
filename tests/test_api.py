"""The Python API, used as in a notebook: load a build, evaluate a router object or a name, read results."""

from __future__ import annotations

import json

import pytest

import cmrbench
from cmrbench.cli import main
from toy_routers import OverlapRouter


class KeywordRouter(OverlapRouter):
    """A router a user writes in a notebook: the README's overlap router, learning from training prompts."""

    def __init__(self):
        super().__init__()
        self.meta = cmrbench.RouterMeta(name="keywords", zero_shot=False)

    def learn(self, experience):
        for prompt, model in experience.train.select("prompt", "model_id").rows():
            self.words.setdefault(model, set()).update(prompt.lower().split())


def test_notebook_workflow(synthetic_hub, tmp_path):
    bench = cmrbench.load(synthetic_hub)
    assert bench.n_experiences == 3 and isinstance(KeywordRouter(), cmrbench.Router)
    results = cmrbench.evaluate(KeywordRouter(), bench, progress=False)            # nothing written anywhere
    assert results.status == "complete" and 0 < results.summary["domain"].final_average_accuracy <= 1
    assert results.predictions.height == sum(bench.test_set(j).height * (4 - j) for j in (1, 2, 3))
    assert results.run.started_at <= results.run.finished_at and results.run.packages["polars"]
    # by name, with arguments, and kept on disk: the files are the standard ones and resume says it is complete
    named = cmrbench.evaluate("bm25", synthetic_hub, out=tmp_path, router_args={"tokenizer": "lower"},
                              progress=False)
    assert named.run.router_spec == "bm25" and named.router.parameters["tokenizer"] == "lower"
    stored = cmrbench.load_results(next(tmp_path.glob("bm25__*.json")))
    assert stored.summary == named.summary
    again = cmrbench.evaluate("bm25", synthetic_hub, out=tmp_path, router_args={"tokenizer": "lower"},
                              resume=True, progress=False)
    assert again.summary == named.summary and again.run.started_at == named.run.started_at
    with pytest.raises(ValueError, match="router_args are for a router given by name"):
        cmrbench.evaluate(KeywordRouter(), bench, router_args={"x": 1})
    with pytest.raises(AttributeError):
        cmrbench.no_such_name


def test_cli_results_record_the_command(synthetic_hub, tmp_path):
    assert main(["evaluate", "--data", str(synthetic_hub), "--router", "random", "--run-name", "lucky",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    run = json.loads(next(tmp_path.glob("lucky__*.json")).read_text())["run"]
    assert run["router_spec"] == "random" and run["command"][:4] == ["cmrbench", "evaluate", "--data", synthetic_hub.name]
    assert not any(str(tmp_path) in arg for arg in run["command"])          # no folder of this machine is kept
