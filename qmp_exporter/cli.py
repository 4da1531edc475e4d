"""The ``qmp-exporter`` command line (Prometheus-style flags). The only module that exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from qmp_exporter import DEFAULT_PORT, __version__
from qmp_exporter.config import Config, ConfigError, MonitorConfig, load_config
from qmp_exporter.tools.inventory import add_inventory_arguments, run_inventory
from qmp_exporter.tools.shell import add_shell_arguments, run_shell_command

log = logging.getLogger("qmp_exporter")

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class ManpageAction(argparse.Action):
    """``--manpage`` (hidden): print qmp-exporter(1), written from this parser, and exit.
    The package build runs it, so the man page and ``--help`` come from one source."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, help=argparse.SUPPRESS)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from qmp_exporter.manpage import render

        sys.stdout.write(render(parser))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmp-exporter",
        description="Prometheus exporter for QEMU virtual machines, over QMP.",
    )
    parser.add_argument("--version", action="version", version=f"qmp-exporter {__version__}")
    parser.add_argument("--manpage", action=ManpageAction)
    parser.add_argument(
        "--config.file", dest="config_file", metavar="PATH", help="YAML configuration file"
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=f":{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"address to serve /metrics on (default :{DEFAULT_PORT})",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS and basic-auth settings (the exporter-toolkit web config format)",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="allow POST /-/reload to reload the configuration",
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="info")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="also watch a few simulated VMs served inside the process (no QEMU needed); "
        "the default when no --config.file is given",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config", help="validate a configuration file and exit (0 valid, 1 not)"
    )
    check.add_argument("file", metavar="FILE", help="the YAML configuration file to check")
    check.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="also validate this web config (TLS and basic auth)",
    )
    add_inventory_arguments(
        commands.add_parser("inventory", help="ask every VM once and print a row each")
    )
    add_shell_arguments(
        commands.add_parser("shell", help="interactive QMP shell, read-only by default")
    )
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=LOG_LEVELS[level],
        format="%(asctime)s level=%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def check_config(path: str, web_config_path: str | None = None) -> int:
    """Validate the config (and the web config, when given); print every error."""
    status = 0
    try:
        config = load_config(path)
        print(f"{path}: valid ({len(config.monitors)} monitor(s))")
    except ConfigError as err:
        print(err, file=sys.stderr)
        status = 1
    if web_config_path:
        from qmp_exporter.web.webconfig.settings import load_web_config

        try:
            load_web_config(web_config_path)
            print(f"{web_config_path}: valid web config")
        except ConfigError as err:
            print(err, file=sys.stderr)
            status = 1
    return status


async def serve(args: argparse.Namespace, config: Config) -> int:
    from qmp_exporter.app import Exporter, Options  # the server's imports: not for the tools

    options = Options(
        config_path=args.config_file,
        listen_address=args.listen_address,
        web_config_path=args.web_config_file,
        enable_lifecycle=args.enable_lifecycle,
    )
    demo = None
    extra: tuple[MonitorConfig, ...] = ()
    if args.demo:
        from qmp_exporter.sim.demo import start_demo

        demo = await start_demo()
        extra = tuple(MonitorConfig(name=name, address=address) for name, address in demo.monitors)
        log.info("demo: %d simulated VMs", len(extra))
    try:
        exporter = Exporter(config, options, extra_monitors=extra)
    except ConfigError as err:
        log.error("%s", err)
        if demo is not None:
            await demo.close()
        return 1
    try:
        await exporter.run()
    except OSError as err:
        log.error("cannot listen on %s: %s", args.listen_address, err)
        return 1
    finally:
        if demo is not None:
            await demo.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.command == "check-config":
        return check_config(args.file, args.web_config_file)
    if args.command == "inventory":
        return run_inventory(args)
    if args.command == "shell":
        return run_shell_command(args)
    from qmp_exporter.app import parse_listen_address

    try:
        parse_listen_address(args.listen_address)
    except ValueError as err:
        parser.error(f"--web.listen-address: {err}")
    config = Config()
    if args.config_file:
        try:
            config = load_config(args.config_file)
        except ConfigError as err:
            log.error("%s", err)
            return 1
    else:
        # The embedded default: with nothing to watch, show simulated VMs so a newcomer
        # sees live metrics at once. A real deployment always gives --config.file.
        log.warning("no --config.file given: running the built-in demo VMs (--demo)")
        args.demo = True
    try:
        return asyncio.run(serve(args, config))
    except KeyboardInterrupt:
        return 130
