"""The one read path for SQL that people send: `skyledger sql` now, the HTTP service later.

Every such statement runs

- as a login that is a member of ``skyledger_reader`` only (never the owner or a
  superuser): the embedded server's ``skyledger_query``, created by skyledger, or the
  login ``SKYLEDGER_QUERY_URL`` names on an external server. A login with more rights
  than a reader is refused unless ``SKYLEDGER_ALLOW_OWNER_QUERIES`` is set;
- in a read-only transaction, with ``statement_timeout``,
  ``idle_in_transaction_session_timeout`` and ``temp_file_limit``, on a connection of its
  own that is closed afterwards (so a ``SET`` inside the statement dies with it);
- alone: the text is sent with the extended query protocol, whose Parse message holds
  one statement, so the *server* refuses text with two (no parsing here);
- with rows fetched a chunk at a time up to a row cap, so memory stays bounded.

What a reader may do is decided by PostgreSQL's privileges (migrations 0007 and 0011),
not by inspecting the text. This module imports psycopg and nothing heavy: the CLI's
``sql`` command starts fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from .errors import DatabaseError, QueryError, ReadOnlyViolation, SchemaVersionError
from .settings import Settings

__all__ = [
    "READER_ROLE",
    "QUERY_ROLE",
    "Limits",
    "QueryResult",
    "Login",
    "query_login",
    "connect_reader",
    "run_statement",
    "Stream",
    "stream_statement",
    "run_reader_query",
    "ensure_query_role",
    "excess_privileges",
    "code_head_revision",
]

#: The group role of catalogue readers (migration 0007).
READER_ROLE = "skyledger_reader"
#: The login the embedded server's people's queries run as; skyledger creates it.
QUERY_ROLE = "skyledger_query"


@dataclass(frozen=True)
class Limits:
    """What one statement may use. The timeouts are sent with every connection (they
    also bind a login created by an operator); ``temp_file_limit`` can only be set by a
    superuser, so it is a setting of the login itself (``ensure_query_role``)."""

    statement_timeout_s: float = 60.0
    idle_in_transaction_timeout_s: float = 10.0
    temp_file_limit: str = "1GB"
    max_rows: int = 10_000
    #: Longer text is refused before it is sent (the server would parse up to 1 GB).
    max_statement_chars: int = 100_000
    #: Concurrent sessions of the embedded query login.
    connection_limit: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(statement_timeout_s=settings.query_timeout_s, max_rows=settings.query_max_rows)

    def session_options(self) -> str:
        """libpq ``options``: parameters set at connection start, before any statement."""
        return (
            f"-c statement_timeout={int(self.statement_timeout_s * 1000)} "
            f"-c idle_in_transaction_session_timeout={int(self.idle_in_transaction_timeout_s * 1000)} "
            "-c default_transaction_read_only=on"
        )


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False


@dataclass(frozen=True)
class Login:
    """Where people's queries connect, and how to name it in messages (no password)."""

    conninfo: str
    display: str
    embedded: bool
    allow_owner: bool = False


def _libpq_url(url: str, setting: str) -> str:
    """A libpq URL from a SQLAlchemy-style one (``postgresql+psycopg://``)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql" + url[len(scheme):]
    raise DatabaseError(
        f"{setting} uses driver {scheme or url!r}; skyledger needs PostgreSQL through psycopg 3, "
        "e.g. postgresql://user:password@host:5432/dbname"
    )


def _display(url: str) -> str:
    """The URL as the other commands print it: psycopg driver, password hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    return urlunsplit(("postgresql+psycopg", netloc, parts.path, parts.query, parts.fragment))


def query_login(settings: Settings, *, start: bool = False) -> Login:
    """The login people's queries use; starts the embedded server when that is the database
    and it does not run (``start``: through the wheel even when ``postmaster.pid`` says it runs)."""
    if settings.query_url:
        url = _libpq_url(settings.query_url, "SKYLEDGER_QUERY_URL")
        return Login(url, _display(url), embedded=False, allow_owner=settings.allow_owner_queries)
    if settings.database_url:
        # No reader login named: the owner's URL, which the privilege check will refuse
        # unless the operator explicitly allows it.
        url = _libpq_url(settings.database_url, "SKYLEDGER_DATABASE_URL")
        return Login(url, _display(url), embedded=False, allow_owner=settings.allow_owner_queries)
    from . import embedded

    # A running server is found from its postmaster.pid alone: starting (or checking) one
    # through the wheel imports more and takes a machine-wide lock other servers' starts hold.
    server = None if start else embedded.running(settings.embedded_data_dir)
    server = server or embedded.start(settings.embedded_data_dir)
    conninfo = psycopg.conninfo.make_conninfo(server.conninfo(), user=QUERY_ROLE)
    return Login(conninfo, f"embedded PostgreSQL ({server.socket_dir}) as {QUERY_ROLE}", embedded=True)


def ensure_query_role(admin_conninfo: str, limits: Limits = Limits()) -> None:
    """Create the query login if it is missing and (re)apply its limits; needs a superuser.

    Roles are server-wide: one login serves every skyledger database on the server. It
    logs in without a password, which only the embedded server's Unix socket (``trust``
    for local connections, in a directory only the data's owner can enter) accepts.
    """
    role = sql.Identifier(QUERY_ROLE)
    wanted = {
        "statement_timeout": f"{int(limits.statement_timeout_s * 1000)}",
        "idle_in_transaction_session_timeout": f"{int(limits.idle_in_transaction_timeout_s * 1000)}",
        "temp_file_limit": limits.temp_file_limit,
        "default_transaction_read_only": "on",
    }
    with psycopg.connect(admin_conninfo) as conn:
        # Concurrent first commands (three `skyledger init` at once) would otherwise update
        # the role's catalog row together ("tuple concurrently updated").
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ROLE_LOCK_KEY,))
        row = conn.execute("SELECT rolconfig FROM pg_roles WHERE rolname = %s", (QUERY_ROLE,)).fetchone()
        if row is None:
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    "INHERIT CONNECTION LIMIT {} IN ROLE {}"
                ).format(role, sql.Literal(limits.connection_limit), sql.Identifier(READER_ROLE))
            )
            conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    role, sql.Literal("skyledger: the login of people's queries (skyledger sql), a catalogue reader only")
                )
            )
        current = dict(item.split("=", 1) for item in (row[0] if row and row[0] else []))
        for name, value in wanted.items():
            if current.get(name) != value:
                conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(role, sql.Identifier(name), sql.Literal(value)))


#: Serialises ensure_query_role across processes ("skyledger.query_role" as a key).
_ROLE_LOCK_KEY = 0x736B795F71756572


# What makes a login more than a reader. Functions: the ones migration 0011 takes from
# PUBLIC, plus those PUBLIC never had that reach the server's files and programs.
_EXCESS_PRIVILEGES = """
SELECT reason FROM (
    SELECT 1 AS k, 'is a superuser' AS reason FROM pg_roles WHERE rolname = current_user AND rolsuper
    UNION ALL SELECT 2, 'may create roles' FROM pg_roles WHERE rolname = current_user AND rolcreaterole
    UNION ALL SELECT 3, 'may create databases' FROM pg_roles WHERE rolname = current_user AND rolcreatedb
    UNION ALL SELECT 4, 'may replicate' FROM pg_roles WHERE rolname = current_user AND rolreplication
    UNION ALL SELECT 5, 'bypasses row security' FROM pg_roles WHERE rolname = current_user AND rolbypassrls
    UNION ALL SELECT 6, 'is a member of ' || quote_ident(rolname) FROM pg_roles
        WHERE pg_has_role(current_user, oid, 'MEMBER') AND rolname NOT IN (current_user, %(reader)s)
    UNION ALL SELECT 7, 'may create temporary tables (REVOKE TEMPORARY ON DATABASE ' || quote_ident(current_database())
        || ' FROM PUBLIC, as migration 0011 does: a copy made with CREATE DATABASE ... TEMPLATE loses it)'
        WHERE has_database_privilege(current_database(), 'TEMPORARY')
    UNION ALL SELECT 8, 'may create schemas' WHERE has_database_privilege(current_database(), 'CREATE')
    UNION ALL SELECT 9, 'may create objects in schema ' || quote_ident(nspname) FROM pg_namespace
        WHERE has_schema_privilege(oid, 'CREATE')
    UNION ALL SELECT 10, 'may change ' || count(*) || ' tables' FROM pg_class
        WHERE relkind IN ('r', 'p', 'v', 'm', 'f')
          AND relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
          AND has_table_privilege(oid, 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES')
        HAVING count(*) > 0
    UNION ALL SELECT 11, 'may execute ' || p.oid::regprocedure FROM pg_proc AS p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND (p.proname LIKE 'pg\\_advisory\\_%%' OR p.proname LIKE 'pg\\_try\\_advisory\\_%%'
               OR p.proname LIKE 'lo\\_%%' OR p.proname LIKE 'pg\\_read\\_%%' OR p.proname LIKE 'pg\\_ls\\_%%'
               OR p.proname IN ('loread', 'lowrite', 'pg_notify', 'pg_cancel_backend', 'pg_terminate_backend',
                                'pg_reload_conf', 'pg_stat_file', 'pg_rotate_logfile'))
          AND has_function_privilege(p.oid, 'EXECUTE')
    UNION ALL SELECT 12, 'may run DO blocks (USAGE on plpgsql)' FROM pg_language
        WHERE lanname = 'plpgsql' AND has_language_privilege(oid, 'USAGE')
    UNION ALL SELECT 13, 'may read other sessions'' statements (SELECT on pg_stat_activity, revoked by migration 0024)'
        WHERE has_table_privilege('pg_catalog.pg_stat_activity', 'SELECT')
           OR has_function_privilege('pg_catalog.pg_stat_get_activity(integer)', 'EXECUTE')
           OR has_function_privilege('pg_catalog.pg_stat_get_backend_activity(integer)', 'EXECUTE')
) AS r ORDER BY k, reason
"""


def excess_privileges(conn: psycopg.Connection) -> list[str]:
    """What this connection's login may do beyond reading the catalogue ([] for a reader)."""
    return [row[0] for row in conn.execute(_EXCESS_PRIVILEGES, {"reader": READER_ROLE})]


def _migrations_dir():
    return files("skyledger.migrations").joinpath("versions")


def _revisions() -> list[str]:
    # Revision ids are the four-digit prefixes of the file names (0001_foundation.py has
    # revision "0001"; a test checks that the newest equals Alembic's head). Reading the
    # names avoids importing Alembic and SQLAlchemy on the query path.
    names = [entry.name for entry in _migrations_dir().iterdir()]
    return sorted(m.group(1) for n in names if (m := re.fullmatch(r"(\d{4})_\w+\.py", n)))


def code_head_revision() -> str:
    """The newest migration's revision, read from the migrations folder."""
    revisions = _revisions()
    assert revisions, "the migrations folder has no revisions"
    return revisions[-1]


def _check_schema(conn: psycopg.Connection) -> None:
    head = code_head_revision()
    try:
        with conn.transaction():
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except pg_errors.UndefinedTable as err:
        raise SchemaVersionError("the database has no skyledger schema yet; run `skyledger init`") from err
    except pg_errors.InsufficientPrivilege as err:
        # Readers may read alembic_version since 0011: a database that refuses is older.
        raise SchemaVersionError(
            f"the database schema is older than this code's {head}; run `skyledger db upgrade`"
        ) from err
    current = row[0] if row else None
    if current == head:
        return
    if current is None:
        raise SchemaVersionError("the database has no skyledger schema yet; run `skyledger init`")
    if current in _revisions():
        raise SchemaVersionError(
            f"the database schema is at revision {current}, older than this code's {head}; run `skyledger db upgrade`"
        )
    raise SchemaVersionError(
        f"the database schema is at revision {current}, which this skyledger does not know (its newest is "
        f"{head}): the database was upgraded by a newer skyledger; upgrade the skyledger package instead of using this one"
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _open(login: Login, limits: Limits) -> psycopg.Connection:
    try:
        conn = psycopg.connect(login.conninfo, options=limits.session_options(), application_name="skyledger query")
    except psycopg.OperationalError as err:
        raise DatabaseError(f"cannot connect to {login.display}: {_one_line(err)}") from err
    conn.read_only = True
    return conn


def _prepare_embedded(settings: Settings, limits: Limits) -> None:
    """First use of an embedded home: create and migrate the database (as any command
    does) and the query login. Imports SQLAlchemy and Alembic, so only on this path."""
    from .database import connect

    db = connect(settings)
    try:
        assert db.embedded is not None
        ensure_query_role(db.embedded.conninfo(), limits)
    finally:
        db.dispose()


def connect_reader(settings: Settings, limits: Limits | None = None) -> psycopg.Connection:
    """A connection for one person's statement: the reader login, checked, with limits.

    Raises :class:`DatabaseError` when the login is more than a reader (unless allowed),
    :class:`SchemaVersionError` when the schema is not this code's.
    """
    limits = limits or Limits.from_settings(settings)
    login = query_login(settings)
    try:
        conn = _open(login, limits)
    except DatabaseError as err:
        if not login.embedded:
            raise
        if "does not exist" in str(err):
            # First use of this embedded server: no database or no query login yet.
            _prepare_embedded(settings, limits)
        else:
            # A stale postmaster.pid: start (or find) the server the thorough way.
            login = query_login(settings, start=True)
        conn = _open(login, limits)
    try:
        try:
            _check_schema(conn)
        except SchemaVersionError:
            if not login.embedded:
                raise
            # A brand-new embedded database is set up on first use, as by every command.
            conn.close()
            _prepare_embedded(settings, limits)
            conn = _open(login, limits)
            _check_schema(conn)
        with conn.transaction():
            excess = excess_privileges(conn)
            temp_limit = conn.execute("SHOW temp_file_limit").fetchone()[0]
        user = conn.info.user
        if excess and not login.allow_owner:
            shown = "; ".join(excess[:6]) + (f"; and {len(excess) - 6} more" if len(excess) > 6 else "")
            raise DatabaseError(
                f"people's queries must run as a catalogue reader, and login {user!r} ({login.display}) is more "
                f"than one: it {shown}. Set SKYLEDGER_QUERY_URL to a login that is a member of {READER_ROLE} only "
                "(docs/database.md shows how to create one), or set SKYLEDGER_ALLOW_OWNER_QUERIES=1 to run "
                "queries as this login anyway (never on a shared server)"
            )
        if temp_limit == "-1":
            if "is a superuser" not in excess:
                raise DatabaseError(
                    f"login {user!r} has no temp_file_limit, so one query could fill the server's disk; as a "
                    f"superuser run: ALTER ROLE {user} SET temp_file_limit = '{limits.temp_file_limit}'"
                )
            conn.execute(sql.SQL("SET temp_file_limit = {}").format(sql.Literal(limits.temp_file_limit)))
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


_MULTIPLE = "cannot insert multiple commands into a prepared statement"


def _query_error(err: psycopg.Error, limits: Limits) -> QueryError:
    diag = getattr(err, "diag", None)
    primary = _one_line((diag.message_primary if diag is not None else None) or err)
    if isinstance(err, pg_errors.SyntaxError) and _MULTIPLE in primary:
        return QueryError(
            "the text holds more than one SQL statement; each request runs exactly one: send them one at a time"
        )
    if "EMPTY_QUERY" in str(err):
        return QueryError("the text holds no SQL statement (only blanks, semicolons or comments)")
    if isinstance(err, pg_errors.QueryCanceled):
        return QueryError(
            f"the statement ran longer than {limits.statement_timeout_s:g} s (statement_timeout) and was cancelled"
        )
    if isinstance(err, pg_errors.ReadOnlySqlTransaction):
        return ReadOnlyViolation(f"queries are read-only and this statement writes; nothing was changed ({primary})")
    if isinstance(err, pg_errors.InsufficientPrivilege):
        return QueryError(
            f"{primary}: queries run as a catalogue reader, who may only read the catalog schema and the releases"
        )
    if isinstance(err, pg_errors.ConfigurationLimitExceeded):
        return QueryError(f"the statement needs more temporary disk than the {limits.temp_file_limit} allowed ({primary})")
    if isinstance(err, psycopg.ProgrammingError) and "COPY" in str(err):
        return QueryError("COPY is not available here; SELECT the rows and use --format csv instead")
    return QueryError(f"the database rejected the query: {primary}")


_NO_RESULT = "didn't produce a result"


def _check_text(statement: str, limits: Limits) -> None:
    if len(statement) > limits.max_statement_chars:
        raise QueryError(
            f"the statement is {len(statement):,} characters long; at most {limits.max_statement_chars:,} are accepted"
        )
    if "\x00" in statement:
        raise QueryError("the statement contains a NUL character")


def _describe_types(conn: psycopg.Connection, statement: str) -> tuple[list[str], list[str]] | None:
    """Column names and PostgreSQL type names (``_float8`` for arrays) of a statement,
    from Parse and Describe, which plan and run nothing; None when the server refuses
    the text (the run then raises the server's message)."""
    pgconn = conn.pgconn
    encoding = conn.info.encoding
    pgconn.prepare(b"", statement.encode(encoding))
    described = pgconn.describe_prepared(b"")
    if described.status != psycopg.pq.ExecStatus.COMMAND_OK:
        return None
    names = [(described.fname(i) or b"").decode(encoding) for i in range(described.nfields)]
    oids = [described.ftype(i) for i in range(described.nfields)]
    known = dict(conn.execute("SELECT oid::int8, typname::text FROM pg_type WHERE oid = ANY(%s::oid[])", (oids,)))
    return names, [known.get(oid, "text") for oid in oids]


@dataclass
class Stream:
    """A statement's rows as they arrive: ``chunks`` yields lists of at most
    ``chunk_rows`` rows and stops at ``limits.max_rows``; ``truncated`` becomes True
    when it stopped there with more rows behind. ``error`` is the :class:`QueryError`
    ``chunks`` raised when the statement failed part-way (a later row's error, the
    statement timeout), kept so that whoever gets the rows through a writer that turns
    the error into a status (a VOTable) can still tell the result is not whole."""

    columns: list[str]
    types: list[str]
    chunks: Iterator[list[tuple[Any, ...]]]
    rows: int = 0
    truncated: bool = False
    error: QueryError | None = None


@contextmanager
def stream_statement(
    conn: psycopg.Connection, statement: str, limits: Limits, *, chunk_rows: int = 1000
) -> Iterator[Stream]:
    """Run one statement on a reader connection and hand its rows on chunk by chunk.

    The protections of :func:`run_statement` (one statement, the connection's limits,
    a row cap, rollback afterwards, closing when the rollback fails); memory holds one
    chunk. Leaving the block early (a client gone, a job aborted) cancels the rest of
    the statement. Errors, also while iterating, are :class:`QueryError`.
    """
    _check_text(statement, limits)
    kwargs = {"size": max(1, min(limits.max_rows + 1, chunk_rows))} if psycopg.pq.version() >= 170000 else {}
    cur = conn.cursor()
    try:
        try:
            described = _describe_types(conn, statement)
            if described is None:
                # Let the server say what is wrong, with the mapping every run uses. Through
                # stream(), the extended protocol: execute() without parameters sends the
                # simple protocol, which would run every statement of "COMMIT; DROP ...".
                for _ in cur.stream(statement):
                    break
                described = ([], [])
        except psycopg.Error as err:
            raise _query_error(err, limits) from err
        stream = cur.stream(statement, **kwargs)
        result = Stream(described[0], described[1], iter(()))

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            chunk: list[tuple[Any, ...]] = []
            try:
                for row in stream:
                    if result.rows == limits.max_rows:
                        result.truncated = True
                        break
                    chunk.append(tuple(row))
                    result.rows += 1
                    if len(chunk) >= chunk_rows:
                        yield chunk
                        chunk = []
                if chunk:
                    yield chunk
            except psycopg.ProgrammingError as err:
                if _NO_RESULT not in str(err):
                    result.error = _query_error(err, limits)
                    raise result.error from err
            except psycopg.Error as err:
                result.error = _query_error(err, limits)
                raise result.error from err
            finally:
                stream.close()  # on a break: psycopg cancels the rest of the statement

        result.chunks = chunks()
        try:
            yield result
        finally:
            result.chunks.close()
    finally:
        cur.close()
        try:
            conn.rollback()
        except psycopg.Error:
            conn.close()


def run_statement(conn: psycopg.Connection, statement: str, limits: Limits) -> QueryResult:
    """Run one statement on a reader connection; at most ``limits.max_rows`` rows come back.

    :func:`stream_statement` with its rows gathered: the transaction is rolled back
    afterwards, whatever the statement was, and the connection is closed when it cannot
    be (a COPY left half-way).
    """
    with stream_statement(conn, statement, limits) as stream:
        rows = [row for chunk in stream.chunks for row in chunk]
    return QueryResult(stream.columns, rows, stream.truncated)


def run_reader_query(settings: Settings, statement: str, limits: Limits | None = None) -> QueryResult:
    """One person's statement, start to end: reader connection, limits, one statement."""
    limits = limits or Limits.from_settings(settings)
    with connect_reader(settings, limits) as conn:
        return run_statement(conn, statement, limits)
