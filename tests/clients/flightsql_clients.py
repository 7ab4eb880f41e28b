"""Drives `tauc-job serve` with two real Flight SQL client libraries from
PyPI: flightsql-dbapi (the SQLAlchemy dialect Superset uses) and
adbc-driver-flightsql. Prints one JSON object of what each saw; the Rust
test (tests/serve.rs) compares it with the warehouse.

Usage: python flightsql_clients.py PORT USER PASSWORD TOKEN
"""

import json
import sys

import adbc_driver_flightsql.dbapi as adbc
import sqlalchemy
from flightsql import FlightSQLClient, connect

port, user, password, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
AGG = "SELECT region, count(*) AS n, sum(pv) AS pv FROM ads_trk_page_1d GROUP BY region ORDER BY region"
PARAM = "SELECT count(*) AS n FROM ads_trk_page_1d WHERE region = $1"
# qmark, the DB-API paramstyle of both drivers; the '?' literal stays text
QMARK = "SELECT count(*) AS n, '?' AS q FROM ads_trk_page_1d WHERE pv >= ?"
out = {}


def error_of(f):
    """The error message `f` raises, or None when it does not raise."""
    try:
        f()
    except Exception as e:  # noqa: BLE001 - any client error is the answer
        return f"{type(e).__name__}: {e}"
    return None


def plain(rows):
    return [[v if not hasattr(v, "item") else v.item() for v in r] for r in rows]


# --- flightsql-dbapi, through SQLAlchemy as Superset uses it ---------------
engine = sqlalchemy.create_engine(f"datafusion://{user}:{password}@127.0.0.1:{port}?insecure=true")
with engine.connect() as c:
    insp = sqlalchemy.inspect(c)
    out["dbapi_schemas"] = insp.get_schema_names()
    out["dbapi_tables"] = insp.get_table_names()
    out["dbapi_columns"] = {
        t: [(col["name"], str(col["type"])) for col in insp.get_columns(t)]
        for t in ["ads_trk_page_1d", "ads_mon_cors_anomaly_hh"]
    }
    out["dbapi_aggregate"] = plain(c.execute(sqlalchemy.text(AGG)).fetchall())
    # bound parameters as Superset sends them: a Core query whose values the
    # dialect binds as literals (flightsql-dbapi's compiler always does; a
    # text() query's :name values are unknown when it compiles and become
    # NULL there, a limit of that client, docs/superset.md)
    t = sqlalchemy.table("ads_trk_page_1d", sqlalchemy.column("region"), sqlalchemy.column("pv"), sqlalchemy.column("page_path"))
    bound = (
        sqlalchemy.select(sqlalchemy.func.count().label("n"))
        .select_from(t)
        .where(t.c.region == "aps1", t.c.pv >= 0, t.c.page_path != "it's ? $1")
    )
    out["dbapi_bound"] = plain(c.execute(bound).fetchall())
    out["dbapi_types"] = [
        type(v).__name__ for v in c.execute(sqlalchemy.text("SELECT region, page_path FROM ads_trk_page_1d LIMIT 1")).fetchone()
    ]


def dbapi_query(sql, **auth):
    conn = connect(FlightSQLClient(host="127.0.0.1", port=int(port), insecure=True, **auth))
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchall()


types = FlightSQLClient(host="127.0.0.1", port=int(port), insecure=True, user=user, password=password)
info = types.get_table_types()
out["dbapi_table_types"] = types.do_get(info.endpoints[0].ticket).read_all().column(0).to_pylist()
out["dbapi_token"] = plain(dbapi_query("SELECT count(*) FROM ads_trk_page_1d", token=token))
out["dbapi_wrong_password"] = error_of(lambda: dbapi_query("SELECT 1", user=user, password=password + "x"))
out["dbapi_anonymous"] = error_of(lambda: dbapi_query("SELECT 1"))
out["dbapi_ddl"] = error_of(
    lambda: dbapi_query("CREATE EXTERNAL TABLE p (a VARCHAR) STORED AS CSV LOCATION '/etc/passwd'", user=user, password=password)
)
out["dbapi_copy"] = error_of(
    lambda: dbapi_query("COPY (SELECT 1 AS a) TO '/tmp/tauc-evil.csv'", user=user, password=password)
)
out["dbapi_too_many_rows"] = error_of(lambda: dbapi_query("SELECT * FROM dwd_trk_event_di", user=user, password=password))

# --- ADBC ------------------------------------------------------------------
uri = f"grpc://127.0.0.1:{port}"
with adbc.connect(uri, db_kwargs={"username": user, "password": password}) as conn:
    with conn.cursor() as cur:
        cur.execute(AGG)
        out["adbc_aggregate"] = plain(cur.fetchall())
        cur.execute(PARAM, parameters=("aps1",))
        out["adbc_prepared"] = plain(cur.fetchall())
        cur.execute(QMARK, parameters=(0,))
        out["adbc_qmark"] = plain(cur.fetchall())
        out["adbc_qmark_count"] = error_of(lambda: cur.execute(QMARK + " AND pv <= ?", parameters=(0,)))
        out["adbc_mixed"] = error_of(lambda: cur.execute(QMARK + " AND pv <= $2", parameters=(0, 1)))
        for key, sql in [("adbc_series", "SELECT count(*) AS n FROM generate_series(1, 10)"), ("adbc_describe", "DESCRIBE ads_trk_page_1d")]:
            try:
                cur.execute(sql)
                out[key] = plain(cur.fetchall())
            except Exception as e:  # noqa: BLE001 - a clear refusal is an answer too
                out[key] = f"{type(e).__name__}: {e}"
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    out["adbc_tables"] = sorted(
        t["table_name"] for c in objects for s in c["catalog_db_schemas"] or [] for t in s["db_schema_tables"] or []
    )
    out["adbc_page_schema"] = conn.adbc_get_table_schema("ads_trk_page_1d").names
out["adbc_wrong_password"] = error_of(
    lambda: adbc.connect(uri, db_kwargs={"username": user, "password": "nope-nope"}).cursor().execute("SELECT 1")
)

print(json.dumps(out))
