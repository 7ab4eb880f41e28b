"""The rule table, enforced: on the test network every host's firewall is
made from playbooks/group_vars/all/network.yml (before the converge, so
the whole system above ran through it). Here each port the table opens
is dialled from every host: it answers exactly the sources the table
names."""

from __future__ import annotations

import firewall
from conftest import GROUPS, HOSTS, cidrs


def listening(net, host: str) -> set[int]:
    out = net.sh_netns(host, "ss -Htln").stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def test_each_open_port_answers_exactly_its_sources(net, rules, converged):
    addresses = {name: h.address for name, h in net.hosts.items()}
    opened = firewall.allowed(rules, GROUPS, cidrs(), addresses)
    checked = 0
    for (host, port), sources in sorted(opened.items()):
        if port not in listening(net, host):
            continue  # e.g. the executors' task-push port: not opened in pull mode
        allowed = {s.removesuffix("/32") for s in sources}
        for src in HOSTS:
            if src == host:
                continue
            expect = addresses[src] in allowed
            got = net.can_connect(src, addresses[host], port)
            assert got == expect, f"{src} -> {host}:{port}: {'answered' if got else 'refused'}, the table says {'answer' if expect else 'refuse'}"
            checked += 1
    assert checked > 40, checked


def test_the_named_cases(net, converged):
    a = {name: h.address for name, h in net.hosts.items()}
    # the Flight SQL port answers the Superset host and refuses an executor host
    assert net.can_connect("bi", a["master"], 50060)
    assert not net.can_connect("exec1", a["master"], 50060)
    # the scheduler's port answers executors and refuses the collector host
    assert net.can_connect("exec2", a["master"], 50050)
    assert not net.can_connect("collector", a["master"], 50050)
    # SSH from the jump host only
    assert net.can_connect("jump", a["exec1"], 22)
    assert not net.can_connect("master", a["exec1"], 22)
    assert not net.can_connect("bi", a["collector"], 22)
    # Superset from the office, the collector from the load balancer
    assert net.can_connect("jump", a["bi"], 8088)
    assert not net.can_connect("exec1", a["bi"], 8088)
    assert not net.can_connect("master", a["collector"], 8080)
