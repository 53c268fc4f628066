"""The ``atalaia`` command: run | check | validate | demo.

Exit codes: 0 all ok; 1 a warn or alert was found (``check``); 2 bad input
or configuration — a model whose reference or window has no rows (``check``:
nothing was compared, so it is not "all ok"), and any unexpected error, so that
1 always means findings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

from detectors.errors import AtalaiaError, SourceError
from detectors.registry import Registry

from .config import Config, config_warnings, load_config, parse_listen
from .durations import parse_time
from .logs import model_context, setup_logging

__all__ = ["main", "entry"]

log = logging.getLogger("atalaia")

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


def _listen(text: str) -> str:
    """``--listen``: checked as ``server.listen`` is."""
    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atalaia", description="Model drift, accuracy-decay and bias monitoring daemon.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon: scheduled evaluations, /metrics, /healthz, /readyz")
    run.add_argument("--config", required=True, help="configuration file (YAML)")
    run.add_argument("--listen", type=_listen,
                     help="HOST:PORT for the HTTP server, [::1]:PORT for IPv6 (overrides server.listen)")

    check = sub.add_parser("check", help="evaluate each model's window once, print the findings, exit")
    check.add_argument("--config", required=True, help="configuration file (YAML)")
    check.add_argument("--model", help="only this model")
    check.add_argument("--at", help="window end as an ISO-8601 time (default: now); replays what was known then")
    check.add_argument("--format", choices=("table", "json"), default="table")

    val = sub.add_parser("validate", help="report every configuration problem at once")
    val.add_argument("--config", required=True, help="configuration file (YAML)")

    demo = sub.add_parser("demo", help="write a demo sink with planted drift, bias and decay, and run the daemon on it")
    demo.add_argument("--dir", default="./atalaia-demo", help="where to write the demo data and state")
    demo.add_argument("--listen", type=_listen, help="HOST:PORT for the HTTP server (default 127.0.0.1:9108)")
    demo.add_argument("--no-run", action="store_true", help="only write the data and print the configuration path")
    return p


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         registry: Registry | None = None) -> int:
    """Run one command; returns its exit code. ``registry`` replaces the installed detector registry."""
    args = _parser().parse_args(argv)
    out = stdout or sys.stdout
    try:
        if args.command != "validate":
            from .cpus import fit_arrow_threads, usable_cpus
            from .evaluate import limit_blas_threads

            limit_blas_threads()
            fit_arrow_threads(usable_cpus())
        if args.command == "validate":
            return _validate(args, out, registry)
        if args.command == "check":
            return _check(args, out, registry)
        if args.command == "run":
            return _run(args, registry)
        if args.command == "demo":
            return _demo(args, out, registry)
    except AtalaiaError as exc:  # a configuration problem, a state dir it cannot use, an address it cannot bind
        print(f"atalaia: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # e.g. `atalaia check ... | head`: the rest of the output goes nowhere, quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # last resort: exit code 1 means "findings", never a crash
        log.debug("atalaia %s failed", args.command, exc_info=exc)
        print(f"atalaia: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    raise AssertionError(args.command)  # pragma: no cover


def _validate(args: argparse.Namespace, out: TextIO, registry: Registry | None) -> int:
    cfg = load_config(args.config, registry=registry)
    print(f"{args.config}: ok ({len(cfg.models)} model{'s' if len(cfg.models) != 1 else ''}: "
          f"{', '.join(m.name for m in cfg.models)})", file=out)
    for warning in config_warnings(cfg):
        print(f"atalaia: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _check(args: argparse.Namespace, out: TextIO, registry: Registry | None) -> int:
    from .evaluate import Evaluator

    cfg = load_config(args.config, registry=registry)
    # quiet but for problems; `log: {level: debug}` shows the tracebacks behind errors too
    setup_logging(fmt=cfg.log.format, level="debug" if cfg.log.level == "debug" else "warning")
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
            with model_context(m.name):
                ev = Evaluator(config=cfg, model=m, registry=registry, reuse_partitions=False).evaluate(at=at)
        except SourceError as exc:
            print(f"atalaia: model {m.name}: {exc}", file=sys.stderr)
            bad_input = True
            continue
        except Exception as exc:  # any other failure is bad input too (exit 2), never "findings" (exit 1)
            log.debug("model %s: evaluation failed", m.name, exc_info=exc)
            print(f"atalaia: model {m.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            bad_input = True
            continue
        # skipped files were logged by the evaluation (at ERROR, naming the model and the file): not repeated here
        for failure in ev.detector_failures:  # its findings are missing: the check is incomplete
            print(f"atalaia: model {m.name}: {failure}", file=sys.stderr)
        if ev.pending_files:  # the daemon reads them on a later run; a check has none: said, not lost silently
            print(f"atalaia: model {m.name}: left out {len(ev.pending_files)} file(s) still being written (no "
                  f"footer yet, modified within in_progress_grace): {', '.join(ev.pending_files[:3])}"
                  f"{', …' if len(ev.pending_files) > 3 else ''}", file=sys.stderr)
        # nothing compared is not "all ok": an empty reference or window is bad input (exit 2), said once each
        # (an empty reference by the evaluation's WARNING, which names the model and the reference)
        empty = ev.reference_rows == 0 or ev.rows == 0
        if ev.rows == 0:
            print(f"atalaia: model {m.name}: the window {_iso(ev.window_start)}..{_iso(ev.window_end)} of "
                  f"{cfg.resolve(m.predictions.path)} has no rows: every finding is insufficient_data",
                  file=sys.stderr)
        # findings that all say insufficient_data (a reference or window with rows, but fewer than the
        # detectors' min_rows) compared nothing either
        unjudged = not empty and bool(ev.findings) and all(f.status == "insufficient_data" for f in ev.findings)
        if unjudged:
            print(f"atalaia: model {m.name}: nothing was compared: every finding is insufficient_data "
                  f"({ev.reference_rows} reference and {ev.rows} window rows; each finding's note says why)",
                  file=sys.stderr)
        bad_input |= bool(ev.errors or ev.detector_failures or empty or unjudged)
        findings += ev.findings
    if args.format == "json":
        for f in findings:
            print(json.dumps(f.to_dict()), file=out)
    else:
        _table(findings, out)
    if bad_input:
        return EXIT_BAD_INPUT
    return EXIT_FINDINGS if any(f.status in ("warn", "alert") for f in findings) else EXIT_OK


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _table(findings: Sequence, out: TextIO) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colours = {"ok": "green", "warn": "yellow", "alert": "bold red", "insufficient_data": "dim"}
    t = Table(title=None, show_lines=False)
    for col in ("model", "detector", "target", "statistic", "value", "threshold", "p-value", "status",
                "n ref", "n cur"):
        t.add_column(col, justify="right" if col in ("value", "threshold", "p-value", "n ref", "n cur") else "left")

    def num(v: float | None) -> str:
        return "—" if v is None else f"{v:.4g}"

    for f in findings:
        # names are the user's (a column "dist[km]"), never rich markup
        t.add_row(escape(f.model), escape(f.detector), escape(f.target + (f" [{f.group}]" if f.group else "")),
                  escape(f.statistic), num(f.value),
                  num(f.threshold), num(f.p_value), f"[{colours[f.status]}]{f.status}[/]", str(f.n_reference),
                  str(f.n_current))
    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own exits 1, which means "findings": main's handler exits 0
            raise BrokenPipeError

    console = _Console(file=out, width=max(120, Console(file=out).width), highlight=False)
    if findings:
        console.print(f"window {findings[0].window_start} .. {findings[0].window_end}")
    console.print(t)
    counts = {s: sum(f.status == s for f in findings) for s in colours}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings")


def _run(args: argparse.Namespace, registry: Registry | None) -> int:
    cfg = load_config(args.config, registry=registry)
    return _serve(cfg, args.listen, registry)


def _serve(cfg: Config, listen: str | None, registry: Registry | None) -> int:
    """Run the daemon until SIGTERM/SIGINT.

    When evaluations abandoned on a hung source are still blocked after the orderly shutdown, the
    process leaves with ``os._exit`` once logs and stdio are flushed: the interpreter's exit would
    otherwise wait for their threads (pyarrow's S3 finalizer does), so the model timeout, not the
    object store, bounds how long a shutdown takes.
    """
    from .scheduler import Daemon

    setup_logging(fmt=cfg.log.format, level=cfg.log.level)
    daemon = Daemon(config=cfg, listen=listen, detectors=registry)
    code = daemon.serve_forever()
    stuck = daemon.stuck_evaluations()
    if stuck:
        log.warning("leaving evaluations still blocked on their sources behind (models: %s)", ", ".join(stuck))
        _flush_and_exit(code)
    return code


def _flush_and_exit(code: int) -> NoReturn:
    """Flush every logging handler and stdio, then end the process at once (no interpreter shutdown)."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(OSError, ValueError):  # a handler on a closed or broken stream
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _demo(args: argparse.Namespace, out: TextIO, registry: Registry | None) -> int:
    from .demo_data import write_demo

    directory = Path(args.dir).resolve()
    now = datetime.now(UTC)
    manifest = write_demo(directory=directory, now=now)
    # a copy beside the data, so that its relative paths work for `check`, `validate` and `run` as printed
    config_path = directory / "atalaia.yaml"
    shutil.copyfile(demo_config_path(), config_path)
    cfg = load_config(config_path, registry=registry)
    # the sink was written anew around `now`: findings and references of an earlier demo are stale
    shutil.rmtree(cfg.state_path, ignore_errors=True)
    listen = args.listen or cfg.server.listen
    print(manifest.describe(), file=out)
    print(f"configuration: {config_path}", file=out)
    if args.no_run:
        return EXIT_OK
    print(f"serving metrics on http://{listen}/metrics — Ctrl-C to stop", file=out, flush=True)
    return _serve(cfg, listen, registry)


def demo_config_path() -> Path:
    """``configs/demo.yaml``: packaged inside ``monitor`` in a wheel, beside the package in a checkout."""
    packaged = Path(__file__).with_name("demo.yaml")
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def entry() -> NoReturn:
    """The ``atalaia`` command: :func:`main`; ``check`` and ``validate`` then leave without the
    interpreter's teardown.

    Their work is done when ``main`` returns (output written, files closed), and the teardown only
    frees what the process loaded: 0.12 s after a check of 1M rows, 0.15-0.3 s after one of 10M, a
    tenth of the whole check.  ``run`` and ``demo`` exit the ordinary way, so an evaluation still
    finishing after the daemon's shutdown is waited for.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if _parser().parse_args(argv).command in ("check", "validate"):
        _flush_and_exit(code)
    raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
