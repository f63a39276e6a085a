"""``ironflow serve``: run the HTTP API over a data directory until SIGINT or SIGTERM.

This module imports no HTTP library at the top, so the CLI can offer ``serve`` without
paying for aiohttp's import on every other command.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ironflow._worker._logs import add_log_format_argument
from ironflow.errors import ConfigError
from ironflow.store._machine import StoreMachine

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_BODY", "DEFAULT_PORT", "add_serve_command", "cmd_serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9123
DEFAULT_MAX_BODY = 10 * 1024 * 1024
_MIN_BODY = 1024


_STORE_HELP = (
    "the store to serve: a postgresql:// (or postgres://) URL of a database migrated "
    "with `ironflow store migrate`, or an LMDB data directory (default $IRONFLOW_STORE, "
    "else $IRONFLOW_DATA_DIR, else ./.ironflow)"
)


def add_serve_command(sub: Any) -> None:
    """Add ``serve`` to the CLI's subcommands."""
    serve = sub.add_parser(
        "serve",
        help="run the HTTP API and the web dashboard",
        description="Serve the JSON API under /api/v1 and the web dashboard at / over a "
        "store (--store: a PostgreSQL database, which several servers on different hosts "
        "may share, or an LMDB data directory). Workers and CLI commands with IRONFLOW_URL "
        "set go through it. "
        "Without --dev every API request needs the token (--token or IRONFLOW_TOKEN) as "
        "'Authorization: Bearer', and the dashboard asks for it on a login page. "
        "SIGINT or SIGTERM stops it cleanly.",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: no token needed (keep it on 127.0.0.1)",
    )
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}, this machine only)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
    )
    serve.add_argument("--store", metavar="URL_OR_DIR", help=_STORE_HELP)
    serve.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (default: $IRONFLOW_DATA_DIR, else ./.ironflow)",
    )
    serve.add_argument(
        "--token",
        metavar="TOKEN",
        help="the token clients must send (default $IRONFLOW_TOKEN); required without --dev",
    )
    serve.add_argument(
        "--max-body",
        type=int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help=f"largest request body accepted; larger gets 413 (default {DEFAULT_MAX_BODY})",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="also serve /metrics on this port, without the token, for a Prometheus "
        "scraper (the main port serves /metrics behind the token); needs "
        "pip install 'ironflow[prometheus]'",
    )
    serve.add_argument(
        "--metrics-host",
        default=DEFAULT_HOST,
        metavar="HOST",
        help=f"address of the --metrics-port listener (default {DEFAULT_HOST})",
    )
    add_log_format_argument(serve)
    serve.add_argument(
        "--open",
        action="store_true",
        help="open the dashboard in a web browser once the server listens",
    )
    serve.set_defaults(func=cmd_serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def cmd_serve(args: argparse.Namespace) -> int:
    """Validate the flags, open the store, serve until a signal; 0 on a clean stop."""
    from ironflow.store._open import resolve_location

    token = args.token or os.environ.get("IRONFLOW_TOKEN") or None
    if not args.dev and not token:
        raise ConfigError(
            "ironflow serve needs a token to check requests against: pass --token TOKEN or "
            "set IRONFLOW_TOKEN (clients send the same IRONFLOW_TOKEN), or run with --dev "
            "for a local server that needs none"
        )
    if token and not all(" " < c <= "~" for c in token):
        raise ConfigError(
            "the token may hold only visible ASCII characters (no spaces or line breaks), "
            "since clients send it in an HTTP header"
        )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535, not {args.port}")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port must be from 0 to 65535, not {args.metrics_port}")
    if args.max_body < _MIN_BODY:
        raise ConfigError(f"--max-body must be at least {_MIN_BODY} bytes, not {args.max_body}")
    if args.dev and not _is_loopback(args.host):
        print(
            f"warning: --dev on {args.host} lets anyone who can reach this address read and "
            "write every run without a token; use --token, or bind 127.0.0.1",
            file=sys.stderr,
            flush=True,
        )
    where = resolve_location(args.store, args.data_dir)
    data_dir = where.resolve() if isinstance(where, Path) else where
    return asyncio.run(
        _serve(
            args.host,
            args.port,
            data_dir,
            token,
            args.max_body,
            open_browser=args.open,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            log_format=args.log_format,
        )
    )


def _open_browser(url: str) -> None:
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except Exception:  # a broken browser setting must not stop the server
        opened = False
    if not opened:
        print(f"could not open a browser here: open {url} yourself", file=sys.stderr, flush=True)


async def _serve(
    host: str,
    port: int,
    data_dir: Any,
    token: str | None,
    max_body: int,
    *,
    open_browser: bool = False,
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_HOST,
    log_format: str = "text",
) -> int:
    from ironflow._worker._logs import configure_logging
    from ironflow.server._app import make_app, start_site, stop_site
    from ironflow.server._metrics import metrics_registry
    from ironflow.store._open import open_location
    from ironflow.store._pgurl import safe_url

    configure_logging(log_format=log_format)
    from ironflow._worker._observe import start_tracing

    provider = start_tracing("ironflow-server")
    # A server waits for PostgreSQL however long it is down (it says so once).
    store = open_location(data_dir)
    assert isinstance(store, StoreMachine)
    measured = metrics_registry(store)
    registry, store_metrics = measured if measured is not None else (None, None)
    if metrics_port is not None and registry is None:
        store.close()
        raise ConfigError(
            "--metrics-port needs Prometheus metrics: pip install 'ironflow[prometheus]'"
        )
    metrics_server = None
    try:
        app, api = make_app(
            store, token=token, max_body=max_body, metrics=registry, tracer_provider=provider
        )
        try:
            runner, bound = await start_site(app, host, port)
        except OSError as exc:
            api.close()
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
                "or --host"
            ) from None
        if metrics_port is not None:
            from ironflow.contrib.prometheus import serve_metrics

            assert registry is not None  # checked before the store was served
            try:
                metrics_server = serve_metrics(registry, metrics_host, metrics_port)
            except ConfigError:
                await stop_site(runner, api)
                raise
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"ironflow server listening on {_url(host, bound)}", flush=True)
        print(f"dashboard at {_url(host, bound)}/", flush=True)
        shown = safe_url(data_dir) if isinstance(data_dir, str) else data_dir
        print(f"data in {shown}", flush=True)
        if metrics_server is not None:
            print(
                f"metrics at {_url(metrics_host, metrics_server.port)}/metrics (no token)",
                flush=True,
            )
        elif registry is not None:
            print(f"metrics at {_url(host, bound)}/metrics", flush=True)
        if token:
            print("requests need 'Authorization: Bearer <token>'", flush=True)
            print("the dashboard asks for the same token on its login page", flush=True)
        else:
            print("dev mode: requests need no token", flush=True)
        if open_browser:
            # The browser may take a while to start; the server is already answering.
            loop.run_in_executor(None, _open_browser, f"{_url(host, bound)}/")
        await stop.wait()
        print("stopping: finishing requests in flight", flush=True)
        await stop_site(runner, api)
    finally:
        if metrics_server is not None:
            metrics_server.close()
        if store_metrics is not None:
            store_metrics.close()
        if provider is not None:
            provider.shutdown()  # the last spans are sent before the process exits
        store.close()
    print("server stopped", flush=True)
    return 0
