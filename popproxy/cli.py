"""Command line: ``popproxy run --config FILE``, ``popproxy check --config FILE``, ``--version``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from popproxy import __version__
from popproxy.policy.config import Config, ConfigError, load_config
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.server import ProxyServer
from popproxy.proxy.tls import fingerprint

log = logging.getLogger("popproxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="popproxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"popproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "run the proxy"), ("check", "validate the config and exit")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", "-c", type=Path, required=True, help="YAML config file")
        cmd.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser


async def serve(config: Config, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then shut down gracefully."""
    demo: DemoUpstream | None = None
    if config.demo_upstream.enabled:
        demo = DemoUpstream()
        await demo.start(config.upstream.host, config.upstream.port)
        log.warning(
            "demo upstream on %s:%d (user demo, password demo): not for production",
            config.upstream.host,
            demo.port,
        )
    server = ProxyServer(config)
    if server.server_tls is not None:
        for pair in server.server_tls.pairs:
            print(f"TLS certificate {pair.cert} SHA-256 {fingerprint(pair.cert)}", flush=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, server.reload_tls)
    await server.start()
    print(
        "popproxy ready: "
        + ", ".join(
            f"{lst.name}={lst.host}:{server.ports[lst.name]} ({lst.mode})"
            for lst in config.listeners
        ),
        flush=True,
    )
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    if demo is not None:
        await demo.stop()


async def _main_async(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"popproxy: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.config}: OK")
        return 0
    try:
        asyncio.run(_main_async(config))
    except OSError as exc:
        print(f"popproxy: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
