"""Drives a running Superset through its REST API, as an analyst's setup
would: adds the tauc Flight SQL server as a database, runs an aggregate in
SQL Lab, builds datasets and the starter dashboard's charts, checks the
chart data API's numbers against what `tauc-job sql` computed, and exports
the dashboard so `superset import-dashboards` can load it.

Usage: python superset_check.py SUPERSET_URL ADMIN_PASSWORD DB_URI EXPECTED_JSON EXPORT_ZIP
EXPECTED_JSON: {"sqllab": [[series, errors], ...], "by_series": {series: errors}}
"""

import json
import sys

import requests

base, admin_pw, db_uri, expected_path, export_zip = sys.argv[1:6]
expected = json.load(open(expected_path))
s = requests.Session()


def check(r, what):
    if r.status_code >= 400:
        sys.exit(f"{what}: HTTP {r.status_code}: {r.text[:2000]}")
    return r.json()


tok = check(
    s.post(f"{base}/api/v1/security/login", json={"username": "admin", "password": admin_pw, "provider": "db", "refresh": True}),
    "login",
)["access_token"]
s.headers["Authorization"] = f"Bearer {tok}"
csrf = check(s.get(f"{base}/api/v1/security/csrf_token/"), "csrf")["result"]
s.headers["X-CSRFToken"] = csrf
s.headers["Referer"] = base

# the database: test the connection first, as the UI's "Test connection"
check(s.post(f"{base}/api/v1/database/test_connection/", json={"sqlalchemy_uri": db_uri, "database_name": "tauc"}), "test connection")
db = check(
    s.post(
        f"{base}/api/v1/database/",
        json={"database_name": "tauc", "sqlalchemy_uri": db_uri, "expose_in_sqllab": True, "allow_run_async": False},
    ),
    "add database",
)["id"]
tables = check(s.get(f"{base}/api/v1/database/{db}/tables/", params={"q": "(schema_name:public)"}), "tables")
names = sorted(t["value"] for t in tables["result"])
assert "ads_mon_cors_anomaly_hh" in names, names

# SQL Lab
sql = "SELECT series, sum(errors) AS errors FROM ads_mon_cors_anomaly_hh GROUP BY series ORDER BY series"
res = check(s.post(f"{base}/api/v1/sqllab/execute/", json={"database_id": db, "sql": sql, "runAsync": False, "schema": "public"}), "sql lab")
got = [[r["series"], r["errors"]] for r in res["data"]]
assert got == expected["sqllab"], (got, expected["sqllab"])


def dataset(table):
    return check(s.post(f"{base}/api/v1/dataset/", json={"database": db, "schema": "public", "table_name": table}), f"dataset {table}")["id"]


def metric(col, agg="SUM", label=None):
    return {"expressionType": "SIMPLE", "aggregate": agg, "column": {"column_name": col}, "label": label or col}


def chart(name, ds, viz, params, query):
    """A chart with its query context saved, so its data API answers."""
    params = {"datasource": f"{ds}__table", "viz_type": viz, **params}
    qc = {"datasource": {"id": ds, "type": "table"}, "queries": [query], "form_data": params, "result_format": "json", "result_type": "full"}
    return check(
        s.post(
            f"{base}/api/v1/chart/",
            json={
                "slice_name": name,
                "viz_type": viz,
                "datasource_id": ds,
                "datasource_type": "table",
                "params": json.dumps(params),
                "query_context": json.dumps(qc),
            },
        ),
        f"chart {name}",
    )["id"]


anomaly = dataset("ads_mon_cors_anomaly_hh")
topn = dataset("ads_mon_cors_topn_1d")
target = dataset("ads_trk_target_click_1d")
funnel = dataset("ads_trk_funnel_1d")
bill = dataset("ads_bill_settlement_1d")
hour_axis = {"columnType": "BASE_AXIS", "sqlExpression": "hour_start_local", "label": "hour_start_local", "expressionType": "SQL", "timeGrain": "PT1H"}
alert_cols = ["region", "series", "hour_start_local", "errors", "robust_z"]
top_cols = ["dt", "region", "rank", "err_class", "req_host", "req_path_tpl", "errors"]
target_metrics = [metric("clicks"), metric("impressions"), metric("ctr", "AVG", "ctr")]
bill_metrics = [metric("billable_qty"), metric("amount")]
charts = [
    chart(
        "CORS errors by hour",
        anomaly,
        "echarts_timeseries_bar",
        {"x_axis": "hour_start_local", "time_grain_sqla": "PT1H", "metrics": [metric("errors")], "groupby": ["series"], "row_limit": 10000},
        {"columns": [hour_axis, "series"], "metrics": [metric("errors")], "row_limit": 10000},
    ),
    chart(
        "CORS alert hours",
        anomaly,
        "table",
        {"query_mode": "raw", "all_columns": alert_cols, "adhoc_filters": [{"expressionType": "SIMPLE", "subject": "is_alert", "operator": "IS TRUE", "clause": "WHERE"}]},
        {"columns": alert_cols, "filters": [{"col": "is_alert", "op": "IS TRUE"}], "row_limit": 1000},
    ),
    chart(
        "Top CORS fingerprints",
        topn,
        "table",
        {"query_mode": "raw", "all_columns": top_cols, "row_limit": 100},
        {"columns": top_cols, "orderby": [["rank", True]], "row_limit": 100},
    ),
    chart(
        "Target clicks and CTR",
        target,
        "table",
        {"query_mode": "aggregate", "groupby": ["target_type", "target_id"], "metrics": target_metrics},
        {"columns": ["target_type", "target_id"], "metrics": target_metrics},
    ),
    chart(
        "Funnel steps",
        funnel,
        "echarts_timeseries_bar",
        {"x_axis": "step_no", "metrics": [metric("users")], "groupby": ["funnel_id"]},
        {"columns": ["step_no", "funnel_id"], "metrics": [metric("users")]},
    ),
    chart(
        "Settlement by partner",
        bill,
        "table",
        {"query_mode": "aggregate", "groupby": ["partner_id", "currency"], "metrics": bill_metrics},
        {"columns": ["partner_id", "currency"], "metrics": bill_metrics},
    ),
]

# the chart data API's numbers against the table
qc = {
    "datasource": {"id": anomaly, "type": "table"},
    "queries": [{"columns": ["series"], "metrics": [metric("errors")], "orderby": [[metric("errors"), False]], "row_limit": 1000}],
    "result_format": "json",
    "result_type": "full",
}
data = check(s.post(f"{base}/api/v1/chart/data", json=qc), "chart data")["result"][0]["data"]
by_series = {r["series"]: r["errors"] for r in data}
assert by_series == expected["by_series"], (by_series, expected["by_series"])
# every chart of the dashboard renders its data
rows_of = {}
for c in charts:
    r = check(s.get(f"{base}/api/v1/chart/{c}/data/"), f"data of chart {c}")
    rows_of[c] = r["result"][0]["data"]
    # the alert chart may be empty on a quiet day; the others never are
    assert rows_of[c] or c == charts[1], f"chart {c} has no rows"
# the hourly chart (hour grain through date_trunc) adds up to the same totals
hourly = {}
for r in rows_of[charts[0]]:
    hourly[r["series"]] = hourly.get(r["series"], 0) + r["errors"]
assert hourly == expected["by_series"], (hourly, expected["by_series"])

# the starter dashboard, exported for `superset import-dashboards`
layout = {"DASHBOARD_VERSION_KEY": "v2", "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]}, "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]}}
for i, c in enumerate(charts):
    row, ch = f"ROW-{i}", f"CHART-{c}"
    layout["GRID_ID"]["children"].append(row)
    layout[row] = {"type": "ROW", "id": row, "children": [ch], "parents": ["ROOT_ID", "GRID_ID"], "meta": {"background": "BACKGROUND_TRANSPARENT"}}
    layout[ch] = {"type": "CHART", "id": ch, "children": [], "parents": ["ROOT_ID", "GRID_ID", row], "meta": {"chartId": c, "width": 12, "height": 50}}
dash = check(
    s.post(f"{base}/api/v1/dashboard/", json={"dashboard_title": "tauc daily", "slug": "tauc-daily", "position_json": json.dumps(layout), "published": True}),
    "dashboard",
)["id"]
for c in charts:
    check(s.put(f"{base}/api/v1/chart/{c}", json={"dashboards": [dash]}), f"attach chart {c}")
r = s.get(f"{base}/api/v1/dashboard/export/", params={"q": f"!({dash})"})
if r.status_code != 200:
    sys.exit(f"export: HTTP {r.status_code}: {r.text[:500]}")
open(export_zip, "wb").write(r.content)
print(json.dumps({"database": db, "charts": charts, "dashboard": dash, "tables": len(names), "sqllab": got}))
