"""Alembic environment: runs on the connection handed in by pipeline.database.upgrade()."""
from __future__ import annotations

from alembic import context

from pipeline.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # plain `alembic` command line: build an engine from the URL
    from sqlalchemy import create_engine

    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
