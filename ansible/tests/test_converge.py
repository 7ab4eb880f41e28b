"""site.yml on the test network: the services start from what the roles
rendered, under real systemd, and the system works end to end through
the firewalls made from the rule table."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import BUCKET, GROUPS, VERSION2, recap, tauc_job

DATE = "2024-06-18"
# what each host runs (tauc-daily@ is the daily job's template unit)
DAEMONS = {
    "master": ["tauc-scheduler", "tauc-sql", "tauc-follow"],
    "exec1": ["tauc-executor"],
    "exec2": ["tauc-executor"],
    "collector": ["tauc-collector", "tauc-uploader"],
    "bi": ["superset"],
}
# columns that differ between two runs of the same job by design
RUN_COLUMNS = {"run_id", "detected_at", "started_at", "finished_at"}
TABLES = [
    "ods_fe_event_di", "ods_fe_quarantine_di", "ods_fe_load_stats_di",
    "dwd_trk_event_di", "dwd_mon_cors_error_di", "dwd_fe_dedupe_stats_di",
    "ads_trk_target_click_1d", "ads_trk_page_1d", "ads_trk_funnel_1d",
    "ads_mon_cors_summary_1d", "ads_mon_cors_topn_1d", "ads_mon_cors_anomaly_hh",
    "ads_bill_settlement_1d",
]


def show(net, host: str, unit: str, props: list[str]) -> dict[str, str]:
    out = net.sh(host, f"systemctl show {unit} -p {','.join(props)}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_second_converge_changes_nothing(deploy, converged, timings):
    p, took = deploy.playbook("site.yml")
    timings["no-change converge"] = f"{took:.0f} s"
    counts = recap(p.stdout)
    booted = {h for members in GROUPS.values() for h in members}
    assert set(counts) == booted, counts
    changed = {h: c for h, c in counts.items() if c.get("changed") or c.get("failed") or c.get("unreachable")}
    assert not changed, f"a second apply changed something: {changed}\n{p.stdout[-4000:]}"


def test_services_run_as_the_units_say(net, converged):
    for host, units in DAEMONS.items():
        for unit in units:
            path = f"/etc/systemd/system/{unit}.service"
            v = net.sh(host, f"systemd-analyze verify {path} 2>&1", check=False)
            assert v.returncode == 0 and unit not in v.stdout, f"{host} {unit}: {v.stdout}"
            p = show(net, host, unit, [
                "ActiveState", "User", "MainPID", "NoNewPrivileges", "ProtectSystem", "ProtectHome",
                "PrivateTmp", "CapabilityBoundingSet", "ReadWritePaths", "Restart", "EnvironmentFiles",
                "LimitNOFILE", "TasksMax",
            ])
            assert p["ActiveState"] == "active", f"{host} {unit}: {p}"
            assert p["User"] == unit, p
            assert (p["NoNewPrivileges"], p["ProtectSystem"], p["ProtectHome"], p["PrivateTmp"]) == (
                "yes", "strict", "yes", "yes"), p
            assert p["CapabilityBoundingSet"] == "", p
            assert p["Restart"] == "on-failure", p
            assert p["TasksMax"] != "infinity" and p["LimitNOFILE"] == "65536", p
            # the process itself runs as the service's user, with what the env file says
            uid = net.sh(host, f"ps -o uid= -p {p['MainPID']}").stdout.strip()
            assert uid == net.sh(host, f"id -u {unit}").stdout.strip(), (host, unit, uid)
            rw = p["ReadWritePaths"].split()
            assert rw and all(d.startswith(("/var/lib/" + unit, "/var/lib/superset")) for d in rw), p
            for d in rw:
                st = net.sh(host, f"stat -c '%a %U' {d}").stdout.split()
                assert st[0] in ("700", "750") and st[1] == unit, (host, d, st)
            if unit.startswith("tauc-"):
                env = f"/etc/tauc/{unit}/{unit}.env"
                assert env in p["EnvironmentFiles"], p
                assert net.sh(host, f"stat -c '%a %U %G' {env}").stdout.split() == ["640", "root", unit]


def test_the_daily_unit_verifies(net, converged):
    v = net.sh("master", "systemd-analyze verify tauc-daily@2024-06-18.service tauc-daily.timer 2>&1", check=False)
    assert v.returncode == 0 and "tauc-daily" not in v.stdout, v.stdout


def test_the_follow_service_serves_its_metrics_on_the_loopback(net, converged):
    # the micro-batches run on the cluster; their counters and the S3
    # requests they cost are on the master's loopback only
    deadline = time.monotonic() + 120
    while True:
        m = net.sh("master", "curl -fsS http://127.0.0.1:9465/metrics", check=False).stdout
        if re.search(r"^tauc_follow_batches_total\{outcome=", m, re.M) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert re.search(r"^tauc_follow_batches_total\{outcome=", m, re.M), m
    assert "# TYPE tauc_follow_batch_duration_seconds histogram" in m, m
    addr = net.hosts["master"].address
    outside = net.sh("master", f"curl -fsS --max-time 3 http://{addr}:9465/metrics", check=False)
    assert outside.returncode != 0, "the follow metrics answer on the private address"


def test_events_reach_s3_through_the_broker_and_the_uploader(net, converged, workdir):
    ids = [str(uuid.uuid4()) for _ in range(25)]
    body = "\n".join(json.dumps({"event_id": i, "event_type": "page_enter", "page": "/deploy"}) for i in ids)
    collector = net.hosts["collector"].address
    post = (
        "import sys, urllib.request\n"
        f"r = urllib.request.Request('http://{collector}:8080/v1/events', data=sys.stdin.buffer.read(),"
        " headers={'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(r, timeout=10).status)\n"
    )
    out = net.in_jump(["python3", "-c", post], input=body).stdout.strip()
    assert out == "204", out
    raw = workdir / "s3" / BUCKET / "local/uat/aps1"
    deadline = time.monotonic() + 90
    while True:
        text = "".join(p.read_text() for p in raw.rglob("messages-*.txt")) if raw.exists() else ""
        found = {i: text.count(i) for i in ids}
        if all(n >= 1 for n in found.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(n == 1 for n in found.values()), f"each event once in S3: {found}"


def followed(row: dict) -> bool:
    """A row of the dates the follow service keeps loading on the cluster
    (yesterday's and today's collection dates, whose DWD dates reach one
    day further back): the events of the collector test land there, and
    the in-process warehouse has no collector."""
    since = (datetime.now(timezone.utc).date() - timedelta(days=3)).isoformat()
    return str(row.get("dt", "")) >= since


def rows(net, deploy, warehouse: str, table: str) -> list[str]:
    out = tauc_job(net, deploy, ["sql", "--format", "json", f"SELECT * FROM {table}"], warehouse)
    parsed = [json.loads(line) for line in out.splitlines() if line.strip()]
    kept = [json.dumps({k: v for k, v in row.items() if k not in RUN_COLUMNS}, sort_keys=True)
            for row in parsed if not followed(row)]
    return sorted(kept)


def test_daily_runs_on_both_executors_and_matches_in_process(net, deploy, converged, workdir):
    tauc_job(net, deploy, ["sample", "--date", DATE, "--events-per-day", "3000"], "warehouse")
    net.sh("master", f"systemctl start tauc-daily@{DATE}.service", timeout=1200)
    result = show(net, "master", f"tauc-daily@{DATE}.service", ["Result", "ExecMainStatus"])
    assert result == {"Result": "success", "ExecMainStatus": "0"}, result

    # both executors wrote files of the committed partitions
    written = {}
    for h in ("exec1", "exec2"):
        addr = net.hosts[h].address
        metrics = net.sh("master", f"curl -fsS http://{addr}:50053/metrics").stdout
        written[h] = sum(float(v) for v in re.findall(r"^tauc_executor_files_written_total\S* (\S+)$", metrics, re.M))
    assert all(n > 0 for n in written.values()), written
    # ... and files of both are in the committed partitions (a file's name
    # carries its writer: the executor's address and port)
    manifests = list((workdir / "s3" / BUCKET / "warehouse").rglob("_SUCCESS"))
    listed = " ".join(m.read_text() for m in manifests)
    for h in ("exec1", "exec2"):
        writer = net.hosts[h].address.replace(".", "_") + "_50051"
        assert f"-{writer}-" in listed, f"no committed file of {h} ({writer})"

    # the same day in-process (this checkout's tauc-job) into another warehouse
    tauc_job(net, deploy, ["sample", "--date", DATE, "--events-per-day", "3000"], "warehouse-local")
    tauc_job(net, deploy, ["submit", "daily", "--date", DATE], "warehouse-local")
    total = 0
    for table in TABLES:
        cluster, local = rows(net, deploy, "warehouse", table), rows(net, deploy, "warehouse-local", table)
        assert cluster == local, f"{table}: cluster {len(cluster)} rows, in-process {len(local)}"
        total += len(cluster)
    assert total > 3000, total


def test_superset_reads_an_ads_table_through_flight_sql(net, deploy, converged):
    sql = ("SELECT target_type, CAST(sum(clicks) AS BIGINT) AS clicks FROM ads_trk_target_click_1d "
           "GROUP BY target_type ORDER BY target_type")
    expected = [json.loads(line) for line in tauc_job(net, deploy, ["sql", "--format", "json", sql], "warehouse")
                .splitlines() if line.strip()]
    assert expected, "the ADS table has rows"
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import superset_api\n"
        "print(json.dumps(superset_api.query(sys.argv[2], sys.argv[3], 'tauc', sys.argv[4])))\n"
    )
    url = f"http://{net.hosts['bi'].address}:8088"
    out = net.in_jump([sys.executable, "-c", code, str(Path(__file__).parent), url,
                       deploy.admin_password, sql]).stdout
    got = json.loads(out)
    assert [[r["target_type"], r["clicks"]] for r in expected] == [list(r.values()) if isinstance(r, dict)
                                                                  else list(r) for r in got]


def test_an_artifact_that_does_not_match_its_checksum_is_refused(net, deploy, converged):
    before = show(net, "exec1", "tauc-executor", ["ExecStart"])["ExecStart"]
    p, _ = deploy.playbook("site.yml", "--limit", "exec1", "-e", f"tauc_version={VERSION2}",
                           "-e", "tauc_artifact_sha256=" + "0" * 64, fail_ok=True)
    assert p.returncode != 0 and "refusing to install it" in p.stdout, p.stdout[-3000:]
    assert show(net, "exec1", "tauc-executor", ["ExecStart"])["ExecStart"] == before
    assert net.sh("exec1", f"test -e /opt/tauc/releases/tauc-{VERSION2}", check=False).returncode != 0


def test_rolling_upgrade_of_the_executors_while_a_job_runs(net, deploy, converged, timings):
    day = "2024-06-20"
    tauc_job(net, deploy, ["sample", "--date", day, "--events-per-day", "30000"], "warehouse")
    unit = f"tauc-daily@{day}.service"
    roll: dict = {}
    thread = threading.Thread(target=lambda: roll.update(
        zip(("run", "took"), deploy.playbook("site.yml", "--limit", "tauc_executor", "-e", f"tauc_version={VERSION2}"))))
    thread.start()
    # start the job once the new release is unpacked on the first executor:
    # its restart comes seconds later, the second one's after that
    while net.sh("exec1", f"test -x /opt/tauc/releases/tauc-{VERSION2}/bin/tauc-executor", check=False).returncode:
        assert thread.is_alive(), "the roll ended before it unpacked the release"
        time.sleep(0.5)
    began = time.monotonic_ns() // 1000  # CLOCK_MONOTONIC, as systemd's timestamps on every host
    net.sh("master", f"systemctl start --no-block {unit}")
    thread.join()
    assert "took" in roll, "the roll failed (see its log)"
    timings["roll a new release over 2 executors"] = f"{roll['took']:.0f} s"
    restarts = {}
    for h in ("exec1", "exec2"):
        p = show(net, h, "tauc-executor", ["ExecStart", "ActiveState", "ActiveEnterTimestampMonotonic"])
        assert VERSION2 in p["ExecStart"] and p["ActiveState"] == "active", (h, p)
        assert net.sh(h, f"curl -fsS http://{net.hosts[h].address}:50053/readyz", check=False).returncode == 0
        restarts[h] = int(p["ActiveEnterTimestampMonotonic"])
    deadline = time.monotonic() + 900
    while (s := show(net, "master", unit, ["ActiveState", "Result"]))["ActiveState"] in ("activating", "active"):
        assert time.monotonic() < deadline, f"{unit} still running: {s}"
        time.sleep(0.5)
    ended = time.monotonic_ns() // 1000
    during = [h for h, t in restarts.items() if began < t < ended]
    assert during, f"no executor restarted while the job ran ({began}..{ended}: {restarts})"
    timings["the job that ran during the roll"] = (
        f"{s['Result']} ({len(during)} of 2 executors restarted while it ran, {(ended - began) / 1e6:.0f} s)")
    if s["Result"] != "success":
        # nothing stuck: the same day again, on the upgraded executors, commits
        net.sh("master", f"systemctl start {unit}", timeout=1200)
        assert show(net, "master", unit, ["Result"])["Result"] == "success"
        timings["its re-run"] = "success"
