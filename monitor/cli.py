"""The ``atalaia`` command: run | check | validate | demo.

Exit codes: 0 all ok; 1 a warn or alert was found (``check``); 2 bad input
or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from detectors.errors import ConfigError, SourceError

from .config import Config, load_config
from .durations import parse_time
from .logs import setup_logging

__all__ = ["main"]

log = logging.getLogger("atalaia")

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atalaia", description="Model drift, accuracy-decay and bias monitoring daemon.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon: scheduled evaluations, /metrics, /healthz, /readyz")
    run.add_argument("--config", required=True, help="configuration file (YAML)")
    run.add_argument("--listen", help="HOST:PORT for the HTTP server (overrides server.listen)")

    check = sub.add_parser("check", help="evaluate each model's window once, print the findings, exit")
    check.add_argument("--config", required=True, help="configuration file (YAML)")
    check.add_argument("--model", help="only this model")
    check.add_argument("--at", help="window end as an ISO-8601 time (default: now); replays what was known then")
    check.add_argument("--format", choices=("table", "json"), default="table")

    val = sub.add_parser("validate", help="report every configuration problem at once")
    val.add_argument("--config", required=True, help="configuration file (YAML)")

    demo = sub.add_parser("demo", help="write a demo sink with planted drift, bias and decay, and run the daemon on it")
    demo.add_argument("--dir", default="./atalaia-demo", help="where to write the demo data and state")
    demo.add_argument("--listen", help="HOST:PORT for the HTTP server (default 127.0.0.1:9108)")
    demo.add_argument("--no-run", action="store_true", help="only write the data and print the configuration path")
    return p


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    out = stdout or sys.stdout
    if args.command != "validate":
        from .evaluate import limit_blas_threads

        limit_blas_threads()
    try:
        if args.command == "validate":
            return _validate(args, out)
        if args.command == "check":
            return _check(args, out)
        if args.command == "run":
            return _run(args)
        if args.command == "demo":
            return _demo(args, out)
    except ConfigError as exc:
        print(f"atalaia: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # e.g. `atalaia check ... | head`
        sys.stderr.close()
        return EXIT_OK
    raise AssertionError(args.command)  # pragma: no cover


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    cfg = load_config(args.config)
    print(f"{args.config}: ok ({len(cfg.models)} model{'s' if len(cfg.models) != 1 else ''}: "
          f"{', '.join(m.name for m in cfg.models)})", file=out)
    return EXIT_OK


def _check(args: argparse.Namespace, out: TextIO) -> int:
    from .evaluate import Evaluator

    cfg = load_config(args.config)
    setup_logging(fmt=cfg.log.format, level="warning")
    try:
        at = parse_time(args.at) if args.at is not None else datetime.now(UTC)
    except ValueError as exc:
        print(f"atalaia: --at {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        models = [cfg.model(args.model)] if args.model else cfg.models
    except KeyError as exc:
        print(f"atalaia: --model {exc.args[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    findings, bad_input = [], False
    for m in models:
        try:
            # one run: no partition profiles to keep for a next one
            ev = Evaluator(config=cfg, model=m, reuse_partitions=False).evaluate(at=at)
        except SourceError as exc:
            print(f"atalaia: model {m.name}: {exc}", file=sys.stderr)
            bad_input = True
            continue
        for err in ev.errors:
            print(f"atalaia: model {m.name}: skipped {err}", file=sys.stderr)
        bad_input |= bool(ev.errors)
        findings += ev.findings
    if args.format == "json":
        for f in findings:
            print(json.dumps(f.to_dict()), file=out)
    else:
        _table(findings, out)
    if bad_input:
        return EXIT_BAD_INPUT
    return EXIT_FINDINGS if any(f.status in ("warn", "alert") for f in findings) else EXIT_OK


def _table(findings: Sequence, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"ok": "green", "warn": "yellow", "alert": "bold red", "insufficient_data": "dim"}
    t = Table(title=None, show_lines=False)
    for col in ("model", "detector", "target", "statistic", "value", "threshold", "p-value", "status",
                "n ref", "n cur"):
        t.add_column(col, justify="right" if col in ("value", "threshold", "p-value", "n ref", "n cur") else "left")

    def num(v: float | None) -> str:
        return "—" if v is None else f"{v:.4g}"

    for f in findings:
        t.add_row(f.model, f.detector, f.target + (f" [{f.group}]" if f.group else ""), f.statistic, num(f.value),
                  num(f.threshold), num(f.p_value), f"[{colours[f.status]}]{f.status}[/]", str(f.n_reference),
                  str(f.n_current))
    console = Console(file=out, width=max(120, Console(file=out).width), highlight=False)
    if findings:
        console.print(f"window {findings[0].window_start} .. {findings[0].window_end}")
    console.print(t)
    counts = {s: sum(f.status == s for f in findings) for s in colours}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings")


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    return _serve(cfg, args.listen)


def _serve(cfg: Config, listen: str | None) -> int:
    from .scheduler import Daemon

    setup_logging(fmt=cfg.log.format, level=cfg.log.level)
    daemon = Daemon(config=cfg, listen=listen)
    return daemon.serve_forever()


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo_data import write_demo

    directory = Path(args.dir).resolve()
    now = datetime.now(UTC)
    manifest = write_demo(directory=directory, now=now)
    config_path = demo_config_path()
    cfg = load_config(config_path, base_dir=directory)
    # the sink was written anew around `now`: findings and references of an earlier demo are stale
    shutil.rmtree(cfg.state_path, ignore_errors=True)
    listen = args.listen or cfg.server.listen
    print(manifest.describe(), file=out)
    print(f"configuration: {config_path} (paths relative to {directory})", file=out)
    if args.no_run:
        return EXIT_OK
    print(f"serving metrics on http://{listen}/metrics — Ctrl-C to stop", file=out, flush=True)
    return _serve(cfg, listen)


def demo_config_path() -> Path:
    """``configs/demo.yaml``: packaged inside ``monitor`` in a wheel, beside the package in a checkout."""
    packaged = Path(__file__).with_name("demo.yaml")
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
