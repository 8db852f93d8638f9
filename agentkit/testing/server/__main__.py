"""Run a `ScriptedModelServer` from the command line, to try an agent or a task file offline.

    python -m agentkit.testing.server --dialect deepseek --port 8765 --script replies.yaml
    python -m agentkit.testing.server --default-text "The answer is 42."

The first line on stdout is the base URL (what a model's `base_url` should be in a task file);
each request is logged on stderr; the server runs until SIGINT (Ctrl-C) or SIGTERM, then exits
with 0. Exit code 2: bad arguments or script file, port in use.

A script file (JSON or YAML, also read by `ScriptedModelServer.load_script`) is a list of
replies, or a mapping that can key them by model name::

    replies:                  # for any model not listed under `models`, in order
      - content: Hello!
      - reasoning: I need the weather first.
        tool_calls: [{name: get_weather, arguments: {city: Oslo}}]
      - {error: 429, message: slow down, retry_after: 2}     # an HTTP error
    default: {content: Nothing more to say.}   # once a queue is empty (else HTTP 500)
    models:
      planner-model: [{content: "..."}]       # requests whose "model" is planner-model
      worker-model: {default: {content: done}}

A reply may also set `usage` (``{input_tokens: 10, output_tokens: 5, reasoning_tokens: 3}``),
`finish_reason` and `delay` (seconds); a tool call its `id`. Mistakes are reported as
``FILE:LINE:COL: message (field ...)``, all at once.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from agentkit.errors import TaskFileError
from agentkit.testing._dialects import DIALECTS
from agentkit.testing._script import RecordedRequest, reply
from agentkit.testing.server import ScriptedModelServer

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agentkit.testing.server", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A model server on this machine that answers from a script, in one "
                    "provider's exact wire format. Prints its base URL, serves until Ctrl-C.",
        epilog=__doc__[__doc__.index("A script file"):] if __doc__ else None)
    parser.add_argument("--dialect", default="generic", choices=sorted(DIALECTS), metavar="NAME",
                        help="the provider's wire format: %(choices)s (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765,
                        help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--script", metavar="FILE",
                        help="replies to give, as JSON or YAML: a list of {content, reasoning, "
                             "tool_calls}, or {replies, default, models: {NAME: [...]}}")
    parser.add_argument("--default-text", metavar="TEXT",
                        help="answer with this text once the script runs out (else HTTP 500)")
    parser.add_argument("--no-strict", action="store_true",
                        help="do not enforce the provider's rules on replayed reasoning")
    return parser


def _log(rec: RecordedRequest) -> None:
    model = rec.body.get("model") if isinstance(rec.body, dict) else None
    print(f"{rec.method} {rec.path} model={model!s} -> {rec.status}", file=sys.stderr, flush=True)


async def serve(args: argparse.Namespace) -> int:
    """Start, print the base URL, serve until a stop signal; the exit code."""
    srv = ScriptedModelServer(args.dialect, host=args.host, port=args.port,
                              strict=not args.no_strict,
                              default=reply(args.default_text) if args.default_text else None)
    if args.script:
        srv.load_script(args.script)
    srv._observers.append(_log)
    try:
        await srv.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; choose "
              "another --port (0 picks a free one)", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # set explicitly: a parent may have ignored them
        loop.add_signal_handler(sig, stop.set)
    print(srv.base_url, flush=True)
    print(f"scripted model server ({args.dialect}) at {srv.base_url}: {srv.pending} replies "
          "queued; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await srv.stop()
    print(f"stopped after {len(srv.requests)} requests", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except TaskFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
