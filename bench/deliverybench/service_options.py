"""The command-line options of every benchmark that runs voicehooks on a fresh database of a
PostgreSQL server: where the server is, which interpreter runs the service, what is kept."""

from __future__ import annotations

import argparse
import os
import sys


def add_service_options(parser: argparse.ArgumentParser, *, log_level_of: str) -> None:
    """`--log-level` (of the processes named by `log_level_of`), `--admin-dsn`, `--python`,
    `--keep-db` and `--no-save`."""
    parser.add_argument(
        "--log-level", default="INFO", help=f"VOICEHOOKS_LOG_LEVEL of {log_level_of}"
    )
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a Postgres connection allowed to CREATE/DROP DATABASE",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter with voicehooks")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the databases")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
