"""Command-line pieces of the leaderboard package: ``cmrbench plot`` and ``cmrbench publish``.

``cmrbench/cli.py`` wires them in with :func:`register_cli`; ``python -m cmrbench.leaderboard.cli``
runs the same two subcommands on their own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cmrbench.results import MATRIX_METRICS


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import plot_results
    files = plot_results(args.results, args.out, fmt=args.format, metric=args.metric, dpi=args.dpi,
                         compare=False if args.no_compare else None, references=args.references)
    print(f"{len(files)} figures ({args.format}) written to {args.out}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .publish import (default_message, format_plan, format_report, plan_as_json, plan_upload, publish,
                          report_as_json, token_from_env)
    if args.repo is None and not args.dry_run:
        raise ValueError("--repo ORG/NAME is required to publish (or list what would be sent with --dry-run)")
    files = plan_upload(args.dataset, args.results, results_prefix=args.results_prefix, data=args.data)
    endpoint = (args.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    if args.dry_run:
        print(plan_as_json(files) if args.json else format_plan(files, args.repo or "<ORG/NAME>",
                                                                 args.revision or "main", endpoint))
        return 0
    report = publish(files, args.repo, branch=args.revision, endpoint=endpoint, token=token_from_env(args.token_env),
                     message=args.message or default_message(files, args.dataset), create_pr=args.create_pr,
                     private=True if args.private else None)
    print(report_as_json(report) if args.json else format_report(report, has_dataset=args.dataset is not None))
    return 0


def add_plot_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("plot", help="figures (PNG/SVG) from results files: heatmaps, accuracy curves, forgetting",
                       description="Draw, for each results file, the accuracy-matrix heatmap of each level, accuracy "
                                   "after each experience and forgetting per experience; with several files, also "
                                   "comparison figures (seeds of one router merged as mean ± std). Needs matplotlib: "
                                   "pip install 'cmrbench[plots]'.")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                   help="results JSON files, or folders of them")
    p.add_argument("--out", type=Path, required=True, help="folder for the figures")
    p.add_argument("--format", choices=["png", "svg"], default="png", help="file format (default png)")
    p.add_argument("--metric", default="acc@1", choices=list(MATRIX_METRICS),
                   help="matrix metric to draw (default acc@1)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of PNG files (default 150)")
    p.add_argument("--no-compare", action="store_true", help="no comparison figures, even for several files")
    p.add_argument("--references", action="store_true",
                   help="keep reference rows (oracles, random, most-frequent) in the comparison figures")
    p.set_defaults(func=cmd_plot)
    return p


def add_publish_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("publish", help="push a built CMRBench folder and/or results to a Hub dataset repo",
                       description="Create the dataset repo if needed and commit the files in one commit; the "
                                   "commit sha (the revision to pin) is printed. --dry-run lists exactly the files "
                                   "(path, size, sha256) and sends nothing.")
    p.add_argument("--dataset", type=Path, default=None, help="built CMRBench folder (its dataset card included)")
    p.add_argument("--results", type=Path, default=None,
                   help="folder of results files (and predictions); each results file must verify on the build")
    p.add_argument("--data", type=Path, default=None,
                   help="the build results are verified against (default: --dataset, else where `cmrbench build` "
                        "writes)")
    p.add_argument("--repo", default=None, metavar="ORG/NAME",
                   help="Hub dataset repo (required unless --dry-run)")
    p.add_argument("--revision", default=None, metavar="BRANCH",
                   help="branch to commit to, created if missing (default main); the commit sha is reported")
    p.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; no network")
    p.add_argument("--endpoint", default=None, metavar="URL",
                   help="Hub endpoint (default $HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--token-env", default=None, metavar="VAR",
                   help="environment variable holding a write token (default: HF_TOKEN or the stored login)")
    p.add_argument("--results-prefix", default="results", metavar="PATH",
                   help="folder of the repo that receives --results (default results; '' for the root)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo is unchanged)")
    p.add_argument("--json", action="store_true", help="print the file list / the report as JSON")
    p.set_defaults(func=cmd_publish)
    return p


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` and ``publish`` subcommands to ``cmrbench``'s subparsers."""
    add_plot_parser(subparsers)
    add_publish_parser(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmrbench.leaderboard.cli",
                                     description="cmrbench plot / publish (also available as `cmrbench plot|publish`)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_cli(sub)
    args = parser.parse_args(argv)
    if os.environ.get("CMRBENCH_DEBUG"):
        return args.func(args)
    try:
        return args.func(args)
    except Exception as err:  # one clear line; CMRBENCH_DEBUG=1 shows the traceback
        print(f"cmrbench {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
