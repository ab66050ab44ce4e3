"""The ``transcribe-serve`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from serve_app import preflight


def _check(args: argparse.Namespace) -> int:
    config = yaml.safe_load(Path(args.config).read_text())
    nodes = None if args.offline else preflight.cluster_nodes(args.address)
    problems = preflight.check(config, nodes)
    where = "this config" if nodes is None else f"this config on the cluster at {args.address} ({len(nodes)} nodes)"
    if not problems:
        print(f"ok: nothing is missing for {where}")
        return 0
    print(f"{len(problems)} problem(s) for {where}:")
    for problem in problems:
        print(f"  - {problem}")
    return 1


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="transcribe-serve", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="compare a Serve config with the running cluster before deploying")
    check.add_argument("config", help="a Serve config file, e.g. configs/prod.yaml")
    check.add_argument("--address", default="auto", help="the Ray cluster's address (default: auto)")
    check.add_argument("--offline", action="store_true", help="check the config and files only, no cluster")
    check.set_defaults(run=_check)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
