"""``mediavec publish images|video``: media requests from files, URLs and directories."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mediavec.settings import Settings, load_settings

if TYPE_CHECKING:
    from schemas import MediaRequest


def _publish(args: argparse.Namespace) -> int:
    """Check the whole file first; publish its valid lines (none with --strict when any is refused)."""
    from mediavec.publish import new_run_id
    from mediavec.publish_file import PublishFileError, check_file, display_name

    settings = load_settings()
    run_id = args.run_id or new_run_id()
    try:
        checked = check_file(Path(args.file), collection=args.collection, run_id=run_id)
    except PublishFileError as exc:
        return _refuse(str(exc), 2)
    for r in checked.refused:
        print(f"{display_name(args.file)}:{r.line}: {r.reason}", file=sys.stderr)
    lines = len(checked.accepted) + len(checked.refused)
    refused = f"refused {len(checked.refused)} of {lines} lines of {display_name(args.file)}"
    return _finish(settings, args, checked.requests, refused if checked.refused else "", run_id, "requests")


def _publish_video(args: argparse.Namespace) -> int:
    """Probe every source first; publish the segments of the good videos (none with --strict)."""
    from mediavec import publish_video as pv
    from mediavec.publish import new_run_id

    settings = load_settings()
    run_id = args.run_id or new_run_id()
    found = pv.gather_sources(args.sources)
    probed = pv.probe_videos(settings, found.urls, show_progress=not args.quiet)
    requests, refused = pv.video_requests(
        probed,
        segment_s=args.segment,
        collection=args.collection,
        run_id=run_id,
        sample_fps=args.fps,
        start_s=args.start,
        end_s=args.end,
    )
    problems = [*found.problems, *refused]
    for problem in problems:
        print(str(problem), file=sys.stderr)
    good = len(probed) - len(refused)
    summary = f"refused {len(problems)} sources or videos" if problems else ""
    status = _finish(settings, args, requests, summary, run_id, f"segment requests of {good} videos")
    dirs = pv.local_dirs(r.url for r in requests)
    missing = pv.uncovered(dirs, settings.fetch.allow_paths)
    if dirs and requests and not (problems and args.strict):
        state = "not covered by this shell's settings" if missing else "covered by this shell's settings"
        print(f"local files: fetch workers need MEDIAVEC_FETCH__ALLOW_PATHS='{json.dumps(dirs)}' ({state})")
    return status


def _finish(
    settings: Settings, args: argparse.Namespace, requests: list[MediaRequest], refused: str, run_id: str, what: str
) -> int:
    """Publish unless --strict and something was refused; 1 when anything was refused, else 0."""
    from mediavec.cli_errors import require_broker
    from mediavec.publish import PublishError, publish

    if refused and (args.strict or not requests):
        return _refuse(f"{refused}; {'--strict: ' if args.strict else ''}nothing published", 1)
    require_broker(settings)  # after the input's own errors, which a user fixes first
    try:
        n = publish(settings, requests, total=len(requests), show_progress=not args.quiet)
    except PublishError as exc:
        return _refuse(str(exc), 1)
    print(f"published {n} {what}, run id {run_id}")
    return _refuse(f"{refused} (reasons above)", 1) if refused else 0


def _refuse(message: str, status: int) -> int:
    print(f"mediavec: {message}", file=sys.stderr)
    return status


def _collection_arg(text: str) -> str:
    from mediavec.publish_file import defaults_problem

    problem = defaults_problem(text, "")
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _run_id_arg(text: str) -> str:
    from mediavec.publish_file import defaults_problem

    problem = defaults_problem("default", text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _duration_arg(text: str) -> float:
    from mediavec.publish_video import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_duration(text: str) -> float:
    seconds = _duration_arg(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return seconds


def _fps_arg(text: str) -> float:
    try:
        fps = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < fps <= 120:
        raise argparse.ArgumentTypeError("frames per second must be in (0, 120]")
    return fps


def add_publish(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pub = sub.add_parser("publish", help="publish media requests")
    kinds = pub.add_subparsers(dest="kind", required=True)
    img = kinds.add_parser(
        "images",
        help="image URLs from a file",
        description="Check every line of FILE first: each bad line is reported once with its number and why; the "
        "good lines are published (none with --strict). Exit status: 0 when every line was published, 1 when a "
        "line was refused, 2 when FILE is missing, unreadable, binary or empty.",
    )
    img.add_argument("file", help="one URL per line, JSON lines, or CSV with a url column")
    vid = kinds.add_parser(
        "video",
        help="videos cut into segments, one request per segment",
        description="Probe each video's duration and publish one request per segment. Local files are "
        "published as file:// URLs: the fetch workers read them only under MEDIAVEC_FETCH__ALLOW_PATHS "
        "(a JSON list of directories, e.g. '[\"/data/videos\"]'). Every source is checked first: each bad source or "
        "unreadable video is reported once with why, the others are published (none with --strict). Exit status: "
        "0 when every source was published, 1 when one was refused.",
    )
    vid.add_argument("sources", nargs="+", help="video files or http(s) URLs, directories, or list files")
    vid.add_argument("--segment", type=_positive_duration, default=10.0, help="segment length: 10s, 1.5s, 2m, 500ms")
    vid.add_argument("--fps", type=_fps_arg, help="frames sampled per second (default: the workers' setting)")
    vid.add_argument("--start", type=_duration_arg, default=0.0, help="skip the videos' first part (e.g. 30s)")
    vid.add_argument("--end", type=_duration_arg, help="stop at this time (default: each video's end)")
    vid.set_defaults(func=_publish_video)
    for p in (img, vid):
        p.add_argument("--collection", type=_collection_arg, default="default")
        p.add_argument("--run-id", type=_run_id_arg)
        p.add_argument("--quiet", action="store_true")
        p.add_argument(
            "--strict",
            action="store_true",
            help="publish nothing when any line or source is refused (default: the rest)",
        )
    img.set_defaults(func=_publish)
