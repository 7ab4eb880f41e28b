"""The playbooks and roles pass the linters, and both playbooks parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ANSIBLE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def check(argv):
    p = subprocess.run([str(a) for a in argv], cwd=ANSIBLE, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(map(str, argv))}:\n{p.stdout[-6000:]}\n{p.stderr[-3000:]}"


def test_yamllint():
    check([BIN / "yamllint", "--strict", "."])


def test_ansible_lint_production_profile():
    check([BIN / "ansible-lint", "--profile", "production", "--offline"])


def test_playbooks_parse():
    for pb in ("site.yml", "ec2.yml"):
        check([BIN / "ansible-playbook", "-i", "inventories/dev", "--syntax-check", f"playbooks/{pb}"])
