"""The rule table (playbooks/group_vars/all/network.yml) as nftables rules
on the test hosts: the security groups ec2.yml makes, enforced here.

Each booted host accepts loopback, replies to its own connections, ICMP,
and the table's rules whose `to` names one of its groups, from the
addresses of the `from` groups' hosts or the named CIDRs; any other new
connection is rejected with a TCP reset (a security group drops it
silently; a reset only makes the test's refusals quick)."""

from __future__ import annotations


def allowed(rules: dict, groups: dict[str, list[str]], cidrs: dict[str, str], addresses: dict[str, str]):
    """{(host, port): [source CIDRs]} for every host the table opens."""
    out: dict[tuple[str, int], list[str]] = {}
    for rule in rules["tauc_ingress_rules"]:
        port = rules["tauc_ports"][rule["port"]]
        sources = []
        for src in rule["from"]:
            if src.startswith("cidr:"):
                sources.append(cidrs[src.removeprefix("cidr:")])
            else:
                sources += [f"{addresses[h]}/32" for h in groups[src]]
        for group in rule["to"]:
            for host in groups[group]:
                out.setdefault((host, port), []).extend(sources)
    return out


def ruleset(host: str, opened: dict) -> str:
    lines = [
        "flush ruleset",
        "table inet tauc {",
        "  chain input {",
        "    type filter hook input priority 0; policy drop;",
        "    iif lo accept",
        "    ct state established,related accept",
        "    meta l4proto { icmp, ipv6-icmp } accept",
    ]
    for (h, port), sources in sorted(opened.items()):
        if h == host:
            lines.append(f"    ip saddr {{ {', '.join(sorted(set(sources)))} }} tcp dport {port} accept")
    lines += ["    meta l4proto tcp reject with tcp reset", "    reject", "  }", "}"]
    return "\n".join(lines) + "\n"


def apply(net, rules: dict, groups: dict[str, list[str]], cidrs: dict[str, str]):
    addresses = {name: h.address for name, h in net.hosts.items()}
    opened = allowed(rules, groups, cidrs, addresses)
    for name, host in net.hosts.items():
        if host.booted:
            path = net.workdir / f"nft-{name}.conf"
            path.write_text(ruleset(name, opened))
            net.sh_netns(name, f"nft -f {path}")
    return opened
