"""playbooks/ec2.yml against a local AWS API stand-in (moto in server mode).

The playbook runs with the dev inventory's variables against a moto server
on 127.0.0.1; the test then reads everything back through the API and
checks it against what it works out itself:
- each security group's ingress against the rule table
  (playbooks/group_vars/all/network.yml, read here as YAML) and the
  inventory's tauc_cidrs;
- each IAM policy statement against the issue's expectations (executors and
  the scheduler: raw read + warehouse read/write; SQL server: warehouse
  read; uploader: raw write (+ read back of its own objects); collector and
  Superset: nothing), from the inventory's bucket and prefixes;
- instances per group, their tags, profile, IMDSv2, encrypted root volume,
  spot for the executors; the dynamic inventory (inventories/dev/aws_ec2.yml);
- a second run changes nothing; tauc_ec2_state=absent terminates the
  executors only.
The tests of this module run in order (each builds on the one before).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import jinja2
import pytest
import yaml

ANSIBLE = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
INVENTORY = ANSIBLE / "inventories/dev"
GROUPS = ["tauc_scheduler", "tauc_executor", "tauc_collector", "superset"]
# the S3 policies each group's role must carry (issue 25), by service
GROUP_SERVICES = {
    "tauc_scheduler": {"scheduler", "sql"},
    "tauc_executor": {"executor"},
    "tauc_collector": {"uploader"},  # the collector itself: none
    "superset": set(),
}
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def inventory_vars() -> dict:
    """The dev inventory's group vars, their {{ }} references resolved."""
    raw = load_yaml(INVENTORY / "group_vars/all/main.yml")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    out = dict(raw)
    for _ in range(3):
        out = {k: env.from_string(v).render(**out) if isinstance(v, str) else v for k, v in out.items()}
    return out


def s3_split(url: str) -> tuple[str, str]:
    m = re.fullmatch(r"s3://([^/]+)/*(.*?)/*", url)
    assert m, url
    return m.group(1), m.group(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ec2")


@pytest.fixture(scope="module")
def moto(work):
    """A moto server on a free port of 127.0.0.1; stopped at the end."""
    port = free_port()
    log = open(work / "moto.log", "wb")
    p = subprocess.Popen([VENV_BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start: {(work / 'moto.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


class Aws:
    """boto3 clients on the moto server, in the inventory's region."""

    def __init__(self, url: str, region: str):
        self.ec2 = boto3.client("ec2", endpoint_url=url, region_name=region, **CREDS)
        self.iam = boto3.client("iam", endpoint_url=url, region_name=region, **CREDS)


@pytest.fixture(scope="module")
def ctx(moto, work):
    """Everything the tests share: the inventory's values, the settings,
    the test inventory and the moto objects the run needs (a subnet, an AMI)."""
    inv = inventory_vars()
    settings = load_yaml(ANSIBLE / "playbooks/group_vars/all/ec2.yml")
    table = load_yaml(ANSIBLE / "playbooks/group_vars/all/network.yml")
    region = settings["tauc_ec2_region_names"][inv["tauc_aws_region"]]
    aws = Aws(moto, inv["tauc_aws_region"])
    subnet = aws.ec2.describe_subnets()["Subnets"][0]
    # an image the default AMI lookup finds (name pattern, owner "self")
    base = aws.ec2.describe_images(ImageIds=["ami-785db401"])["Images"][0]
    ami = aws.ec2.copy_image(SourceImageId=base["ImageId"], SourceRegion=inv["tauc_aws_region"],
                             Name=settings["tauc_ec2_ami_name"].replace("*", "20990101-test"))["ImageId"]
    # the test inventory: the dev inventory's vars, localhost only
    inv_dir = work / "inventory"
    shutil.copytree(INVENTORY / "group_vars", inv_dir / "group_vars")
    localhost = {"localhost": {"ansible_connection": "local"}}
    (inv_dir / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": localhost}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    })
    extra = {
        "tauc_aws_endpoint_url": moto,
        "tauc_ec2_subnet_id": subnet["SubnetId"],
        "tauc_ec2_ami_owner": "self",
    }
    return dict(inv=inv, settings=settings, table=table, region=region, aws=aws, url=moto,
                subnet=subnet, ami=ami, inv_dir=inv_dir, env=env, extra=extra, work=work,
                prefix=f"tauc-{inv['tauc_env']}-{region}")


def playbook(ctx, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(ctx["inv_dir"]), "playbooks/ec2.yml",
            "-e", json.dumps(ctx["extra"]), *args]
    p = subprocess.run(argv, cwd=ANSIBLE, env=ctx["env"], capture_output=True, text=True, timeout=300)
    n = len(list(ctx["work"].glob("run-*.log")))
    (ctx["work"] / f"run-{n + 1}.log").write_text(p.stdout + p.stderr)
    if check:
        assert p.returncode == 0, \
            f"ec2.yml {' '.join(args)} exited {p.returncode}:\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}"
    return p


def recap(out: str) -> dict[str, int]:
    line = next(ln for ln in out.split("PLAY RECAP", 1)[1].splitlines() if ln.startswith("localhost"))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def instances(ctx, group: str | None = None, states=("pending", "running", "stopping", "stopped")) -> list[dict]:
    filters = [{"Name": "tag:tauc:env", "Values": [ctx["inv"]["tauc_env"]]},
               {"Name": "instance-state-name", "Values": list(states)}]
    if group:
        filters.append({"Name": "tag:tauc:group", "Values": [group]})
    res = ctx["aws"].ec2.describe_instances(Filters=filters)["Reservations"]
    return [i for r in res for i in r["Instances"]]


def tags(obj: dict) -> dict:
    return {t["Key"]: t["Value"] for t in obj.get("Tags", [])}


# --- the runs ---------------------------------------------------------------

def test_syntax_check(ctx):
    p = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(ctx["inv_dir"]), "--syntax-check",
                        "playbooks/ec2.yml"], cwd=ANSIBLE, env=ctx["env"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_refuses_open_ingress(ctx):
    """A tauc_cidrs entry of 0.0.0.0/0 stops the run before anything is made."""
    cidrs = dict(ctx["inv"]["tauc_cidrs"], office="0.0.0.0/0")
    p = playbook(ctx, "-e", json.dumps({"tauc_cidrs": cidrs}), check=False)
    assert p.returncode != 0 and "none may be a /0" in p.stdout, p.stdout[-3000:]
    assert not ctx["aws"].ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{ctx['prefix']}-*"]}])["SecurityGroups"]


def test_launch(ctx):
    p = playbook(ctx)
    assert recap(p.stdout)["failed"] == 0


# --- what the run made ------------------------------------------------------

def security_groups(ctx) -> dict[str, dict]:
    sgs = ctx["aws"].ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{ctx['prefix']}-*"]}])["SecurityGroups"]
    return {sg["GroupName"]: sg for sg in sgs}


def test_security_groups_are_the_rule_table(ctx):
    table, cidrs, prefix = ctx["table"], ctx["inv"]["tauc_cidrs"], ctx["prefix"]
    sgs = security_groups(ctx)
    assert set(sgs) == {f"{prefix}-{g}" for g in GROUPS}
    name_of = {sg["GroupId"]: name for name, sg in sgs.items()}
    for group in GROUPS:
        # expected: one (port, source) per `from` of each row naming the group in `to`
        expected = set()
        for rule in table["tauc_ingress_rules"]:
            if group not in rule["to"]:
                continue
            port = table["tauc_ports"][rule["port"]]
            for src in rule["from"]:
                if src.startswith("cidr:"):
                    expected.add((port, "cidr", cidrs[src[len("cidr:"):]]))
                else:
                    expected.add((port, "sg", f"{prefix}-{src}"))
        sg = sgs[f"{prefix}-{group}"]
        assert sg["VpcId"] == ctx["subnet"]["VpcId"]
        assert tags(sg)["tauc:group"] == group and tags(sg)["tauc:env"] == ctx["inv"]["tauc_env"]
        actual = set()
        for perm in sg["IpPermissions"]:
            assert perm["IpProtocol"] == "tcp", (group, perm)
            assert perm["FromPort"] == perm["ToPort"], (group, perm)
            assert not perm.get("Ipv6Ranges") and not perm.get("PrefixListIds"), (group, perm)
            for r in perm.get("IpRanges", []):
                assert r["CidrIp"] != "0.0.0.0/0", (group, perm)
                actual.add((perm["FromPort"], "cidr", r["CidrIp"]))
            for r in perm.get("UserIdGroupPairs", []):
                actual.add((perm["FromPort"], "sg", name_of[r["GroupId"]]))
        assert actual == expected, f"{group}: extra {actual - expected}, missing {expected - actual}"


def test_instances(ctx):
    s, inv = ctx["settings"], ctx["inv"]
    profiles = {g: f"{ctx['prefix']}-{g}" for g in GROUPS}
    sg_ids = {name: sg["GroupId"] for name, sg in security_groups(ctx).items()}
    lt = ctx["aws"].ec2.describe_launch_templates(
        LaunchTemplateNames=[f"{ctx['prefix']}-tauc_executor-spot"])["LaunchTemplates"][0]
    version = ctx["aws"].ec2.describe_launch_template_versions(
        LaunchTemplateId=lt["LaunchTemplateId"], Versions=["$Default"])["LaunchTemplateVersions"][0]
    market = version["LaunchTemplateData"]["InstanceMarketOptions"]
    assert market["MarketType"] == "spot"
    assert market["SpotOptions"]["InstanceInterruptionBehavior"] == "terminate"
    for group in GROUPS:
        found = instances(ctx, group)
        assert len(found) == s["tauc_ec2_counts"][group], group
        for i in found:
            t = tags(i)
            assert t["tauc:env"] == inv["tauc_env"] and t["tauc:region"] == ctx["region"], t
            assert t["tauc:group"] == group and t["Name"] == f"{ctx['prefix']}-{group}", t
            assert i["InstanceType"] == s["tauc_ec2_instance_types"][group]
            assert i["ImageId"] == ctx["ami"]
            assert i["SubnetId"] == ctx["subnet"]["SubnetId"]
            assert [g["GroupId"] for g in i["SecurityGroups"]] == [sg_ids[f"{ctx['prefix']}-{group}"]]
            assert i["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/tauc/{profiles[group]}")
            assert i["MetadataOptions"]["HttpTokens"] == "required"
            root = next(b for b in i["BlockDeviceMappings"] if b["DeviceName"] == i["RootDeviceName"])
            vol = ctx["aws"].ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"][0]
            assert vol["Encrypted"] and vol["Size"] == s["tauc_ec2_root_volume_sizes"][group], vol
            # spot: launched from the spot launch template (moto does not mark
            # such instances InstanceLifecycle=spot; AWS does)
            from_template = t.get("aws:ec2launchtemplate:id") == lt["LaunchTemplateId"]
            assert from_template == (group == "tauc_executor"), (group, t)
            if group != "tauc_executor":
                assert i.get("InstanceLifecycle") != "spot"


def statements(doc) -> set:
    """A policy's statements, Sids dropped, as comparable tuples."""
    if isinstance(doc, str):
        doc = json.loads(doc)
    out = set()
    for st in doc["Statement"]:
        listify = lambda v: tuple(sorted([v] if isinstance(v, str) else v))  # noqa: E731
        out.add((st["Effect"], listify(st["Action"]), listify(st["Resource"]),
                 json.dumps(st.get("Condition"), sort_keys=True)))
    return out


def expected_policies(inv) -> dict[str, set]:
    raw_b, raw_p = s3_split(inv["tauc_raw_root"])
    wh_b, wh_p = s3_split(inv["tauc_warehouse"])
    raw_glob, wh_glob = f"{raw_p}/*", f"{wh_p}/*"

    def st(actions, resource, prefix=None):
        cond = {"StringLike": {"s3:prefix": [prefix]}} if prefix else None
        return ("Allow", tuple(sorted(actions)), (resource,), json.dumps(cond, sort_keys=True))

    list_raw = st(["s3:ListBucket"], f"arn:aws:s3:::{raw_b}", raw_glob)
    read_raw = st(["s3:GetObject"], f"arn:aws:s3:::{raw_b}/{raw_glob}")
    list_wh = st(["s3:ListBucket"], f"arn:aws:s3:::{wh_b}", wh_glob)
    read_wh = st(["s3:GetObject"], f"arn:aws:s3:::{wh_b}/{wh_glob}")
    rw_wh = st(["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts"], f"arn:aws:s3:::{wh_b}/{wh_glob}")
    return {
        # raw read + warehouse read/write
        "executor": {list_raw, read_raw, list_wh, rw_wh},
        "scheduler": {list_raw, read_raw, list_wh, rw_wh},
        # warehouse read only
        "sql": {list_wh, read_wh},
        # raw write only: the create-only PUT, and the GET of a key found taken
        "uploader": {st(["s3:PutObject"], f"arn:aws:s3:::{raw_b}/{raw_glob}"),
                     st(["s3:GetObject"], f"arn:aws:s3:::{raw_b}/{raw_glob}")},
    }


def test_iam_roles_profiles_and_policies(ctx):
    iam, prefix = ctx["aws"].iam, ctx["prefix"]
    want = expected_policies(ctx["inv"])
    for group in GROUPS:
        name = f"{prefix}-{group}"
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        assert profile["Path"] == "/tauc/"
        assert [r["RoleName"] for r in profile["Roles"]] == [name]
        role = iam.get_role(RoleName=name)["Role"]
        trust = role["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"] == [{"Sid": "Ec2AssumeRole", "Effect": "Allow",
                                       "Principal": {"Service": "ec2.amazonaws.com"},
                                       "Action": "sts:AssumeRole"}]
        assert not iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"], group
        names = set(iam.list_role_policies(RoleName=name)["PolicyNames"])
        assert names == {f"tauc-{svc}" for svc in GROUP_SERVICES[group]}, group
        allowed = set()
        for svc in GROUP_SERVICES[group]:
            doc = iam.get_role_policy(RoleName=name, PolicyName=f"tauc-{svc}")["PolicyDocument"]
            got = statements(doc)
            assert got == want[svc], f"{group}/{svc}: extra {got - want[svc]}, missing {want[svc] - got}"
            allowed |= got
        # the role is exactly the union of its services' policies
        assert allowed == set().union(*(want[svc] for svc in GROUP_SERVICES[group])), group


def test_dynamic_inventory(ctx):
    """inventories/dev/aws_ec2.yml groups the instances by tauc:group."""
    d = ctx["work"] / "dynamic"
    d.mkdir()
    shutil.copy(INVENTORY / "aws_ec2.yml", d / "aws_ec2.yml")
    p = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(d), "--list"], cwd=ANSIBLE,
                       env={**ctx["env"], "AWS_URL": ctx["url"]}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)

    def plain(v):
        return v["__ansible_unsafe"] if isinstance(v, dict) and "__ansible_unsafe" in v else v

    for group in GROUPS:
        found = {i["InstanceId"]: i["PrivateIpAddress"] for i in instances(ctx, group, states=["running"])}
        assert sorted(out.get(group, {}).get("hosts", [])) == sorted(found), group
        for host, ip in found.items():
            hv = out["_meta"]["hostvars"][host]
            assert plain(hv["tauc_private_address"]) == ip and plain(hv["ansible_host"]) == ip


def test_second_run_changes_nothing(ctx):
    p = playbook(ctx)
    assert recap(p.stdout)["changed"] == 0, p.stdout[-6000:]


def test_absent_terminates_the_executors_only(ctx):
    assert ctx["settings"]["tauc_ec2_terminate_groups"] == ["tauc_executor"]
    before = {g: {i["InstanceId"] for i in instances(ctx, g)} for g in GROUPS}
    playbook(ctx, "-e", "tauc_ec2_state=absent")
    for group in GROUPS:
        now = {i["InstanceId"] for i in instances(ctx, group)}
        if group in ctx["settings"]["tauc_ec2_terminate_groups"]:
            assert not now, group
            gone = instances(ctx, group, states=["shutting-down", "terminated"])
            assert {i["InstanceId"] for i in gone} == before[group]
        else:
            assert now == before[group], group
    # the long-lived parts stay: security groups, roles and profiles
    assert len(security_groups(ctx)) == len(GROUPS)
    for group in GROUPS:
        ctx["aws"].iam.get_instance_profile(InstanceProfileName=f"{ctx['prefix']}-{group}")
