"""Alembic, driven from code: each service keeps its migrations in
`<service>_service/migrations`, and this module runs them for any URL."""

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, engine_from_config, pool
from sqlalchemy.engine import Engine


def alembic_config(service_package: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{service_package}:migrations")
    # ConfigParser treats % as interpolation; URLs may contain %-escapes.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(service_package: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service_package, database_url), revision)


def downgrade(service_package: str, database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(service_package, database_url), revision)


def head_revision(service_package: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(service_package, "sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py."""
    from alembic import context

    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic config has no sqlalchemy.url")
    # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
    render_as_batch = url.startswith("sqlite")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=render_as_batch)
        with context.begin_transaction():
            context.run_migrations()
        return
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
        )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=render_as_batch)
        with context.begin_transaction():
            context.run_migrations()
