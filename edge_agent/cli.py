"""`sleepsafe-edge`: run the daemon, replay or evaluate clips, check config, fetch clips.

Exit codes follow sysexits.h so systemd can tell a bad config (78, never worth a restart)
from a crash: 0 ok, 2 usage, 65 bad data, 66 missing input, 69 fetch failed, 78 config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import structlog

from edge_agent.config import DEFAULT_CONFIG_PATH, EdgeConfig, load_config
from sleepsafe.cli import add_config_args, add_install_args, cmd_install_service, die
from sleepsafe.exitcodes import Exit
from sleepsafe.logs import configure_logging
from sleepsafe.protocol import Event
from sleepsafe.redact import redacted
from sleepsafe.settings import ConfigError, parse_overrides

log = structlog.get_logger(__name__)


def _die(code: int, message: str) -> int:
    return die("sleepsafe-edge", code, message)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sleepsafe-edge", description="SleepSafe Edge driver-drowsiness agent.")
    add_config_args(p, DEFAULT_CONFIG_PATH, "detector.microsleep_s=1.2")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon on a camera, stream or file")
    run.add_argument("--source", help="override source.uri (camera index, /dev/videoN, file, URL, pipeline)")
    run.add_argument("--preview", action="store_true", help="show landmarks, EAR and state in a window")
    run.add_argument("--preview-out", type=Path, help="write the annotated video to this MP4")

    rp = sub.add_parser("replay", help="run the full agent on a clip as fast as possible")
    rp.add_argument("file", type=Path)
    rp.add_argument("--json", action="store_true", help="one JSON object a line, summary last")
    rp.add_argument("--preview", action="store_true", help="show the annotated clip in a window")
    rp.add_argument("--preview-out", type=Path, help="write the annotated clip to this MP4")

    ev = sub.add_parser("eval", help="replay labelled clips and score blinks, closures, face presence")
    ev.add_argument("--labels", type=Path, action="append", required=True, help="labels CSV (repeatable)")
    ev.add_argument("--clips", type=Path, help="clip directory (default: the fetch-clips cache)")
    ev.add_argument(
        "--clip",
        action="append",
        default=[],
        help="score only this labelled clip (repeatable; default: every labelled clip)",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument(
        "--models",
        choices=("off", "on", "both"),
        default="off",
        help="EAR alone (off), EAR fused with the eye-state model (on), or both side by side",
    )
    ev.add_argument(
        "--degrade",
        default="",
        help="comma-separated frame degradations applied before the agent: gray, ir1, ir2, ir3 "
        "(near-infrared at night, three strengths), 320x180, roll15, 15fps",
    )

    sub.add_parser("check-config", help="validate the configuration and print it")
    sub.add_parser("ack", help="the driver acknowledges the active alert (of the agent running here)")

    ins = sub.add_parser("install-service", help="install (or remove) the systemd service")
    add_install_args(ins)

    fc = sub.add_parser("fetch-clips", help="download the real labelled clips into the cache")
    fc.add_argument("--dir", type=Path, help="target directory (default $SLEEPSAFE_CLIPS_DIR or the cache)")
    fc.add_argument("--force", action="store_true", help="download again even if present")
    return p


def _load(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> EdgeConfig:
    """The config `main` already loaded (for logging), or load it now."""
    loaded: EdgeConfig | None = getattr(args, "loaded_config", None)
    if loaded is not None:
        return loaded
    overrides = parse_overrides(args.overrides)
    if extra:
        for section, values in extra.items():
            overrides.setdefault(section, {}).update(values)
    return load_config(args.config, overrides)


def _print_event_human(e: Event) -> None:
    when = f"{e.start_ms / 1000:7.2f}s"
    if e.type.value == "blink":
        print(f"{when}  frames {e.start_frame:>5}-{e.end_frame:<5} blink            {e.duration_ms} ms")
        return
    raised = (
        f"raised at {e.raised_ms / 1000:.2f}s (frame {e.raised_frame})" if e.raised_ms is not None else ""
    )
    dur = f"lasted {e.duration_ms} ms" if e.duration_ms is not None else ""
    print(
        f"{when}  frames {e.start_frame:>5}-{e.end_frame!s:<5} {e.type.value.upper():<16} "
        f"{e.severity.value:<9} {raised}  {dur}"
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from edge_agent.perception.capture import SourceError, open_capture, parse_source
    from edge_agent.preview import PreviewSink
    from edge_agent.replay import replay_clip, replay_record

    cfg = _load(args)
    if not args.file.is_file():
        return _die(Exit.NOINPUT, f"replay: {args.file}: no such file")
    try:  # fail on an unreadable file before loading the landmark model
        open_capture(parse_source(str(args.file))).release()
    except SourceError as err:
        return _die(Exit.NOINPUT, f"replay: {err}")
    preview = PreviewSink(args.preview, args.preview_out) if (args.preview or args.preview_out) else None

    def emit(e: Event) -> None:
        if args.json:
            print(json.dumps(replay_record(e)), flush=True)
        else:
            _print_event_human(e)

    if not args.json:
        print(f"replaying {args.file} ...")
    try:
        res = replay_clip(cfg, args.file, on_finished=emit, preview=preview)
    except SourceError as err:
        return _die(Exit.NOINPUT, f"replay: {err}")
    if args.json:
        print(json.dumps(res.summary))
    else:
        s = res.summary
        print(
            f"\nsummary: {s['frames']} frames ({s['seconds']} s at {s['clip_fps']} fps), "
            f"{s['frames_with_face']} with a face; {s['blinks']} blinks; PERCLOS {s['perclos']:.1%}; "
            f"alerts {s['alerts'] or 'none'}; open-eye EAR {s['baseline_ear']}"
            f"{'' if s['calibrated'] else ' (prior: not yet calibrated)'}; processed at {s['fps']} fps"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_agent.devtools.clips import clips_dir
    from edge_agent.devtools.evaluate import evaluate, format_comparison, format_table

    cfg = _load(args)
    directory = args.clips or clips_dir()
    if not directory.is_dir():
        return _die(
            Exit.NOINPUT, f"eval: clip directory {directory} not found (run: sleepsafe-edge fetch-clips)"
        )
    names = [n.strip() for n in args.degrade.split(",") if n.strip()]
    modes = ["off", "on"] if args.models == "both" else [args.models]
    reports: dict[str, dict[str, Any]] = {}
    for mode in modes:
        # "off" is EAR alone: no model at all; "on" is the eye-state model, plus the temporal one
        # when models.temporal_enabled is set.
        on = mode == "on"
        models = cfg.models.model_copy(
            update={"mode": "on" if on else "off", "temporal_enabled": on and cfg.models.temporal_enabled}
        )
        run_cfg = cfg.model_copy(update={"models": models})
        try:
            reports[mode] = evaluate(run_cfg, args.labels, directory, degrade=names, only=args.clip)
        except ValueError as err:
            return _die(2, f"eval: {err}")
        if not reports[mode]["clips"]:
            # Nothing replayed, so nothing can be said about the model either: name the cause.
            why = (reports[mode]["problems"] or ["no labelled clip"])[0]
            return _die(Exit.DATAERR, f"eval: nothing scored: {why}")
        if mode == "on" and reports[mode].get("model_versions", {}).get("eye_state") is None:
            return _die(
                Exit.UNAVAILABLE, "eval: --models on, but the eye-state model could not be loaded (see log)"
            )
    if args.json:
        print(
            json.dumps(
                reports[modes[0]]
                if len(modes) == 1
                else {"ear_only": reports["off"], "with_models": reports["on"]}
            )
        )
    else:
        for mode in modes:
            if len(modes) > 1:
                print(f"\n== {'EAR alone' if mode == 'off' else 'EAR + eye-state model'}")
            print(format_table(reports[mode]))
        if len(modes) > 1:
            print("\n" + format_comparison(reports["off"], reports["on"]))
    return 0 if all(r["clips"] for r in reports.values()) else Exit.DATAERR


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.daemon import Agent
    from edge_agent.preview import PreviewSink

    extra = {"source": {"uri": args.source}} if args.source else None
    cfg = _load(args, extra)
    preview = PreviewSink(args.preview, args.preview_out) if (args.preview or args.preview_out) else None
    agent = Agent(cfg, preview=preview)
    try:
        return asyncio.run(agent.run())
    except PermissionError as err:
        return _die(Exit.CONFIG, f"run: {err.filename}: permission denied (state_dir {cfg.state_dir})")


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print the effective config, secrets masked: its output is pasted into tickets."""
    cfg = _load(args)
    print(json.dumps(redacted(cfg.model_dump(mode="json")), indent=2))
    print("config OK", file=sys.stderr)
    return 0


def cmd_fetch_clips(args: argparse.Namespace) -> int:
    from edge_agent.devtools.clips import FetchError, fetch_clips

    try:
        path = fetch_clips(args.dir, force=args.force)
    except FetchError as err:
        return _die(Exit.UNAVAILABLE, f"fetch-clips: {err}")
    print(path)
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    """Tell the running agent (the one with this config's state_dir) that the driver
    acknowledged the active alert: recorded on it as a weak label, nothing is silenced."""
    from edge_agent.control import send, socket_path

    cfg = _load(args)
    try:
        send(cfg.state_dir, "ack")
    except OSError as err:
        return _die(
            Exit.UNAVAILABLE, f"ack: no agent running at {socket_path(cfg.state_dir)} ({err.strerror or err})"
        )
    print("acknowledged")
    return 0


COMMANDS = {
    "run": cmd_run,
    "ack": cmd_ack,
    "replay": cmd_replay,
    "eval": cmd_eval,
    "check-config": cmd_check_config,
    "fetch-clips": cmd_fetch_clips,
    "install-service": cmd_install_service,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Logging before the config is read uses defaults; the config may then refine it.
    configure_logging()
    try:
        if args.command in ("run", "replay", "eval", "check-config", "fetch-clips"):
            cfg = _load(args, {"source": {"uri": args.source}} if getattr(args, "source", None) else None)
            configure_logging(cfg.logging.level, cfg.logging.format)
            args.loaded_config = cfg
        return COMMANDS[args.command](args)
    except ConfigError as err:
        return _die(Exit.CONFIG, f"config error: {err}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
