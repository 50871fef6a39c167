"""The deployment files, checked against the code they deploy.

deploy/systemd/*.service and *.timer, Dockerfile, .dockerignore, deploy/docker-compose.yml,
deploy/config.example.yaml and deploy/systemd/counter.env.example name
programs, settings and environment variables; a wrong one would mislead
every user who copies them. Each test derives the truth from the sources
(the option table of common/config.c, the add_executable() targets, the
deadlines in api/main.c) or from the built programs (the config loader run
through `counter-ingest --dry-run`, which loads and validates the whole
configuration and touches no network), never from a copy kept here.

No stack is needed (no Docker engine either): the conftest's autouse
fixtures that need one are overridden below. The programs come from $BIN_DIR (the
test harness points it at build-asan/bin), else build/bin; a missing
program is a failure.

Alone:  python3 -m pytest -v tests/integration/test_deploy_files.py
"""

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # python3-yaml (deploy/install-deps.sh)

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("counter-api", "counter-persister", "counter-applier")
# counterctl partitions, run daily by its timer (a oneshot, not a daemon)
PARTITIONS_UNIT = "counter-partitions"
EXAMPLE = ROOT / "deploy" / "config.example.yaml"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / "deploy" / "systemd" / "counter.env.example"


# conftest.py's autouse fixtures need the stack; these tests read files and
# run programs of their own (whose sanitizer reports fail them through their
# exit status), so they are overridden here by name.
@pytest.fixture(autouse=True)
def _require_stack():
    return None


@pytest.fixture(autouse=True)
def _no_sanitizer_reports():
    yield


# ------------------------------------------------------------ the truth ---


def _int_expr(text):
    """A bound of the option table: digits and '*' only ("16 * 1024")."""
    assert re.fullmatch(r"[0-9 *]+", text), f"unexpected bound {text!r}"
    value = 1
    for part in text.split("*"):
        value *= int(part)
    return value


def option_table():
    """{key: (type, default, min, max)} from common/config.c's options[]."""
    src = (ROOT / "common" / "config.c").read_text()
    m = re.search(r"static const opt_def options\[\] = \{(.*?)\n\};", src, re.S)
    assert m, "options[] not found in common/config.c"
    body = m.group(1)
    entry = re.compile(
        r'\{\s*"([^"]+)"\s*,\s*(OPT_STR|OPT_INT)\s*,\s*O\(\w+\)\s*,'
        r'\s*"([^"]*)"\s*,\s*([^,{}]+?)\s*,\s*([^,{}]+?)\s*\}'
    )
    table = {}
    for key, typ, default, lo, hi in entry.findall(body):
        table[key] = (typ, default, _int_expr(lo), _int_expr(hi))
    # every entry parsed: as many as there are '{"' openers
    assert len(table) == body.count('{"') and len(table) > 20, table
    return table


def env_name(key):
    """config.c's env_name(): "COUNTER_" + key, '.' -> '_', in capitals."""
    return "COUNTER_" + key.replace(".", "_").upper()


def test_env_name_rule_is_config_c_s():
    src = (ROOT / "common" / "config.c").read_text()
    m = re.search(r"static void env_name\(.*?\n\}", src, re.S)
    assert m, "env_name() not found in common/config.c"
    assert '"COUNTER_"' in m.group(0)
    assert "*p == '.' ? '_' : (char)toupper((unsigned char)*p)" in m.group(0)
    assert env_name("server.max_body_bytes") == "COUNTER_SERVER_MAX_BODY_BYTES"


def extra_env_names():
    """COUNTER_* variables read with getenv() outside the option table."""
    names = set()
    for d in ("api", "applier", "persister", "ingest", "common", "ctl"):
        for f in (ROOT / d).glob("*.c"):
            names |= set(re.findall(r'getenv\("(COUNTER_[A-Z0-9_]+)"\)', f.read_text()))
    assert "COUNTER_CONFIG" in names
    return names


def known_env_names():
    return {env_name(k) for k in option_table()} | extra_env_names()


def programs():
    """The executables CMake builds for deployment (not tests, not tools)."""
    names = set()
    for d in ("api", "applier", "persister", "ingest", "ctl"):
        names |= set(
            re.findall(r"add_executable\(([\w-]+)", (ROOT / d / "CMakeLists.txt").read_text())
        )
    assert {"counter-api", "counterctl"} <= names, names
    return names


def bin_dir():
    d = Path(os.environ.get("BIN_DIR") or ROOT / "build" / "bin")
    missing = [p for p in sorted(programs()) if not os.access(d / p, os.X_OK)]
    assert not missing, f"not built in {d}: {missing} (set BIN_DIR or build first)"
    return d


def clean_env(**extra):
    """The caller's environment without COUNTER_* (the harness exports the
    test stack's), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTER_")}
    env.update(extra)
    return env


def load_config(env, cwd=None):
    """Runs the real loader: counter-ingest --dry-run reads no events from
    /dev/null after loading and validating the configuration (exit 2 and one
    line naming the key on error)."""
    return subprocess.run(
        [str(bin_dir() / "counter-ingest"), "--dry-run", "/dev/null"],
        env=env, cwd=cwd or "/", capture_output=True, text=True, timeout=30,
    )


def c_enum(path, name):
    m = re.search(rf"\b{name}\s*=\s*(\d+)", (ROOT / path).read_text())
    assert m, f"{name} not found in {path}"
    return int(m.group(1))


def seconds(text):
    """A systemd or compose duration: 45s, 2s, 1min, 500ms, or bare seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|sec|min|m)?\s*", str(text))
    assert m, f"unexpected duration {text!r}"
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit in ("min", "m") else n


# ------------------------------------------------------- systemd units ---


def read_unit(name, kind="service"):
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string((ROOT / "deploy" / "systemd" / f"{name}.{kind}").read_text())
    return cp


@pytest.mark.parametrize("name", UNITS)
def test_unit_runs_the_built_program(name):
    unit = read_unit(name)
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    svc = unit["Service"]
    assert name in programs()
    assert svc["ExecStart"] == f"/usr/local/bin/{name}"
    assert os.access(bin_dir() / name, os.X_OK)
    # no sd_notify in the code, so systemd cannot wait for readiness
    assert svc["Type"] == "simple"
    for d in ("api", "applier", "persister", "ingest", "common"):
        for f in (ROOT / d).glob("*.c"):
            assert "sd_notify" not in f.read_text(), f"{f} notifies: use Type=notify"


def assert_hardened(svc):
    """The sandboxing every unit of the project carries."""
    for key, want in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ):
        assert svc[key] == want, key


@pytest.mark.parametrize("name", UNITS)
def test_unit_settings(name):
    unit = read_unit(name)
    u, svc = unit["Unit"], unit["Service"]
    assert "network-online.target" in u["After"].split()
    assert "network-online.target" in u["Wants"].split()
    assert svc["Environment"] == "COUNTER_CONFIG=/etc/counter/config.yaml"
    assert svc["EnvironmentFile"] == "-/etc/counter/counter.env"
    assert svc.get("User") == "counter" or svc.get("DynamicUser") == "yes"
    assert svc["Restart"] == "on-failure"
    assert 1 <= seconds(svc["RestartSec"]) <= 30
    assert svc["KillSignal"] == "SIGTERM"
    assert_hardened(svc)
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("name", UNITS)
def test_unit_does_not_restart_on_a_config_error(name):
    """RestartPreventExitStatus=2 must be what the program exits with on a
    bad setting, before it connects anywhere."""
    svc = read_unit(name)["Service"]
    assert svc["RestartPreventExitStatus"] == "2"
    r = subprocess.run(
        [str(bin_dir() / name)],
        env=clean_env(COUNTER_CONFIG=str(EXAMPLE), COUNTER_REDIS_DB="16"),
        cwd="/", capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "redis.db (from COUNTER_REDIS_DB)" in r.stderr


def test_api_unit_waits_for_the_drain_and_has_descriptors():
    svc = read_unit("counter-api")["Service"]
    # api/main.c: drain at most DRAIN_MAX_MS, then flush at most FLUSH_DEADLINE_MS
    longest = (c_enum("api/main.c", "DRAIN_MAX_MS") + c_enum("api/main.c", "FLUSH_DEADLINE_MS")) / 1000
    assert seconds(svc["TimeoutStopSec"]) >= longest + 5, (svc["TimeoutStopSec"], longest)
    # the api wants server.max_connections + FD_RESERVE descriptors
    reserve = c_enum("api/listener.c", "FD_RESERVE")
    example = yaml.safe_load(EXAMPLE.read_text())
    need = max(int(option_table()["server.max_connections"][1]),
               example["server"]["max_connections"]) + reserve
    assert int(svc["LimitNOFILE"]) >= need


def test_persister_and_applier_units_outlast_their_last_commit():
    # persister/main.c gives its last batch 5 s; leave the consumer close room
    assert "ctr_time_mono_ms() + 5000" in (ROOT / "persister" / "main.c").read_text()
    for name in ("counter-persister", "counter-applier"):
        assert seconds(read_unit(name)["Service"]["TimeoutStopSec"]) >= 15, name


def test_units_pass_systemd_analyze_verify(tmp_path):
    """systemd's own parser: unknown keys and bad values are reported on
    stderr (with status 0), so both must be clean. ExecStart is pointed at
    the built programs, which verify requires to exist. On a machine without
    systemd-analyze only the configparser checks above run."""
    analyze = shutil.which("systemd-analyze")
    units = []
    for name in UNITS:
        text = (ROOT / "deploy" / "systemd" / f"{name}.service").read_text()
        text = text.replace(f"/usr/local/bin/{name}", str(bin_dir() / name))
        (tmp_path / f"{name}.service").write_text(text)
        units.append(str(tmp_path / f"{name}.service"))
    # the partitions service runs counterctl; its timer names the service
    text = (ROOT / "deploy" / "systemd" / f"{PARTITIONS_UNIT}.service").read_text()
    text = text.replace("/usr/local/bin/counterctl", str(bin_dir() / "counterctl"))
    (tmp_path / f"{PARTITIONS_UNIT}.service").write_text(text)
    units.append(str(tmp_path / f"{PARTITIONS_UNIT}.service"))
    timer = ROOT / "deploy" / "systemd" / f"{PARTITIONS_UNIT}.timer"
    (tmp_path / timer.name).write_text(timer.read_text())
    units.append(str(tmp_path / timer.name))
    assert len(units) == 5
    if analyze is None:
        return
    r = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_partitions_service_runs_counterctl_partitions_once():
    unit = read_unit(PARTITIONS_UNIT)
    # started by its timer only: no [Install] of its own
    assert set(unit.sections()) == {"Unit", "Service"}
    u, svc = unit["Unit"], unit["Service"]
    assert "network-online.target" in u["After"].split()
    assert "network-online.target" in u["Wants"].split()
    assert svc["Type"] == "oneshot"
    assert "Restart" not in svc  # the next day's run is the retry
    assert svc["ExecStart"] == "/usr/local/bin/counterctl partitions"
    assert "counterctl" in programs()
    # the command exists in the built counterctl (help needs no config)
    r = subprocess.run([str(bin_dir() / "counterctl"), "partitions", "--help"],
                       env=clean_env(COUNTER_CONFIG="/nonexistent.yaml"),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("usage: counterctl partitions"), r
    # the same configuration as the services, and the same user
    assert svc["Environment"] == "COUNTER_CONFIG=/etc/counter/config.yaml"
    assert svc["EnvironmentFile"] == "-/etc/counter/counter.env"
    assert svc["User"] == read_unit("counter-persister")["Service"]["User"]
    # longer than one table's lock wait (10 s in ctl/partitions.c)
    assert "lock_timeout[] = \"10s\"" in (ROOT / "ctl" / "partitions.c").read_text()
    assert seconds(svc["TimeoutStartSec"]) > 4 * 10
    assert_hardened(svc)


def test_partitions_timer_runs_the_service_daily():
    unit = read_unit(PARTITIONS_UNIT, "timer")
    assert set(unit.sections()) == {"Unit", "Timer", "Install"}
    timer = unit["Timer"]
    assert timer["OnCalendar"] == "daily"
    assert timer["Persistent"] == "true"
    assert timer["Unit"] == f"{PARTITIONS_UNIT}.service"
    assert unit["Install"]["WantedBy"] == "timers.target"
    # spread, but well within the day it serves
    assert seconds(timer["RandomizedDelaySec"]) <= 6 * 3600


def test_env_file_example_names_real_settings():
    text = ENV_EXAMPLE.read_text()
    names = re.findall(r"^#?\s*(COUNTER_[A-Z0-9_]+)=", text, re.M)
    assert len(names) >= 5
    unknown = sorted(set(names) - known_env_names())
    assert not unknown, f"not read by any program: {unknown}"
    # the active lines, on top of the example config, load
    active = dict(re.findall(r"^(COUNTER_[A-Z0-9_]+)=(.*)$", text, re.M))
    assert "COUNTER_POSTGRES_PASSWORD" in active
    r = load_config(clean_env(COUNTER_CONFIG=str(EXAMPLE), **active))
    assert r.returncode == 0, r.stderr


# --------------------------------------------------- config.example.yaml ---

META = re.compile(
    r"^\s*#\s+key (?P<key>[a-z_.]+) \| default (?P<default>\"[^\"]*\"|\S+)"
    r"(?: \| unit (?P<unit>\S+) \| range (?P<lo>-?\d+)\.\.(?P<hi>-?\d+)"
    r"| \| (?P<req>required|optional)) \| env (?P<env>COUNTER_[A-Z0-9_]+)\s*$"
)


def example_meta():
    """[(line number, match)] of the "key ... | env ..." comment lines."""
    lines = EXAMPLE.read_text().splitlines()
    metas = [(i, META.match(line)) for i, line in enumerate(lines)]
    stray = [lines[i] for i, m in metas if m is None and re.match(r"^\s*#\s+key [a-z_.]+ \|", lines[i])]
    assert not stray, f"malformed key lines: {stray}"
    return lines, [(i, m) for i, m in metas if m]


def flatten(node, path=""):
    """The keys the loader's walk() sees: mapping paths to scalars, with
    `counters` and `auth.tokens` read apart (as in common/config.c)."""
    out = set()
    for k, v in node.items():
        p = f"{path}.{k}" if path else str(k)
        if p in ("counters", "auth.tokens"):
            continue
        out |= flatten(v, p) if isinstance(v, dict) else {p}
    return out


def test_example_has_every_key_of_the_option_table_and_no_other():
    table = option_table()
    leaves = flatten(yaml.safe_load(EXAMPLE.read_text()))
    assert leaves == set(table), (
        f"missing: {sorted(set(table) - leaves)}, unknown: {sorted(leaves - set(table))}"
    )


def test_example_documents_each_key_as_the_table_declares_it():
    table = option_table()
    lines, metas = example_meta()
    documented = [m["key"] for _, m in metas]
    assert sorted(documented) == sorted(table), "each key documented exactly once"
    units = {"_ms": "ms", "_s": "s", "_bytes": "bytes"}
    for i, m in metas:
        typ, default, lo, hi = table[m["key"]]
        assert m["env"] == env_name(m["key"]), m["key"]
        if typ == "OPT_STR":
            assert m["default"] == f'"{default}"', m["key"]
            assert m["req"] == ("required" if lo == 1 else "optional"), m["key"]
        else:
            assert m["default"] == default, m["key"]
            assert (int(m["lo"]), int(m["hi"])) == (lo, hi), m["key"]
            for suffix, unit in units.items():
                if m["key"].endswith(suffix):
                    assert m["unit"] == unit, m["key"]
        # the comment sits right above its key (further comments may follow)
        j = i + 1
        while lines[j].lstrip().startswith("#"):
            j += 1
        leaf = m["key"].rsplit(".", 1)[-1]
        assert re.match(rf"^\s*{re.escape(leaf)}:", lines[j]), (m["key"], lines[j])


def test_example_explains_every_counter_setting():
    src = (ROOT / "common" / "config.c").read_text()
    m = re.search(r"static const def_setting def_settings\[\] = \{(.*?)\n\};", src, re.S)
    assert m, "def_settings[] of build_def() not found in common/config.c"
    known = set(re.findall(r'\{"(\w+)",', m.group(1)))
    text = EXAMPLE.read_text()
    explained = set(re.findall(r"^#\s+- (\w+):", text, re.M))
    assert explained == known, (sorted(known - explained), sorted(explained - known))
    counters = yaml.safe_load(text)["counters"]
    assert counters and all(set(v) <= known for v in counters.values())


def test_example_loads_with_the_real_loader(tmp_path):
    r = load_config(clean_env(COUNTER_CONFIG=str(EXAMPLE)))
    assert r.returncode == 0, r.stderr
    assert '"read":0' in r.stdout
    # the same check refuses a key the table does not have
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text() + "\nserver_typo: 1\n")
    r = load_config(clean_env(COUNTER_CONFIG=str(bad)))
    assert r.returncode == 2 and 'unknown key "server_typo"' in r.stderr, r.stderr


def test_every_derived_env_name_reaches_the_loader():
    """The derived names are the ones the binary reads: a bad integer names
    its variable; an empty required string is refused."""
    checked = 0
    for key, (typ, _default, lo, _hi) in option_table().items():
        name = env_name(key)
        if typ == "OPT_INT":
            r = load_config(clean_env(COUNTER_CONFIG=str(EXAMPLE), **{name: "12x"}))
            assert r.returncode == 2 and f"{key} (from {name})" in r.stderr, (name, r.stderr)
        elif lo == 1:
            r = load_config(clean_env(COUNTER_CONFIG=str(EXAMPLE), **{name: ""}))
            assert r.returncode == 2 and f"config: {key}: must not be empty" in r.stderr, (
                name, r.stderr)
        else:
            continue  # optional strings: no observable effect in a dry run
        checked += 1
    assert checked >= 25


# ------------------------------------------------------------ compose ---


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_services_the_design_needs():
    services = compose()["services"]
    assert {
        "kafka", "redis", "postgres", "create-topic", "migrate",
        "counter-api", "counter-persister", "counter-applier",
    } <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["redis"]["image"] == "redis:7"
    assert services["postgres"]["image"] == "postgres:15"
    cmd = services["redis"]["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"


def test_compose_commands_are_built_programs():
    services = compose()["services"]
    ctl = (ROOT / "ctl" / "counterctl.c").read_text()
    for name in ("create-topic", "migrate", "counter-api", "counter-persister", "counter-applier"):
        svc = services[name]
        assert svc["image"] == "counter:local" and svc["build"]["context"] == ".."
        assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["command"][0] in programs(), name
    assert services["create-topic"]["command"] == ["counterctl", "create-topic"]
    assert services["migrate"]["command"] == ["counterctl", "migrate", "up"]
    assert 'strcmp(argv[1], "create-topic")' in ctl and 'strcmp(argv[1], "migrate")' in ctl
    for name in ("create-topic", "migrate"):
        assert services[name]["restart"] == "no"


def test_compose_start_order():
    services = compose()["services"]
    ready = {"redis", "postgres", "kafka"}
    jobs = {"create-topic", "migrate"}
    needs = {
        "counter-api": {"redis", "postgres", "kafka"},
        "counter-persister": {"postgres", "kafka"},
        "counter-applier": {"redis", "postgres", "kafka"},
    }
    for name, infra in needs.items():
        deps = services[name]["depends_on"]
        assert infra | jobs <= set(deps), name
        for dep, cond in deps.items():
            want = "service_completed_successfully" if dep in jobs else "service_healthy"
            assert cond == {"condition": want}, (name, dep)
    assert services["create-topic"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    # whatever is waited on as healthy has a healthcheck
    for name in ready | {"counter-api"}:
        assert services[name]["healthcheck"]["test"], name


def test_compose_env_names_and_values_are_accepted():
    services = compose()["services"]
    known = known_env_names()
    seen = 0
    for name in ("create-topic", "migrate", "counter-api", "counter-persister", "counter-applier"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        unknown = sorted(k for k in env if k not in known)
        assert not unknown, (name, unknown)
        # "${POSTGRES_PASSWORD:-counter}" is compose's; take its default
        env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
        assert env["COUNTER_CONFIG"] == "/etc/counter/config.yaml"
        r = load_config(clean_env(**{**env, "COUNTER_CONFIG": str(EXAMPLE)}))
        assert r.returncode == 0, (name, r.stderr)
        seen += 1
    assert seen == 5


def test_compose_wires_the_stores_together():
    services = compose()["services"]
    env = services["counter-api"]["environment"]
    pg = services["postgres"]["environment"]
    assert env["COUNTER_POSTGRES_HOST"] == "postgres"
    assert env["COUNTER_POSTGRES_PORT"] == "5432"
    assert env["COUNTER_POSTGRES_USER"] == pg["POSTGRES_USER"]
    assert env["COUNTER_POSTGRES_DBNAME"] == pg["POSTGRES_DB"]
    assert env["COUNTER_POSTGRES_PASSWORD"] == pg["POSTGRES_PASSWORD"]
    assert env["COUNTER_REDIS_ADDR"] == "redis:6379"
    kafka = services["kafka"]["environment"]
    roles = set(kafka["KAFKA_PROCESS_ROLES"].split(","))
    assert roles == {"broker", "controller"}  # KRaft, one node
    assert kafka["KAFKA_CONTROLLER_LISTENER_NAMES"] + "://" in kafka["KAFKA_LISTENERS"]
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{kafka['KAFKA_NODE_ID']}@kafka:")
    assert f"PLAINTEXT://{env['COUNTER_KAFKA_BROKERS']}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert str(kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    assert int(kafka["KAFKA_NUM_PARTITIONS"]) == int(env["COUNTER_KAFKA_PARTITIONS"])
    for k in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
              "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
              "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert int(kafka[k]) == 1, k
    assert "kafka" in services["kafka"]["healthcheck"]["test"][-1]


def test_compose_api_port_healthcheck_and_stop_grace():
    services = compose()["services"]
    api = services["counter-api"]
    port = int(api["environment"].get("COUNTER_SERVER_PORT", option_table()["server.port"][1]))
    assert [p.rsplit(":", 1)[-1] for p in api["ports"]] == [str(port)]
    assert f"EXPOSE {port}" in DOCKERFILE.read_text()
    assert api["healthcheck"]["test"] == ["CMD", "counter-healthcheck"]
    longest = (c_enum("api/main.c", "DRAIN_MAX_MS") + c_enum("api/main.c", "FLUSH_DEADLINE_MS")) / 1000
    assert seconds(api["stop_grace_period"]) >= longest + 5
    need = option_table()["server.max_connections"][1]
    assert api["ulimits"]["nofile"]["hard"] >= int(need) + c_enum("api/listener.c", "FD_RESERVE")
    for name in ("counter-persister", "counter-applier"):
        assert seconds(services[name]["stop_grace_period"]) >= 15


def test_compose_file_with_docker_compose_if_installed():
    """docker-compose (Debian's 1.29, not in install-deps.sh) validates the
    file against the Compose schema; the YAML checks above run anyway."""
    assert compose()["volumes"].keys() == {
        "kafka-data", "redis-data", "postgres-data", "prometheus-data", "grafana-data"}
    dc = shutil.which("docker-compose")
    if dc is None:
        return
    r = subprocess.run([dc, "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                       text=True, timeout=120, cwd=COMPOSE.parent)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------- monitoring ---

PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
OPERATIONS = ROOT / "docs" / "operations.md"


def alert_rules():
    groups = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_a_runbook_and_its_section():
    anchors = {github_anchor(m) for m in
               re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), re.M)}
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names)) and len(names) >= 14, names
    for r in alert_rules():
        a, labels = r["annotations"], r["labels"]
        assert labels["severity"] in ("critical", "warning"), r["alert"]
        assert a["summary"] and a["runbook"] and "\n" not in a["runbook"], r["alert"]
        doc, _, anchor = a["runbook_url"].partition("#")
        assert doc == "docs/operations.md", r["alert"]
        assert anchor == r["alert"].lower() and anchor in anchors, (
            f"{r['alert']}: no section '### {r['alert']}' in docs/operations.md")


def test_every_alert_is_unit_tested_firing_and_not():
    tests = yaml.safe_load((ROOT / "tests" / "prometheus" / "rules_test.yml").read_text())
    assert tests["rule_files"] == ["../../deploy/prometheus/rules.yml"]
    fired, quiet = set(), set()
    for t in tests["tests"]:
        for c in t["alert_rule_test"]:
            (fired if c["exp_alerts"] else quiet).add(c["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set(), "never seen firing"
    assert names - quiet == set(), "never seen quiet"


def test_prometheus_scrapes_the_three_services_where_compose_runs_them():
    cfg = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["rules.yml"]
    table = option_table()
    want = {
        "counter-api": table["server.port"][1],
        "counter-persister": table["persister.metrics_port"][1],
        "counter-applier": table["applier.metrics_port"][1],
    }
    services = compose()["services"]
    jobs = {}
    for job in cfg["scrape_configs"]:
        (target,) = [t for sc in job["static_configs"] for t in sc["targets"]]
        jobs[job["job_name"]] = target
    assert jobs == {name: f"{name}:{port}" for name, port in want.items()}
    for name, port in want.items():  # reachable on the compose network
        svc = services[name]
        assert str(port) in [str(p) for p in svc.get("expose", [])] + [
            p.rsplit(":", 1)[-1] for p in svc.get("ports", [])], name
    # the rules select on these job names
    rules = (PROMETHEUS / "rules.yml").read_text()
    assert 'job=~"counter-api|counter-persister|counter-applier"' in rules


def test_compose_provisions_prometheus_and_grafana():
    services = compose()["services"]
    prom, graf = services["prometheus"], services["grafana"]
    assert prom["image"].startswith("prom/prometheus:v2.")
    assert "./prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert (COMPOSE.parent / "prometheus" / "prometheus.yml").is_file()
    assert graf["image"].startswith("grafana/grafana:")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in graf["volumes"]}
    assert (COMPOSE.parent / mounts["/etc/grafana/provisioning"]).is_dir()
    assert (COMPOSE.parent / mounts["/etc/grafana/dashboards/counter.json"]) == GRAFANA / "counter.json"
    # the provisioned dashboard folder and datasource are the ones mounted and named
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "counter.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["url"] == "http://prometheus:9090"
    dash = json.loads((GRAFANA / "counter.json").read_text())
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


# ---------------------------------------------------------- Dockerfile ---


def dockerfile_stages():
    """[(FROM line, [instructions])], continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append((line, []))
        else:
            assert stages, "instruction before FROM"
            stages[-1][1].append(re.sub(r"\s+", " ", line))
    return stages


def apt_packages(instructions):
    pkgs = []
    for ins in instructions:
        m = re.search(r"apt-get install (.*?)(?:&&|$)", ins)
        if m:
            pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return set(pkgs)


def test_dockerfile_build_stage():
    (build_from, build), (run_from, _run) = dockerfile_stages()
    assert build_from == "FROM debian:12 AS build"
    assert run_from == "FROM debian:12-slim"
    deps = (ROOT / "deploy" / "install-deps.sh").read_text()
    listed = set(re.search(r"PACKAGES=\((.*?)\)", deps, re.S).group(1).split())
    pkgs = apt_packages(build)
    assert pkgs and pkgs <= listed, sorted(pkgs - listed)
    # every pkg-config module CMakeLists.txt requires has its -dev package
    # (cmocka is optional: the unit tests are left out without it)
    assert {"libevent-dev", "libhiredis-dev", "librdkafka-dev", "libpq-dev",
            "libjson-c-dev", "libyaml-dev", "cmake", "pkg-config"} <= pkgs
    cmake = " ".join(i for i in build if "cmake" in i)
    assert "-DCMAKE_BUILD_TYPE=RelWithDebInfo" in cmake
    targets = set(re.search(r"--target (.*)$", cmake).group(1).split())
    assert targets == programs()


def test_dockerfile_runtime_stage():
    _build, (_from, run) = dockerfile_stages()
    text = "\n".join(run)
    copied = re.search(r"COPY --from=build (.*) /usr/local/bin/", text).group(1).split()
    assert {Path(p).name for p in copied} == programs()
    assert all(p.startswith("/src/build/bin/") for p in copied)
    user = [i.split()[1] for i in run if i.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert "useradd" in text and user[-1] in text
    assert "COPY sql /usr/local/share/counter/sql" in run
    assert re.search(r"COUNTER_SQL_DIR=/usr/local/share/counter/sql", text)
    assert re.search(r"COUNTER_CONFIG=/etc/counter/config.yaml", text)
    assert "COPY deploy/config.example.yaml /etc/counter/config.yaml" in run
    assert "COPY deploy/docker/healthcheck.sh /usr/local/bin/counter-healthcheck" in run
    assert 'CMD ["counter-api"]' in run
    assert "EXPOSE 8080" in run
    # getenv("COUNTER_SQL_DIR") is what counterctl reads
    assert "COUNTER_SQL_DIR" in extra_env_names()


def _package_of(lib_path):
    """The Debian package holding a library, under whichever of its
    /usr-merged paths dpkg recorded it."""
    paths = []
    for p in (lib_path, os.path.realpath(lib_path)):
        paths += [p, p[4:] if p.startswith("/usr/lib/") else "/usr" + p]
    for p in paths:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0]
    raise AssertionError(f"no package holds {lib_path}")


def test_dockerfile_runtime_packages_cover_what_the_programs_link():
    """Each shared library a program needs directly (readelf NEEDED) comes
    from a package the runtime stage installs (or libc6); sanitizer runtimes
    of an ASan build are not deployed."""
    _build, (_from, run) = dockerfile_stages()
    runtime = apt_packages(run)
    assert runtime, "no apt-get install in the runtime stage"
    # common/tz.c resolves every zone, UTC included, in /usr/share/zoneinfo
    assert "/usr/share/zoneinfo/" in (ROOT / "common" / "tz.c").read_text()
    assert "tzdata" in runtime and "ca-certificates" in runtime
    needed_pkgs = set()
    for prog in sorted(programs()):
        path = bin_dir() / prog
        elf = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True,
                             check=True).stdout
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", elf)
        assert needed, prog
        ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True,
                             check=True).stdout
        where = dict(re.findall(r"^\s*(\S+) => (/\S+)", ldd, re.M))
        for soname in needed:
            if re.match(r"lib(asan|ubsan|tsan|lsan)\.", soname):
                continue
            assert soname in where, (prog, soname, ldd)
            needed_pkgs.add(_package_of(where[soname]))
    missing = needed_pkgs - runtime - {"libc6"}
    assert not missing, f"the runtime stage lacks {sorted(missing)}"
    assert {"librdkafka1", "libpq5", "libyaml-0-2"} <= needed_pkgs


def test_dockerignore_keeps_the_sources_and_drops_the_rest():
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".git", "build", "build-*", "var"):
        assert must in patterns, must
    import fnmatch

    needed = ["CMakeLists.txt", "common", "api", "ingest", "persister", "applier", "ctl",
              "tests", "sql", "deploy", "Dockerfile"]
    for path in needed:
        hit = [p for p in patterns if fnmatch.fnmatch(path, p.lstrip("/"))]
        assert not hit, (path, hit)
        assert (ROOT / path).exists(), path
    # the files the runtime stage copies are in the context
    for ins in dockerfile_stages()[1][1]:
        m = re.match(r"COPY (?!--from)(\S+) ", ins)
        if m:
            assert (ROOT / m.group(1)).exists(), m.group(1)
            assert not any(fnmatch.fnmatch(m.group(1), p) for p in patterns), m.group(1)


def test_healthcheck_script_answers_only_for_a_200(tmp_path):
    """counter-healthcheck against a tiny server on a free port: 200 -> 0,
    503 -> 1, nothing listening -> 1."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        status = 200

        def do_GET(self):
            self.send_response(H.status if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}\n')

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    script = ROOT / "deploy" / "docker" / "healthcheck.sh"
    assert os.access(script, os.X_OK)

    def check(*args):
        return subprocess.run([str(script), *args], capture_output=True, timeout=15).returncode

    try:
        assert check("127.0.0.1", str(port)) == 0
        H.status = 503
        assert check("127.0.0.1", str(port)) == 1
        H.status = 200
        env_port = subprocess.run([str(script)], env={**os.environ, "COUNTER_SERVER_PORT": str(port)},
                                  capture_output=True, timeout=15).returncode
        assert env_port == 0
    finally:
        srv.shutdown()
        srv.server_close()
    assert check("127.0.0.1", str(port)) == 1


def test_compose_exposes_the_metrics_ports():
    """The persister's and applier's Prometheus ports, where the table has
    them (and nothing where it does not)."""
    table = option_table()
    services = compose()["services"]
    for name, key in (("counter-persister", "persister.metrics_port"),
                      ("counter-applier", "applier.metrics_port")):
        exposed = [str(p) for p in services[name].get("expose", [])]
        assert exposed == ([table[key][1]] if key in table else []), (name, exposed)
