"""The ``cartstream`` command: local stack, set-up, stores and services."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import importlib.util
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from aiokafka.errors import KafkaConnectionError

from cartstream.config import load_settings, state_dir_from
from cartstream.errors import CartstreamError
from cartstream.log import configure_logging

EXTRA_COMMAND_MODULES = ("consumer.replay", "consumer.redrive", "consumer.dead_letters")


def _stack(args: argparse.Namespace) -> int:
    from cartstream.stack import local

    state_dir = state_dir_from(os.environ)
    if args.action == "up":
        status = local.stack_up(state_dir)
    elif args.action == "down":
        status = local.stack_down(state_dir)
    else:
        status = local.stack_status(state_dir)
    for line in status:
        print(line)
    return 0


async def _with_connection(
    work: Callable[[asyncpg.Connection], Awaitable[int]],
) -> int:
    from projections.migrate import migrate

    settings = load_settings()
    connection = await asyncpg.connect(settings.database_url)
    try:
        await migrate(connection)
        return await work(connection)
    finally:
        await connection.close()


def _store(args: argparse.Namespace) -> int:
    from projections import stores

    async def add(connection: asyncpg.Connection) -> int:
        token = await stores.create_store(
            connection,
            args.store_id,
            args.platform,
            name=args.name,
            currency=args.currency,
        )
        secret_id, secret = await stores.add_secret(
            connection, args.store_id, args.platform, args.secret
        )
        print(f"store {args.store_id} created for {args.platform}")
        print(f"api token (shown once): {token}")
        print(f"webhook secret {secret_id}: {secret}")
        return 0

    async def add_secret(connection: asyncpg.Connection) -> int:
        secret_id, secret = await stores.add_secret(
            connection, args.store_id, args.platform, args.secret
        )
        print(f"webhook secret {secret_id}: {secret}")
        return 0

    async def retire_secret(connection: asyncpg.Connection) -> int:
        await stores.retire_secret(connection, args.store_id, args.secret_id)
        print(f"secret {args.secret_id} of store {args.store_id} retired")
        return 0

    async def list_all(connection: asyncpg.Connection) -> int:
        for row in await stores.list_stores(connection):
            print(f"{row['store_id']}\t{row['platform']}\t{row['name']}")
            for secret in await stores.list_secrets(connection, row["store_id"]):
                state = "retired" if secret.retired_at else "active"
                print(f"  secret {secret.secret_id}\t{secret.platform}\t{state}")
        return 0

    async def rotate_token(connection: asyncpg.Connection) -> int:
        token = await stores.rotate_token(connection, args.store_id)
        print(f"api token (shown once): {token}")
        return 0

    actions: dict[str, Callable[[asyncpg.Connection], Awaitable[int]]] = {
        "add": add,
        "add-secret": add_secret,
        "retire-secret": retire_secret,
        "list": list_all,
        "rotate-token": rotate_token,
    }
    return asyncio.run(_with_connection(actions[args.action]))


def _services(args: argparse.Namespace) -> int:
    from cartstream.runner import run_services

    settings = load_settings()
    if args.command == "serve":
        asyncio.run(run_services(settings, consume=False))
    elif args.command == "consume":
        asyncio.run(run_services(settings, serve=False))
    else:
        asyncio.run(run_services(settings))
    return 0


def _init(args: argparse.Namespace) -> int:
    from cartstream.runner import prepare

    asyncio.run(prepare(load_settings()))
    print("database migrated and topics created")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cartstream.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cartstream",
        description="Turn store webhooks into customer profiles and segment changes.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser(
        "stack", help="start, stop or show the local Kafka and PostgreSQL"
    )
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.set_defaults(handler=_stack)

    init = commands.add_parser("init", help="migrate the database and create topics")
    init.set_defaults(handler=_init)

    store = commands.add_parser("store", help="manage stores, secrets and tokens")
    store_actions = store.add_subparsers(dest="action", required=True)
    add = store_actions.add_parser("add", help="create a store with a first secret")
    add.add_argument("store_id")
    add.add_argument("--platform", required=True)
    add.add_argument("--name")
    add.add_argument(
        "--currency",
        help="the shop's currency, such as USD, kept with the store for reference",
    )
    add.add_argument("--secret", help="the webhook secret; generated when omitted")
    add_secret = store_actions.add_parser(
        "add-secret", help="add another active webhook secret (for rotation)"
    )
    add_secret.add_argument("store_id")
    add_secret.add_argument("--platform", required=True)
    add_secret.add_argument("--secret", help="the secret; generated when omitted")
    retire = store_actions.add_parser("retire-secret", help="retire a webhook secret")
    retire.add_argument("store_id")
    retire.add_argument("secret_id", type=int)
    store_actions.add_parser("list", help="list stores and their secrets")
    rotate = store_actions.add_parser("rotate-token", help="replace the API token")
    rotate.add_argument("store_id")
    store.set_defaults(handler=_store)

    for name, text in [
        ("serve", "run the webhook receiver and the API"),
        ("consume", "run the projection consumer and the outbox relay"),
        ("run", "run the receiver, the API, the consumer and the relay"),
    ]:
        service = commands.add_parser(name, help=text)
        service.set_defaults(handler=_services)

    # Command groups owned by other packages add their own parsers.
    for module_name in EXTRA_COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).add_parser(commands)

    demo = commands.add_parser(
        "demo",
        help="start everything, send the sample Shopify webhooks and print the result",
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    try:
        settings = load_settings(require_servers=False)
        configure_logging(settings.log_format, settings.log_level)
        result: int = args.handler(args)
    except CartstreamError as exc:
        print(f"cartstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (OSError, asyncpg.PostgresConnectionError, KafkaConnectionError) as exc:
        print(f"cartstream: {_connection_hint(exc)}", file=sys.stderr)
        return 1
    return result


def _connection_hint(exc: BaseException) -> str:
    """Describe a failed connection or bind with what to check next."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen: {exc.strerror}. Another process uses the port; set "
            "CARTSTREAM_HTTP_PORT to a free one"
        )
    return (
        f"cannot connect to PostgreSQL or Kafka ({type(exc).__name__}: {exc}). "
        "Start the local stack with `cartstream stack up`, or check "
        "CARTSTREAM_DATABASE_URL and CARTSTREAM_KAFKA_BOOTSTRAP"
    )


if __name__ == "__main__":
    sys.exit(main())
