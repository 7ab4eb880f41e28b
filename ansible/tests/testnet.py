"""A test network of hosts on one machine, for converging the playbooks.

Each host is a network namespace with one address on a private bridge (the
bridge lives in a namespace of its own, so the machine's own network sees
none of it). The hosts Ansible configures also get their own filesystem
root -- an overlay over this machine's root, booted by ``systemd-nspawn``
with systemd as PID 1 and sshd running -- so the roles' users, files and
units land on that host alone and the services run under real systemd.
Infrastructure hosts (the S3 server, the broker) are plain processes in
their namespace. Needs root, iproute2 and systemd-container.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.231.200"

# Units of this machine's image that a test host does not need at boot.
MASKED_UNITS = [
    "postgresql.service",
    "postgresql@15-main.service",
    "docker.service",
    "docker.socket",
    "containerd.service",
    "e2scrub_reap.service",
    "console-getty.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
]


def run(argv, check=True, **kw) -> subprocess.CompletedProcess:
    """Runs a command, capturing its output; a failure names the command."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run([str(a) for a in argv], **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@dataclass
class Host:
    name: str
    address: str
    booted: bool  # a filesystem root and systemd (configured by Ansible)
    netns: str = ""
    root: Path | None = None
    nspawn: subprocess.Popen | None = None
    procs: list = field(default_factory=list)

    def leader(self) -> int:
        """PID 1 of the booted host, as this machine sees it."""
        out = run(["pgrep", "-P", self.nspawn.pid]).stdout.split()
        return int(out[0])


class TestNet:
    """The bridge, the hosts, and ways to run commands on them."""

    def __init__(self, workdir: Path, prefix: str, hosts: dict[str, tuple[int, bool]]):
        self.workdir = workdir
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.hosts = {
            name: Host(name, f"{SUBNET}.{octet}", booted, netns=f"{prefix}-{name}")
            for name, (octet, booted) in hosts.items()
        }
        self.ssh_key = workdir / "id_ed25519"

    # -- life cycle -------------------------------------------------------
    def up(self):
        # every booted host's systemd holds inotify instances of its own;
        # the default of 128 per user runs out after a few hosts
        limit = Path("/proc/sys/fs/inotify/max_user_instances")
        if int(limit.read_text()) < 1024:
            limit.write_text("1024\n")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.ssh_key])
        run(["ip", "netns", "add", self.switch])
        run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        for i, host in enumerate(self.hosts.values()):
            self._wire(host, i)
        for host in self.hosts.values():
            if host.booted:
                self._boot(host)
        for host in self.hosts.values():
            if host.booted:
                self.wait_port("jump", host.address, 22, timeout=60)

    def _wire(self, host: Host, i: int):
        run(["ip", "netns", "add", host.netns])
        run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        outer = f"{self.prefix[:6]}v{i}"
        run(["ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", host.netns])
        run(["ip", "link", "set", outer, "netns", self.switch])
        run(["ip", "-n", self.switch, "link", "set", outer, "master", "br0", "up"])
        run(["ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0"])
        run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])

    def _boot(self, host: Host):
        base = self.workdir / "hosts" / host.name
        upper, work, root = base / "upper", base / "work", base / "root"
        for d in (upper, work, root):
            d.mkdir(parents=True)
        run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", root])
        host.root = root
        (root / "etc/machine-id").unlink(missing_ok=True)
        (root / "etc/machine-id").write_text(run(["systemd-id128", "new"]).stdout)
        (root / "etc/hostname").write_text(host.name + "\n")
        for unit in MASKED_UNITS:
            link = root / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        keys = base / "authorized_keys"
        keys.write_text(Path(f"{self.ssh_key}.pub").read_text())
        log = open(base / "console.log", "w")
        host.nspawn = subprocess.Popen(
            [
                "systemd-nspawn", "-D", root, "-b", "--register=no", "--keep-unit",
                f"--machine={self.prefix}-{host.name}", f"--hostname={host.name}",
                f"--network-namespace-path=/run/netns/{host.netns}",
                "--console=passive", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
                # the hosts see neither this checkout nor the tools in root's home
                "--tmpfs=/work", "--tmpfs=/root:mode=0700",
                f"--bind-ro={keys}:/root/.ssh/authorized_keys",
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )

    def start(self, host: str, argv, log: Path) -> subprocess.Popen:
        """Starts a process in a plain host's namespace."""
        h = self.hosts[host]
        out = open(log, "w")
        p = subprocess.Popen(["ip", "netns", "exec", h.netns, *map(str, argv)],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        h.procs.append(p)
        return p

    def down(self):
        for host in self.hosts.values():
            for p in host.procs:
                p.kill()
                p.wait()
            if host.nspawn and host.nspawn.poll() is None:
                # SIGKILL to the host's PID 1 ends everything in it (killing
                # nspawn alone would leave the host's systemd running)
                for pid in run(["pgrep", "-P", host.nspawn.pid], check=False).stdout.split():
                    os.kill(int(pid), signal.SIGKILL)
                host.nspawn.wait()
        time.sleep(0.5)
        for host in self.hosts.values():
            if host.root and os.path.ismount(host.root):
                run(["umount", "-R", "-l", host.root], check=False)
            run(["ip", "netns", "del", host.netns], check=False)
        run(["ip", "netns", "del", self.switch], check=False)

    # -- commands ---------------------------------------------------------
    def sh(self, host: str, script: str, check=True, timeout=600) -> subprocess.CompletedProcess:
        """Runs a shell script on a host: inside a booted host (all its
        namespaces, as root), or in a plain host's network namespace."""
        h = self.hosts[host]
        if h.booted:
            argv = ["nsenter", "-t", h.leader(), "-a", "/bin/sh", "-c", script]
        else:
            argv = ["ip", "netns", "exec", h.netns, "/bin/sh", "-c", script]
        return run(argv, check=check, timeout=timeout)

    def sh_netns(self, host: str, script: str, check=True) -> subprocess.CompletedProcess:
        """Runs a shell script in a host's network namespace only (this
        machine's files and tools: the test's own view of the host)."""
        return run(["ip", "netns", "exec", self.hosts[host].netns, "/bin/sh", "-c", script], check=check)

    def can_connect(self, src: str, address: str, port: int, timeout=2.0) -> bool:
        """Whether a TCP connection from host `src` to address:port is accepted."""
        code = (
            "import socket,sys\n"
            f"s=socket.socket(); s.settimeout({timeout})\n"
            f"sys.exit(0 if s.connect_ex(({address!r},{port}))==0 else 1)\n"
        )
        h = self.hosts[src]
        if h.booted:
            argv = ["nsenter", "-t", h.leader(), "-n", "python3", "-c", code]
        else:
            argv = ["ip", "netns", "exec", h.netns, "python3", "-c", code]
        return run(argv, check=False, timeout=timeout + 10).returncode == 0

    def wait_port(self, src: str, address: str, port: int, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.can_connect(src, address, port, timeout=1):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{address}:{port} did not answer {src} within {timeout}s")

    def in_jump(self, argv, **kw) -> subprocess.CompletedProcess:
        """Runs a command on the jump host (the Ansible controller)."""
        return run(["ip", "netns", "exec", self.hosts["jump"].netns, *argv], **kw)


def free_prefix() -> str:
    """A namespace prefix no other run on this machine uses."""
    for i in range(100):
        p = f"tdp{os.getpid() % 1000}{i}"
        if not Path(f"/run/netns/{p}-sw").exists():
            return p
    raise RuntimeError("no free namespace prefix")


def require_root_tools():
    missing = [t for t in ("ip", "systemd-nspawn", "nsenter", "nft", "ssh-keygen") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        raise RuntimeError(
            f"the deploy tests need root and {missing or 'nothing else'}: run scripts/test-deploy "
            "(it installs them)"
        )
