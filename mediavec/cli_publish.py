"""``mediavec publish images|video``: media requests from files, URLs and directories."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streams.settings import load_settings


def _publish(args: argparse.Namespace) -> int:
    from mediavec.publish import new_run_id, publish, read_requests

    settings = load_settings()
    run_id = args.run_id or new_run_id()
    requests = list(read_requests(Path(args.file), collection=args.collection, run_id=run_id))
    n = publish(settings, requests, total=len(requests), show_progress=not args.quiet)
    print(f"published {n} requests, run id {run_id}")
    return 0


def _publish_video(args: argparse.Namespace) -> int:
    from mediavec import publish_video as pv
    from mediavec.publish import new_run_id, publish

    settings = load_settings()
    run_id = args.run_id or new_run_id()
    try:
        urls = pv.expand_sources(args.sources)
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    probed = pv.probe_videos(settings, urls, show_progress=not args.quiet)
    requests = [
        req
        for p in probed
        for req in pv.segment_requests(
            p,
            segment_s=args.segment,
            collection=args.collection,
            run_id=run_id,
            sample_fps=args.fps,
            start_s=args.start,
            end_s=args.end,
        )
    ]
    for p in probed:
        if p.duration_s is None:
            print(f"skipped {p.url}: {p.error}", file=sys.stderr)
    n = publish(settings, requests, total=len(requests), show_progress=not args.quiet)
    readable = sum(p.duration_s is not None for p in probed)
    print(f"published {n} segment requests of {readable} videos, run id {run_id}")
    dirs = pv.local_dirs(p.url for p in probed if p.duration_s is not None)
    missing = pv.uncovered(dirs, settings.fetch.allow_paths)
    if dirs:
        state = "not covered by this shell's settings" if missing else "covered by this shell's settings"
        print(f"local files: fetch workers need MEDIAVEC_FETCH__ALLOW_PATHS='{json.dumps(dirs)}' ({state})")
    return 1 if readable < len(probed) else 0


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
    img = kinds.add_parser("images", help="image URLs from a file")
    img.add_argument("file", help="one URL per line, JSON lines, or CSV with a url column")
    vid = kinds.add_parser(
        "video",
        help="videos cut into segments, one request per segment",
        description="Probe each video's duration and publish one request per segment. Local files are "
        "published as file:// URLs: the fetch workers read them only under MEDIAVEC_FETCH__ALLOW_PATHS "
        "(a JSON list of directories, e.g. '[\"/data/videos\"]').",
    )
    vid.add_argument("sources", nargs="+", help="video files or http(s) URLs, directories, or list files")
    vid.add_argument("--segment", type=_positive_duration, default=10.0, help="segment length: 10s, 1.5s, 2m, 500ms")
    vid.add_argument("--fps", type=_fps_arg, help="frames sampled per second (default: the workers' setting)")
    vid.add_argument("--start", type=_duration_arg, default=0.0, help="skip the videos' first part (e.g. 30s)")
    vid.add_argument("--end", type=_duration_arg, help="stop at this time (default: each video's end)")
    vid.set_defaults(func=_publish_video)
    for p in (img, vid):
        p.add_argument("--collection", default="default")
        p.add_argument("--run-id")
        p.add_argument("--quiet", action="store_true")
    img.set_defaults(func=_publish)
