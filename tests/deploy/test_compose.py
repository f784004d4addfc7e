"""compose.yaml, the Dockerfile it builds and .dockerignore, checked statically.

No Docker engine runs here. The compose file is parsed with PyYAML (anchors and merge keys
resolved as compose resolves them), its ${...} interpolation is applied by a small
implementation of compose's rules, and the result is checked for what `docker compose up`
needs: every dependency and volume declared, a healthcheck on every long-running service,
secrets only from compose secret files (or required variables), no copy-pasted site blocks,
and environment names that the settings classes read.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import ROOT, service_of, settings_env_names

pytestmark = pytest.mark.slow

COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BOOTSTRAP = ROOT / "deploy" / "compose" / "bootstrap.sh"

SITES = ("site_a", "site_b")
OUR_COMMANDS = {"aggregator", "node", "inference"}
SECRET_MARKERS = ("TOKEN", "PASSWORD", "DATABASE_URL", "BROKER_URL", "AUTH")
FILE_SUFFIX = "_FILE"
SECRETS_DIR = "./var/compose/secrets/"
# Exact releases: a major (15) or minor (7.4) tag floats to whatever is pushed next.
PINNED_TAG = re.compile(r"^\d+\.\d+(\.\d+)?$")
# Keys of a compose service that this file may use (a typo such as `healtcheck` fails).
SERVICE_KEYS = {
    "image",
    "build",
    "command",
    "environment",
    "volumes",
    "networks",
    "ports",
    "depends_on",
    "healthcheck",
    "restart",
    "profiles",
    "deploy",
    "read_only",
    "tmpfs",
    "security_opt",
    "cap_drop",
    "init",
    "stop_grace_period",
    "secrets",
}
DEPENDENCY_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}")


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        colon = operator is not None and operator.startswith(":")
        unset = current is None or (colon and not current)
        if operator in {":?", "?"} and unset:
            raise KeyError(f"{name}: {argument}")
        if operator in {":-", "-"} and unset:
            return str(interpolate(argument, env))
        return current or ""

    return INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def required_variables(compose: dict) -> set[str]:
    found = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            for match in INTERPOLATION.finditer(value):
                if match.group(2) in {":?", "?"}:
                    found.add(match.group(1))

    walk(compose)
    return found


def bootstrap_env(compose: dict) -> dict[str, str]:
    """What deploy/compose/bootstrap.sh leaves in .env: every required variable."""
    return {name: f"value-of-{name.lower()}" for name in required_variables(compose)}


@pytest.fixture(scope="module")
def compose() -> dict:
    raw = load_compose()
    return interpolate(raw, bootstrap_env(raw))


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def our_services(services: dict[str, dict]) -> dict[str, dict]:
    return {
        name: service
        for name, service in services.items()
        if service.get("command") and service["command"][0] in OUR_COMMANDS
    }


def named_volume(mount: str) -> tuple[str, str, bool]:
    source, target, *options = mount.split(":")
    return source, target, "ro" in options


# ---- structure -----------------------------------------------------------------------------


def test_the_stack_has_the_hub_and_two_sites(services: dict[str, dict]) -> None:
    expected = {"postgres", "migrate", "aggregator"}
    for site in SITES:
        expected |= {f"{site}_{part}" for part in ("redis", "node", "worker", "inference")}
        expected.add(f"{site}_worker_gpu")
    assert set(services) == expected


def test_postgres_and_redis_images_are_pinned(services: dict[str, dict]) -> None:
    images = {
        name: services[name]["image"] for name in ("postgres", *(f"{s}_redis" for s in SITES))
    }
    for name, image in images.items():
        repository, _, tag = image.partition(":")
        assert PINNED_TAG.match(tag), f"{name} uses the floating tag {image}"
    assert images["postgres"].startswith("postgres:15.")
    redis_major_minor = images["site_a_redis"].removeprefix("redis:").split(".")[:2]
    assert redis_major_minor[0] == "7" and len(redis_major_minor) == 2
    assert len({images[f"{site}_redis"] for site in SITES}) == 1


def test_services_use_only_known_keys(services: dict[str, dict]) -> None:
    for name, service in services.items():
        unknown = set(service) - SERVICE_KEYS
        assert not unknown, f"{name}: unknown keys {unknown}"


def test_commands_are_the_documented_ones(services: dict[str, dict]) -> None:
    commands = {name: tuple(s["command"]) for name, s in our_services(services).items()}
    assert commands.pop("migrate") == ("aggregator", "migrate")
    serve = ("serve", "--host", "0.0.0.0", "--port")
    assert commands.pop("aggregator") == ("aggregator", *serve, "8100")
    for site in SITES:
        assert commands.pop(f"{site}_node") == ("node", *serve, "8200")
        assert commands.pop(f"{site}_worker") == ("node", "worker")
        assert commands.pop(f"{site}_worker_gpu") == ("node", "worker")
        assert commands.pop(f"{site}_inference") == ("inference", *serve, "8300")
    assert not commands


def test_dependencies_exist_and_use_valid_conditions(services: dict[str, dict]) -> None:
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            assert spec["condition"] in DEPENDENCY_CONDITIONS
            # A default service must not wait for one that only a profile starts.
            if not service.get("profiles"):
                assert not services[target].get("profiles"), f"{name} -> {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on unhealthy-able {target}"


def test_migrations_are_a_one_shot_the_aggregator_waits_for(services: dict[str, dict]) -> None:
    assert services["migrate"]["restart"] == "no"
    assert "healthcheck" not in services["migrate"]
    dependencies = services["aggregator"]["depends_on"]
    assert dependencies["migrate"]["condition"] == "service_completed_successfully"
    assert dependencies["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["environment"] == services["aggregator"]["environment"]


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict]) -> None:
    for name, service in services.items():
        if service.get("restart") == "no":
            continue
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name} healthcheck lacks {key}"


def _python_snippet(test: list[str]) -> str:
    assert test[:3] == ["CMD", "python", "-c"], test
    code = test[3]
    compile(code, "<healthcheck>", "exec")
    return code


def test_our_http_services_check_health_on_their_own_port(services: dict[str, dict]) -> None:
    for name, service in our_services(services).items():
        if "--port" not in service["command"]:
            continue
        port = service["command"][service["command"].index("--port") + 1]
        code = _python_snippet(service["healthcheck"]["test"])
        assert "urllib.request.urlopen" in code
        assert f"http://127.0.0.1:{port}/health" in code, name


def test_workers_check_their_broker(services: dict[str, dict]) -> None:
    for name, service in our_services(services).items():
        if service["command"] == ["node", "worker"]:
            code = _python_snippet(service["healthcheck"]["test"])
            assert "FEDMEDCLIP_NODE_BROKER_URL" in code and ".ping()" in code, name


def test_database_and_broker_healthchecks(services: dict[str, dict]) -> None:
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for site in SITES:
        test = services[f"{site}_redis"]["healthcheck"]["test"]
        assert "redis-cli ping" in " ".join(test)


# ---- volumes, networks, ports ------------------------------------------------------------


def test_named_volumes_and_networks_are_declared(compose: dict) -> None:
    volumes, networks = set(compose["volumes"]), set(compose["networks"])
    used_volumes = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = named_volume(mount)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
                used_volumes.add(source)
        service_networks = service.get("networks", [])
        for network in service_networks:
            assert network in networks, f"{name} uses undeclared network {network}"
    assert used_volumes == volumes, f"declared but unused: {volumes - used_volumes}"
    assert "postgres_data" in used_volumes


def _mounts(service: dict) -> dict[str, tuple[str, bool]]:
    return {target: (source, ro) for source, target, ro in map(named_volume, service["volumes"])}


@pytest.mark.parametrize("site", SITES)
def test_site_volumes_are_shared_by_node_worker_and_inference(
    services: dict[str, dict], site: str
) -> None:
    node = _mounts(services[f"{site}_node"])
    data, store = "/var/lib/fedmedclip/node", "/var/lib/fedmedclip/model-store"
    assert node[data] == (f"{site}_data", False)
    assert node[store] == (f"{site}_model_store", False)
    for worker in (f"{site}_worker", f"{site}_worker_gpu"):
        assert _mounts(services[worker]) == node
    inference = _mounts(services[f"{site}_inference"])
    assert inference[store] == (f"{site}_model_store", True), "inference reads the store only"
    assert data not in inference
    audit = services[f"{site}_inference"]["environment"]["FEDMEDCLIP_INFERENCE_AUDIT_PATH"]
    audit_dir = str(Path(audit).parent)
    assert audit_dir in inference and not inference[audit_dir][1], "audit log needs a volume"
    # The node's settings point at the mounted folders.
    env = services[f"{site}_node"]["environment"]
    assert env["FEDMEDCLIP_NODE_DATA_DIR"] == data
    assert env["FEDMEDCLIP_NODE_MODEL_STORE_DIR"] == store
    inference_env = services[f"{site}_inference"]["environment"]
    assert inference_env["FEDMEDCLIP_INFERENCE_MODEL_STORE_DIR"] == store
    roots = env["FEDMEDCLIP_NODE_DATA_ROOTS"].split(",")
    assert all(root in node for root in roots)


def test_sites_share_no_volume_or_private_network(services: dict[str, dict]) -> None:
    def owned(site: str) -> tuple[set[str], set[str]]:
        vols, nets = set(), set()
        for name, service in services.items():
            if name.startswith(site):
                vols |= {named_volume(m)[0] for m in service.get("volumes", [])}
                nets |= set(service.get("networks", []))
        return {v for v in vols if v.startswith("site_")}, nets

    (vols_a, nets_a), (vols_b, nets_b) = owned("site_a"), owned("site_b")
    assert not vols_a & vols_b
    assert nets_a & nets_b == {"federation"}


def test_database_and_brokers_sit_on_internal_networks(compose: dict) -> None:
    networks = compose["networks"]
    services = compose["services"]
    assert set(services["postgres"]["networks"]) == {"hub_db"}
    assert networks["hub_db"]["internal"] is True
    for site in SITES:
        assert set(services[f"{site}_redis"]["networks"]) == {site}
        assert networks[site]["internal"] is True


def test_ports_are_published_on_loopback_only(services: dict[str, dict]) -> None:
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published
    for port in published:
        assert port.startswith("127.0.0.1:"), port


def test_our_containers_are_hardened(services: dict[str, dict]) -> None:
    for name, service in our_services(services).items():
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


# ---- GPU profile ---------------------------------------------------------------------------


def test_gpu_profile_workers_reserve_an_nvidia_gpu(services: dict[str, dict]) -> None:
    gpu = {name: s for name, s in services.items() if "gpu" in s.get("profiles", [])}
    assert set(gpu) == {f"{site}_worker_gpu" for site in SITES}
    for name, service in gpu.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert "gpu" in device["capabilities"]
        assert service["environment"]["FEDMEDCLIP_NODE_DEVICE"] == "cuda"
        assert service["build"]["args"]["TORCH_FLAVOR"] == "cuda"
        cpu_twin = services[name.removesuffix("_gpu")]

        def without_device(env: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in env.items() if k != "FEDMEDCLIP_NODE_DEVICE"}

        assert without_device(service["environment"]) == without_device(cpu_twin["environment"])
    for name, service in services.items():
        if name not in gpu:
            assert "devices" not in str(service.get("deploy", {})), name


def test_cpu_workers_can_be_turned_off_for_the_gpu_profile() -> None:
    raw = load_compose()
    env = bootstrap_env(raw) | {"CPU_WORKERS": "0"}
    for site in SITES:
        worker = interpolate(raw, env)["services"][f"{site}_worker"]
        assert int(worker["deploy"]["replicas"]) == 0
    default = interpolate(raw, bootstrap_env(raw))["services"]["site_a_worker"]
    assert int(default["deploy"]["replicas"]) == 1


# ---- environment and secrets ---------------------------------------------------------------


def _secret_targets(service: dict) -> dict[str, str]:
    """/run/secrets path -> compose secret name, for the secrets a service mounts."""
    targets = {}
    for entry in service.get("secrets", []):
        source, target = (
            (entry, entry)
            if isinstance(entry, str)
            else (entry["source"], entry.get("target", entry["source"]))
        )
        targets[f"/run/secrets/{target}"] = source
    return targets


def test_secrets_are_mounted_files_or_required_variables() -> None:
    raw = load_compose()
    declared = raw["secrets"]
    file_settings = 0
    for name, service in raw["services"].items():
        mounted = _secret_targets(service)
        for key, value in service.get("environment", {}).items():
            if not any(marker in key for marker in SECRET_MARKERS):
                continue
            if key.endswith(FILE_SUFFIX):
                # Read by the service from a compose secret that it mounts.
                assert value in mounted, f"{name}.{key}={value} is not a secret it mounts"
                assert mounted[value] in declared, f"{name}: undeclared secret {mounted[value]}"
                file_settings += 1
                continue
            secrets = [m for m in INTERPOLATION.finditer(str(value)) if m.group(2) in {":?", "?"}]
            assert secrets, f"{name}.{key} is neither a _FILE secret nor a required variable"
        for source in mounted.values():
            assert source in declared, f"{name} mounts undeclared secret {source}"
    assert file_settings >= 10
    for secret in declared.values():
        assert secret["file"].startswith(SECRETS_DIR), secret
    # Without the Redis passwords compose refuses the file (interpolation error).
    with pytest.raises(KeyError):
        interpolate(raw, {})


@pytest.mark.parametrize("site", SITES)
def test_each_service_mounts_only_the_secrets_it_reads(
    services: dict[str, dict], site: str
) -> None:
    def targets(name: str) -> set[str]:
        return set(_secret_targets(services[name]))

    node_secrets = {"/run/secrets/node_token", "/run/secrets/admin_token"}
    for role in ("node", "worker", "worker_gpu"):
        assert targets(f"{site}_{role}") == node_secrets
    assert targets(f"{site}_inference") == {
        "/run/secrets/node_token",
        "/run/secrets/clinician_tokens",
    }
    # A site mounts its own secrets only.
    other = next(s for s in SITES if s != site)
    for name, service in services.items():
        if name.startswith(site):
            assert all(not src.startswith(other) for src in _secret_targets(service).values())
    assert "secrets" not in services[f"{site}_redis"]


def test_redis_requires_the_password_the_brokers_use(services: dict[str, dict]) -> None:
    for site in SITES:
        redis = services[f"{site}_redis"]
        command = redis["command"]
        password = command[command.index("--requirepass") + 1]
        assert password and redis["environment"]["REDISCLI_AUTH"] == password
        for role in ("node", "worker", "worker_gpu"):
            url = services[f"{site}_{role}"]["environment"]["FEDMEDCLIP_NODE_BROKER_URL"]
            assert url == f"redis://:{password}@redis:6379/0", role
    assert services["site_a_redis"]["command"] != services["site_b_redis"]["command"]


def test_bootstrap_provides_every_secret_and_required_variable() -> None:
    script = BOOTSTRAP.read_text()
    generated = set(re.findall(r"^env_ensure ([A-Z_]+) ", script, flags=re.MULTILINE))
    assert required_variables(load_compose()) == generated
    assert 'secrets_dir="${repo_root}/' + SECRETS_DIR.removeprefix("./").rstrip("/") + '"' in script
    written = set(re.findall(r"^\s*secret_ensure ([a-z_]+) ", script, flags=re.MULTILINE))
    assert "for site in site_a site_b" in script
    for suffix in re.findall(r'secret_ensure "\$\{site\}_([a-z_]+)"', script):
        written |= {f"{site}_{suffix}" for site in SITES}
    declared = load_compose()["secrets"]
    assert written == set(declared)
    for name, secret in declared.items():
        assert secret["file"] == SECRETS_DIR + name


def _normalised(service: dict, site: str) -> object:
    """A site's service with its site's names replaced, and without its published ports."""
    service = {k: v for k, v in service.items() if k != "ports"}
    text = yaml.safe_dump(service, sort_keys=True)
    return yaml.safe_load(text.replace(site, "site_x").replace(site.upper(), "SITE_X"))


@pytest.mark.parametrize("role", ["redis", "node", "worker", "worker_gpu", "inference"])
def test_sites_differ_only_by_their_names(role: str) -> None:
    raw = load_compose()["services"]
    a, b = (_normalised(raw[f"{site}_{role}"], site) for site in SITES)
    assert a == b


def test_site_services_are_built_from_shared_templates() -> None:
    """Each site service merges x-* templates (<<:) instead of repeating their content."""
    lines = COMPOSE.read_text().splitlines()
    for site in SITES:
        for role in ("redis", "node", "worker", "worker_gpu", "inference"):
            index = lines.index(f"  {site}_{role}:")
            assert lines[index + 1].startswith("    <<: "), f"{site}_{role} repeats a template"
            block = []
            for line in lines[index + 1 :]:
                if line.strip() and not line.startswith("    "):
                    break
                block.append(line)
            assert len(block) <= 12, f"{site}_{role} is {len(block)} lines: copy-paste?"


def _env_by_command(services: dict[str, dict]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, service in services.items():
        names = {key for key in service.get("environment", {}) if key.startswith("FEDMEDCLIP_")}
        command = (service.get("command") or [""])[0]
        if command in OUR_COMMANDS:
            wrong = {key for key in names if service_of(key) != command}
            assert not wrong, f"{name} runs `{command}` but sets {wrong}"
            found.setdefault(command, set()).update(names)
        else:
            assert not names, f"{name} is not ours but sets {names}"
    return found


def _provided(names: set[str]) -> set[str]:
    """The settings these variables give: ``X_FILE`` gives ``X`` (read from the file)."""
    return names | {name.removesuffix(FILE_SUFFIX) for name in names}


def test_environment_names_exist_in_the_settings_classes(services: dict[str, dict]) -> None:
    by_command = _env_by_command(services)
    assert set(by_command) == OUR_COMMANDS
    for command, names in by_command.items():
        known, required = settings_env_names(command)
        assert names <= known, f"{command}: no such setting: {sorted(names - known)}"
        missing = required - _provided(names)
        assert not missing, f"{command}: required settings not set: {missing}"


def test_every_service_of_a_kind_sets_the_required_settings(services: dict[str, dict]) -> None:
    for name, service in our_services(services).items():
        _, required = settings_env_names(service["command"][0])
        assert required <= _provided(set(service["environment"])), name


# ---- Dockerfile and build context ----------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_builds_one_non_root_image_for_every_service() -> None:
    instructions = _dockerfile_instructions()
    args = {rest.split("=")[0]: rest.partition("=")[2] for kw, rest in instructions if kw == "ARG"}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert args["TORCH_FLAVOR"] == "cpu"
    assert args["APP_UID"] == "10001"
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert "pip install /src" in runs
    assert "cpu)" in runs and "cuda)" in runs
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users[-1] == "${APP_UID}:${APP_UID}"
    assert [rest for kw, rest in instructions if kw == "ENTRYPOINT"] == ['["fedmedclip"]']
    assert "useradd --system --uid ${APP_UID}" in runs


def test_dockerfile_environment_names_exist_in_the_settings_classes() -> None:
    env_text = " ".join(rest for kw, rest in _dockerfile_instructions() if kw == "ENV")
    names = {
        token.split("=")[0] for token in shlex.split(env_text) if token.startswith("FEDMEDCLIP_")
    }
    assert names
    for command in OUR_COMMANDS:
        known, _ = settings_env_names(command)
        ours = {name for name in names if service_of(name) == command}
        assert ours <= known, f"{command}: no such setting: {sorted(ours - known)}"


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = ["pyproject.toml", "README.md", "shared/fedmedclip/__init__.py", "services/cli.py"]
    for path in needed:
        excluded = [
            p
            for p in patterns
            if not p.startswith("!")
            and (fnmatch.fnmatch(path, p.rstrip("/")) or path.startswith(p.rstrip("/") + "/"))
        ]
        assert not excluded, f"{path} is excluded by {excluded}"
    for path in ("tests/unit/test_codec.py", ".git/HEAD", ".env", "var/demo/x"):
        assert any(
            fnmatch.fnmatch(path, p.removeprefix("**/").rstrip("/"))
            or path.startswith(p.removeprefix("**/").rstrip("/") + "/")
            for p in patterns
        ), f"{path} would be sent to the build"
