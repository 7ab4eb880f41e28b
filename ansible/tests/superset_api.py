"""Superset's REST API, as the converge test uses it: log in as the admin,
find a database by name, run SQL through SQL Lab, list dashboards.

    from superset_api import query
    rows = query("http://10.231.0.2:8088", admin_password, "tauc", "SELECT 1 AS one")
    # -> [{"one": 1}]

Also runnable:

    python superset_api.py URL dashboards            (admin password on stdin)
    python superset_api.py URL databases
    python superset_api.py URL query DATABASE SQL

The database the superset role's import creates is `tauc` (the
`database_name` of docs/superset/tauc-daily-dashboard.zip's
databases/tauc.yaml); its dashboard is `tauc-daily`.
"""

import json
import sys

import requests

TIMEOUT = 330  # a little over the role's default query timeout (300 s)


class SupersetError(RuntimeError):
    pass


def _check(r: requests.Response, what: str) -> dict:
    if r.status_code >= 400:
        raise SupersetError(f"{what}: HTTP {r.status_code}: {r.text[:2000]}")
    return r.json()


def login(base_url: str, admin_password: str, username: str = "admin") -> requests.Session:
    """A session with a bearer token and a CSRF token (for POSTs)."""
    base_url = base_url.rstrip("/")
    s = requests.Session()
    body = {"username": username, "password": admin_password, "provider": "db", "refresh": True}
    tok = _check(s.post(f"{base_url}/api/v1/security/login", json=body, timeout=60), "login")["access_token"]
    s.headers["Authorization"] = f"Bearer {tok}"
    csrf = _check(s.get(f"{base_url}/api/v1/security/csrf_token/", timeout=60), "csrf token")["result"]
    s.headers["X-CSRFToken"] = csrf
    s.headers["Referer"] = base_url
    return s


def _list(s: requests.Session, base_url: str, resource: str, columns: list[str]) -> list[dict]:
    out, page = [], 0
    while True:
        q = f"(columns:!({','.join(columns)}),page:{page},page_size:100)"
        res = _check(s.get(f"{base_url.rstrip('/')}/api/v1/{resource}/", params={"q": q}, timeout=60), resource)
        out += res["result"]
        if len(out) >= res["count"] or not res["result"]:
            return out
        page += 1


def databases(base_url: str, admin_password: str, username: str = "admin") -> list[dict]:
    """[{"id", "database_name", "backend"}, ...]"""
    s = login(base_url, admin_password, username)
    return _list(s, base_url, "database", ["id", "database_name", "backend"])


def dashboards(base_url: str, admin_password: str, username: str = "admin") -> list[dict]:
    """[{"id", "dashboard_title", "slug", "published"}, ...]"""
    s = login(base_url, admin_password, username)
    return _list(s, base_url, "dashboard", ["id", "dashboard_title", "slug", "published"])


def database_id(s: requests.Session, base_url: str, database_name: str) -> int:
    found = [d["id"] for d in _list(s, base_url, "database", ["id", "database_name"])
             if d["database_name"] == database_name]
    if not found:
        raise SupersetError(f"no database named {database_name!r}")
    return found[0]


def query(base_url: str, admin_password: str, database_name: str, sql: str,
          schema: str | None = "public", username: str = "admin") -> list[dict]:
    """Runs `sql` in SQL Lab (synchronously) on the database named
    `database_name`; returns its rows, each a dict in column order."""
    s = login(base_url, admin_password, username)
    db = database_id(s, base_url, database_name)
    body = {"database_id": db, "sql": sql, "runAsync": False, "schema": schema}
    res = _check(s.post(f"{base_url.rstrip('/')}/api/v1/sqllab/execute/", json=body, timeout=TIMEOUT), "sql lab")
    if res.get("status") not in (None, "success"):
        raise SupersetError(f"sql lab: {res.get('status')}: {res.get('error') or res}")
    return res.get("data") or []


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[2] not in ("dashboards", "databases", "query") or (argv[2] == "query" and len(argv) != 5):
        print(__doc__, file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\n")
    url, what = argv[1], argv[2]
    if what == "dashboards":
        out = dashboards(url, password)
    elif what == "databases":
        out = databases(url, password)
    else:
        out = query(url, password, argv[3], argv[4])
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
