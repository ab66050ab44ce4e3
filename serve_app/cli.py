"""The ``transcribe-serve`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, get_args

import httpx
import yaml

from deployments.schemas import SourceMode
from serve_app import preflight
from serve_app.progress import job_progress


def _check(args: argparse.Namespace) -> int:
    config = yaml.safe_load(Path(args.config).read_text())
    try:
        cluster = None if args.offline else preflight.inspect_cluster(args.address, config, gpu=args.gpu)
    except preflight.NoCluster as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    problems = preflight.check(config, cluster)
    if args.gpu:
        lines = preflight.local_gpu_lines() if cluster is None else cluster.gpu_lines
        assert lines is not None, "the cluster was inspected with gpu=True, so it has GPU lines"
        print(preflight.gpu_report(lines))
        problems += preflight.gpu_problems(lines)
    where = "this config" if cluster is None else \
        f"this config on the cluster at {args.address} ({len(cluster.nodes)} nodes)"
    if not problems:
        print(f"ok: nothing is missing for {where}")
        return 0
    print(f"{len(problems)} problem(s) for {where}:")
    for problem in problems:
        print(f"  - {problem}")
    return 1


def read_sources(values: list[str]) -> list[str]:
    """URLs from arguments and from files named by arguments (one a line, ``#`` comments)."""
    urls = []
    for value in values:
        path = Path(value)
        if path.is_file():
            lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
            urls += [line for line in lines if line]
        else:
            urls.append(value)
    return urls


def summary(status: dict) -> str:
    """The closing table: success rate, failures grouped by reason, audio hours, wall time, throughput."""
    counts = status["counts"]
    total = sum(counts.values())
    succeeded = counts["done"] + counts["skipped"]
    reasons: dict[str, list[str]] = {}
    for item in status["items"]:
        if item["status"] == "failed":
            reasons.setdefault(item["error_type"], []).append(item["url"])
    lines = [
        f"{'items':<22}{total}",
        f"{'succeeded':<22}{succeeded} ({succeeded / max(total, 1):.1%}; {counts['skipped']} already stored)",
        f"{'failed':<22}{counts['failed']}",
        *(f"  {reason:<20}{len(urls)}  e.g. {urls[0]}" for reason, urls in sorted(reasons.items())),
        f"{'audio':<22}{status['audio_seconds'] / 3600:.3f} h",
        f"{'wall time':<22}{status['wall_seconds']:.0f} s",
        f"{'throughput':<22}{status['audio_hours_per_hour']:.2f} audio hours per hour",
    ]
    return "\n".join(lines)


def _ingest(args: argparse.Namespace) -> int:
    urls = read_sources(args.sources)
    body = {"urls": urls, "source": args.source, "model": args.model}
    with httpx.Client(base_url=args.server, timeout=300, headers=_auth(args)) as http:
        created = http.post("/v1/jobs", json=body)
        if created.status_code != 202:
            print(f"the server refused the job ({created.status_code}): {created.text}", file=sys.stderr)
            return 2
        job_id = created.json()["job_id"]
        print(f"job {job_id}: {len(urls)} items", flush=True)
        progress = job_progress(len(urls), sys.stdout)
        try:
            while True:
                status = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
                progress.update(status)
                if status["status"] == "finished":
                    break
                time.sleep(args.poll_s)
        finally:
            progress.close()
    print("\n" + summary(status))
    counts = status["counts"]
    rate = (counts["done"] + counts["skipped"]) / max(sum(counts.values()), 1)
    return 0 if rate >= args.min_success else 1


def _search(args: argparse.Namespace) -> int:
    with httpx.Client(base_url=args.server, timeout=120, headers=_auth(args)) as http:
        found = http.get("/v1/search", params={"q": args.query, "k": args.k}).raise_for_status().json()["data"]
    for rank, hit in enumerate(found, start=1):
        where = f"{hit['start']:.0f}s–{hit['end']:.0f}s"
        print(f"{rank}. [{hit['score']:.3f}] {hit['title'] or hit['transcript_id']}  {where}")
        print(f"   {hit['link'] or hit['url']}")
        print(f"   {hit['text'][:200]}")
    return 0 if found else 1


def _auth(args: argparse.Namespace) -> dict[str, str]:
    key = os.environ.get("TRANSCRIBE_SERVE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="transcribe-serve", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="compare a Serve config with the running cluster before deploying")
    check.add_argument("config", help="a Serve config file, e.g. configs/prod.yaml")
    check.add_argument("--address", default="auto", help="the Ray cluster's address (default: auto)")
    check.add_argument("--offline", action="store_true", help="check the config and files only, no cluster")
    check.add_argument("--gpu", action="store_true",
                       help="also run the CUDA checks in a task on each GPU node (with --offline: on this machine)")
    check.set_defaults(run=_check)
    server: dict[str, Any] = {"default": "http://127.0.0.1:8000",
                              "help": "the service (API key from TRANSCRIBE_SERVE_API_KEY)"}
    ingest = commands.add_parser("ingest", help="transcribe many sources into the store, resumably")
    ingest.add_argument("sources", nargs="+", help="URLs or YouTube ids, or files of them (one a line, # comments)")
    ingest.add_argument("--server", **server)
    ingest.add_argument("--source", choices=get_args(SourceMode), default="auto")
    ingest.add_argument("--model", default=None)
    ingest.add_argument("--min-success", type=float, default=0.9, help="exit 1 below this success rate")
    ingest.add_argument("--poll-s", type=float, default=1.0, help=argparse.SUPPRESS)
    ingest.set_defaults(run=_ingest)
    search = commands.add_parser("search", help="the passages of stored transcripts closest to a query")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--server", **server)
    search.set_defaults(run=_search)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
