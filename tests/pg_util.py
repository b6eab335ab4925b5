"""PostgreSQL for the tests: `$QSTORE_TEST_PG_URL` names a server (`.ci/postgres.sh start` runs one).

Without it the Postgres tests skip, unless `QSTORE_REQUIRE_PG=1` (CI), which turns the skip into a failure.
Each test gets its own schema, dropped when the test process exits.
"""
import atexit
import os
import uuid

import pytest

_schemas = []


def pg_url() -> str:
    "The test server's URL, or skip (fail under QSTORE_REQUIRE_PG=1) when none is configured."
    url = os.environ.get('QSTORE_TEST_PG_URL')
    if not url:
        msg = 'no PostgreSQL: set QSTORE_TEST_PG_URL (eval "$(.ci/postgres.sh start)")'
        if os.environ.get('QSTORE_REQUIRE_PG') == '1': pytest.fail(msg + ', and QSTORE_REQUIRE_PG=1 forbids skipping')
        pytest.skip(msg)
    return url


def fresh_schema_url() -> str:
    "A URL whose tables go to a new, empty schema of the test server."
    import psycopg
    from qstore.storage.postgres import _with_search_path
    url = pg_url()
    schema = f"qstore_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn: conn.execute(f'CREATE SCHEMA {schema}')
    _schemas.append((url, schema))
    return _with_search_path(url, schema)


def pg_vector_store(tmp_path, metric):
    from qstore.storage.pgvector import PgVectorStore
    return PgVectorStore(fresh_schema_url(), metric=metric)


@atexit.register
def _drop_schemas():
    if not _schemas: return
    import psycopg
    for url, schema in _schemas:
        try:
            with psycopg.connect(url, autocommit=True) as conn: conn.execute(f'DROP SCHEMA IF EXISTS {schema} CASCADE')
        except psycopg.Error: pass  # the server may be gone already (CI stops it after the tests)
