"""Alembic environment: the sink passes its open connection (``config.attributes["connection"]``);
the ``alembic`` command line uses ``sqlalchemy.url`` from alembic.ini or ``SLEEPSAFE_SINK_DB``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from cloud_sink.schema import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite needs table copies for ALTERs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


conn = config.attributes.get("connection")
if conn is not None:
    _run(conn)
else:
    url = os.environ.get("SLEEPSAFE_SINK_DB") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: set SLEEPSAFE_SINK_DB to the sink's database URL")
    engine = create_engine(url)
    with engine.begin() as c:
        _run(c)
