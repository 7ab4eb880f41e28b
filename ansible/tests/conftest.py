"""Fixtures of the deploy tests: the release artifacts, the test network with
its firewalls, the test vault, the inventory, and a way to run playbooks.

Run through scripts/test-deploy (it installs Ansible, the linters, moto and
the Debian packages first). KEEP_TEST_DIRS=1 keeps the working directory
(host roots, logs, inventory) and prints where.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import certs  # noqa: E402
import firewall  # noqa: E402
from testnet import TestNet, free_prefix, require_root_tools, run  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("TAUC_TOOLS_CACHE", Path.home() / ".cache/tauc/tools"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")).resolve() / "debug"
BUCKET = "tauc-deploy"
S3_KEY, S3_SECRET = "tauc-deploy-key", "tauc-deploy-secret-" + secrets.token_hex(8)

# name: (last octet, booted with its own root and systemd)
HOSTS = {
    "jump": (2, False),  # the Ansible controller, the office and the load balancer
    "master": (10, True),
    "exec1": (11, True),
    "exec2": (12, True),
    "collector": (20, True),
    "s3": (30, False),
    "kafka": (31, False),
    "bi": (40, True),  # the Superset host
}
GROUPS = {
    "tauc_scheduler": ["master"],
    "tauc_executor": ["exec1", "exec2"],
    "tauc_collector": ["collector"],
    "superset": ["bi"],
}
VERSION, VERSION2 = "0.0.0-deploytest1", "0.0.0-deploytest2"


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="tauc-deploy-", dir="/var/tmp"))
    yield d
    if os.environ.get("KEEP_TEST_DIRS"):
        print(f"\nkeeping {d}", file=sys.stderr)
    else:
        shutil.rmtree(d, ignore_errors=True)


def tool(name: str) -> Path:
    p = REPO / ".tools/bin" / name
    if not p.exists():
        pytest.fail(f"{p} is missing: run scripts/install-test-tools")
    return p


def binary(name: str) -> Path:
    p = TARGET / name
    if not p.exists():
        pytest.fail(f"{p} is missing: run `cargo build --bins` (scripts/test does)")
    return p


@pytest.fixture(scope="session")
def artifacts(workdir):
    """Two releases of the built binaries (the same code under two versions:
    the second is the 'new binary' a rolling upgrade installs)."""
    # DEPLOY_TEST_DIST: reuse the artifacts of an earlier run (a developer's
    # shortcut while changing the roles; the binaries must be the same)
    if os.environ.get("DEPLOY_TEST_DIST"):
        return Path(os.environ["DEPLOY_TEST_DIST"])
    out = workdir / "dist"
    for v in (VERSION, VERSION2):
        run([REPO / "scripts/release", "--profile", "dev", "--no-build", "--fast-gzip", "--version", v, "--out", out],
            cwd=REPO, env={**os.environ, "CARGO_TARGET_DIR": str(TARGET.parent)})
    return out


@pytest.fixture(scope="session")
def rules():
    """The rule table, read from the file ec2.yml also reads."""
    text = (ANSIBLE / "playbooks/group_vars/all/network.yml").read_text()
    return yaml.safe_load(text)


@pytest.fixture(scope="session")
def net(workdir, rules):
    require_root_tools()
    n = TestNet(workdir, free_prefix(), HOSTS)
    try:
        n.up()
        firewall.apply(n, rules, GROUPS, cidrs())
        s3dir = workdir / "s3"
        (s3dir / BUCKET).mkdir(parents=True)
        n.start("s3", [tool("s3s-fs"), "--host", n.hosts["s3"].address, "--port", 9000,
                       "--access-key", S3_KEY, "--secret-key", S3_SECRET, s3dir], workdir / "s3s-fs.log")
        kafka = f"tcp://{n.hosts['kafka'].address}:9092"
        n.start("kafka", [tool("tansu"), "broker", "--storage-engine", "memory://tansu/",
                          "--listener-url", kafka, "--advertised-listener-url", kafka], workdir / "tansu.log")
        wheels = CACHE / "superset-wheels"
        n.start("jump", [sys.executable, "-m", "http.server", "--bind", n.hosts["jump"].address,
                         "--directory", wheels, 8000], workdir / "wheels-http.log")
        n.wait_port("jump", n.hosts["s3"].address, 9000)
        n.wait_port("jump", n.hosts["kafka"].address, 9092)
        n.wait_port("jump", n.hosts["jump"].address, 8000)
        yield n
    finally:
        n.down()


def cidrs() -> dict:
    jump = f"10.231.200.{HOSTS['jump'][0]}/32"
    return {"jump": jump, "office": jump, "load_balancer": jump}


class Deploy:
    """The test inventory and vault, and ansible-playbook runs from the jump host."""

    def __init__(self, net: TestNet, workdir: Path, artifacts: Path):
        self.net = net
        self.dir = workdir / "inventory"
        self.artifacts = artifacts
        self.vault_pass = workdir / "vault-pass"
        self.vault_pass.write_text(secrets.token_urlsafe(24) + "\n")
        self.vault_pass.chmod(0o600)
        self.sql_password = secrets.token_urlsafe(18)
        self.admin_password = secrets.token_urlsafe(18)
        self.logs = workdir / "ansible"
        self.logs.mkdir()
        self.runs = 0
        self._write()

    def _write(self):
        hosts = self.net.hosts
        inv = {"all": {"children": {g: {"hosts": {h: {"ansible_host": hosts[h].address,
                                                      "tauc_private_address": hosts[h].address}
                                                  for h in members}}
                                    for g, members in GROUPS.items()}}}
        gv = self.dir / "group_vars/all"
        gv.mkdir(parents=True)
        (self.dir / "hosts.yml").write_text(yaml.safe_dump(inv))
        main = {
            "ansible_user": "root",
            "ansible_become": False,
            "ansible_ssh_private_key_file": str(self.net.ssh_key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "tauc_env": "uat",
            "tauc_regions": ["aps1"],
            "tauc_aws_region": "us-east-1",
            "tauc_bucket": BUCKET,
            "tauc_raw_root": f"s3://{BUCKET}/local",
            "tauc_warehouse": f"s3://{BUCKET}/warehouse",
            "tauc_s3_endpoint": f"http://{hosts['s3'].address}:9000",
            "tauc_s3_allow_http": True,
            "tauc_kafka_brokers": f"{hosts['kafka'].address}:9092",
            "tauc_cluster_tls": True,
            "tauc_version": VERSION,
            "tauc_common_artifact": str(self.artifacts) + "/tauc-{{ tauc_common_version }}-x86_64-linux.tar.gz",
            "tauc_cidrs": cidrs(),
            "tauc_collector_allowed_origins": ["http://portal.test"],
            "tauc_uploader_max_wait": "2s",
            "tauc_executor_vcores": 2,
            # a restarted executor's old registration (and the shuffle output
            # a running job loses with it) is given up after this long
            "tauc_executor_heartbeat_secs": 5,
            "tauc_scheduler_executor_timeout_secs": 20,
            "tauc_executor_memory_limit": "1G",
            "tauc_executor_memory_max": "3G",
            "tauc_scheduler_job_memory_limit": "1G",
            "tauc_follow_every": "20s",
            "superset_pip_extra_args": f"--no-index --find-links http://{hosts['jump'].address}:8000/",
            "superset_tauc_sql_user": "superset",
        }
        (gv / "main.yml").write_text(yaml.safe_dump(main))
        ca = certs.CA()
        vault = {
            "vault_tauc_sql_users_file": self._users_file(),
            "vault_tauc_cluster_ca": ca.cert_pem,
            "vault_tauc_s3_access_key_id": S3_KEY,
            "vault_tauc_s3_secret_access_key": S3_SECRET,
            "vault_superset_secret_key": secrets.token_urlsafe(42),
            "vault_superset_admin_password": self.admin_password,
            "vault_superset_tauc_sql_password": self.sql_password,
        }
        self._vault(gv / "vault.yml", vault)
        for h in [h for members in GROUPS.values() for h in members]:
            cert, key = ca.issue(h, hosts[h].address)
            hv = self.dir / "host_vars" / h
            hv.mkdir(parents=True)
            self._vault(hv / "vault.yml", {"vault_tauc_cluster_cert": cert, "vault_tauc_cluster_key": key})
        # the client certificate tauc-job uses from the controller in the tests
        self.client_cert = ca.issue("jump", hosts["jump"].address)
        self.ca_pem = ca.cert_pem

    def _users_file(self) -> str:
        path = self.dir.parent / "users.toml"
        subprocess.run([binary("tauc-job"), "users", "add", "superset", "--users", path],
                       input=self.sql_password + "\n", text=True, check=True, capture_output=True)
        return path.read_text()

    def _vault(self, path: Path, data: dict):
        path.write_text(yaml.safe_dump(data))
        run([VENV_BIN / "ansible-vault", "encrypt", "--vault-password-file", self.vault_pass, path])

    def playbook(self, playbook: str, *extra: str, fail_ok=False) -> tuple[subprocess.CompletedProcess, float]:
        """Runs a playbook from the jump host; returns the run and its seconds
        (a failed run fails the test unless `fail_ok`)."""
        self.runs += 1
        env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
               # a fresh SSH control path: a master connection of an earlier run to
               # the same address would be reused
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.logs / "cp"), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
        argv = [VENV_BIN / "ansible-playbook", "-i", self.dir, "--vault-password-file", self.vault_pass,
                ANSIBLE / "playbooks" / playbook, *extra]
        start = time.monotonic()
        p = self.net.in_jump(argv, check=False, cwd=ANSIBLE, env=env, timeout=1800)
        took = time.monotonic() - start
        log = self.logs / f"{self.runs:02d}-{playbook}.log"
        log.write_text(p.stdout + p.stderr)
        if p.returncode != 0 and not fail_ok:
            pytest.fail(f"ansible-playbook {playbook} {' '.join(extra)} exited {p.returncode} "
                        f"(log: {log}):\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}")
        return p, took


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    out = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        m = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line.strip())
        if m:
            out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


@pytest.fixture(scope="session")
def deploy(net, workdir, artifacts):
    return Deploy(net, workdir, artifacts)


@pytest.fixture(scope="session")
def timings():
    """Measured durations, printed at the end of the run (and kept for the note)."""
    t: dict[str, str] = {}
    yield t
    if t:
        print("\ndeploy timings:\n" + "\n".join(f"  {k}: {v}" for k, v in t.items()), file=sys.stderr)


@pytest.fixture(scope="session")
def converged(deploy, timings):
    """site.yml applied once to the whole test network."""
    p, took = deploy.playbook("site.yml")
    timings["first converge"] = f"{took:.0f} s"
    return p


def tauc_job(net: TestNet, deploy: Deploy, args: list[str], warehouse: str, timeout=900) -> str:
    """`tauc-job ARGS` on the jump host (this checkout's build), against the
    test network's S3 server; returns stdout, fails the test on exit != 0."""
    s3 = net.hosts["s3"].address
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
        "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1",
        "TAUC_S3_ENDPOINT": f"http://{s3}:9000", "TAUC_S3_ALLOW_HTTP": "true",
        "TAUC_RAW_ROOT": f"s3://{BUCKET}/local", "TAUC_WAREHOUSE": f"s3://{BUCKET}/{warehouse}",
        "TAUC_ENV": "uat", "TAUC_REGIONS": "aps1",
    }
    p = net.in_jump([binary("tauc-job"), *args], check=False, env=env, timeout=timeout, cwd=net.workdir)
    if p.returncode != 0:
        pytest.fail(f"tauc-job {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout
