"""``ironflow mcp``: serve the store's runs, events and memory to MCP clients.

Over stdio by default (what a desktop assistant's config starts); ``--http`` serves
streamable HTTP on 127.0.0.1, where every request needs ``Authorization: Bearer
<token>`` (``--token`` or ``IRONFLOW_TOKEN``) unless ``--dev``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import socket
from typing import Any

__all__ = ["add_mcp_command", "bearer_guard"]


def bearer_guard(app: Any, token: str) -> Any:
    """An ASGI app that answers 401 to any HTTP request without the bearer ``token``."""
    expected = token.encode("utf-8", "surrogatepass")

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), expected):
                body = json.dumps(
                    {
                        "error": {
                            "code": "unauthorized",
                            "message": "this MCP server needs a token: send 'Authorization: "
                            "Bearer <token>' (the --token or IRONFLOW_TOKEN it was started with)",
                        }
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def cmd_mcp(args: argparse.Namespace) -> int:
    from ironflow._cli._common import Usage, opened
    from ironflow.server._mcp import build_server

    token = args.token or os.environ.get("IRONFLOW_TOKEN") or None
    if args.http and not token and not args.dev:
        raise Usage(
            "ironflow mcp --http needs a token that clients must send: pass --token or set "
            "IRONFLOW_TOKEN, or pass --dev to serve loopback without one"
        )
    if not args.http and (args.port is not None or args.dev):
        raise Usage("--port and --dev go with --http")
    with opened(args, create=False) as store:
        server = build_server(store, allow_writes=args.allow_writes)
        if not args.http:
            server.run("stdio")
            return 0
        import anyio
        import uvicorn

        app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
        if token and not args.dev:
            app = bearer_guard(app, token)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", args.port or 0))
        except OSError as exc:
            raise Usage(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
        # Listening before the line is printed: a client that reads it can connect at once.
        sock.listen(128)
        port = sock.getsockname()[1]
        writes = "with write tools" if args.allow_writes else "read-only"
        print(f"ironflow mcp listening on http://127.0.0.1:{port}/mcp ({writes})", flush=True)
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        anyio.run(uvicorn.Server(config).serve, [sock])
    return 0


def add_mcp_command(sub: Any) -> None:
    from ironflow._cli._common import add_data_dir

    mcp = sub.add_parser(
        "mcp",
        help="serve runs, events and memory to MCP clients (assistants)",
        description="A Model Context Protocol server over this store (pip install "
        "'ironflow[mcp]'). Read-only tools unless --allow-writes. Over stdio by default, as "
        "a desktop assistant starts it; --http serves streamable HTTP on 127.0.0.1 at /mcp.",
    )
    mcp.add_argument("--http", action="store_true", help="serve streamable HTTP, not stdio")
    mcp.add_argument("--port", type=int, metavar="P", help="with --http: the port (default: free)")
    mcp.add_argument(
        "--token",
        metavar="TOKEN",
        help="with --http: the bearer token clients must send (default: $IRONFLOW_TOKEN)",
    )
    mcp.add_argument(
        "--dev", action="store_true", help="with --http: no token (loopback only, for development)"
    )
    mcp.add_argument(
        "--allow-writes",
        action="store_true",
        help="add the tools that change things: emit, cancel, pause, resume, approve or "
        "reject, re-run from a step, rebuild a projection",
    )
    add_data_dir(mcp)
    mcp.set_defaults(func=cmd_mcp)
