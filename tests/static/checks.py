"""Static checks for the Docker Compose stack (no Docker engine needed).

Each ``check_*`` function takes already-parsed data (or a repository root) and
returns a list of problems as human-readable strings; an empty list means the
check passed. The tests in ``test_static.py`` run every check against the real
repository and against deliberately broken copies, so every check is shown to
be able to fail.

Run ``python3 tests/static/checks.py`` for a summary of the compose stack and
every problem found (``--summary-only`` for just the summary).
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCHEMA_PATH = HERE / "compose-spec.json"
LESSON_TEMPO_FIXTURE = HERE / "lesson-tempo-config.yaml"
IMAGES_PATH = HERE / "images.yaml"

MEMORY_BUDGET_BYTES = 2 * 1024**3  # the issue: all limits together under 2 GiB

# Host ports the learner is told about (docs/docker.md): port -> service.
EXPECTED_HOST_PORTS = {
    3000: "grafana",
    8080: "gateway",
    3200: "tempo",
    15672: "rabbitmq",
    7070: "console",
}

# A service may go without a healthcheck only if it says why, in this field.
NO_HEALTHCHECK_FIELD = "x-tracelab-no-healthcheck"

# Lesson values that the lab has to change to run against its own S3 store instead of AWS.
TEMPO_LESSON_OVERRIDES = {
    "storage.trace.s3.endpoint": "the S3 endpoint is the compose stack's store, not AWS",
    "storage.trace.s3.region": "the store only accepts requests signed for its own region",
}

# What the shell of a `sh -c` command may call besides workspace binaries.
SHELL_WORDS = {
    "while", "do", "done", "if", "then", "else", "elif", "fi", "for", "in",
    "case", "esac", "true", "false", ":", "sleep", "echo", "trap", "exit",
    "exec", "set", "printf", "wait", "test", "[", "break", "continue",
}
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}


# ---------------------------------------------------------------------------
# loading


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_compose(root: Path = REPO) -> dict:
    return load_yaml(root / "docker-compose.yml")


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# small helpers


def parse_size(value) -> int | None:
    """Compose byte sizes: 512m, 1g, 160M, 1.5gb, or a plain number of bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*", str(value), re.IGNORECASE)
    if not m:
        return None
    number, unit = float(m.group(1)), m.group(2).lower()
    return int(number * {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit])


def parse_duration_ms(value) -> float | None:
    """Collector durations: 10s, 500ms, 1m, 1m30s."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value))
    if not parts or "".join(n + u for n, u in parts) != str(value).strip():
        return None
    scale = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
    return sum(float(n) * scale[u] for n, u in parts)


def image_ref(image: str) -> tuple[str, str | None, str | None]:
    """Split ``registry/name:tag@digest`` into (name, tag, digest)."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
        return name, tag, digest
    return image, None, digest


def memory_limit(service: dict):
    limits = (((service.get("deploy") or {}).get("resources") or {}).get("limits") or {})
    return limits.get("memory", service.get("mem_limit"))


def healthcheck_test(service: dict) -> list[str] | None:
    hc = service.get("healthcheck")
    if not hc or hc.get("disable"):
        return None
    test = hc.get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    if isinstance(test, list) and test and test[0] != "NONE":
        return [str(t) for t in test]
    return None


def as_list(command) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return command.split()
    return [str(c) for c in command]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${VAR}` / `${VAR:-default}` with `env` (default: none set)."""
    env = env or {}
    return INTERPOLATION.sub(lambda m: env.get(m.group(1), m.group(2) or ""), text)


def host_ports(service: dict, env: dict[str, str] | None = None) -> list[int]:
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            if p.get("published") is not None:
                out.append(int(interpolate(str(p["published"]), env).split("-")[0]))
            continue
        parts = interpolate(str(p), env).split("/")[0].split(":")
        if len(parts) >= 2:  # [ip:]host:container
            out.append(int(parts[-2].split("-")[0]))
    return out


def dotted(d, path: str):
    cur = d
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise KeyError(path)
        cur = cur[key]
    return cur


def leaves(d, prefix: str = ""):
    """(dotted path, value) for every scalar or list in a nested mapping."""
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, path + ".")
        else:
            yield path, value


def is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")).strip('"') == "no" and NO_HEALTHCHECK_FIELD in service


# ---------------------------------------------------------------------------
# compose: structure


def built_images(compose: dict) -> set[str]:
    """Image names some service of the stack builds from this repository."""
    return {
        svc["image"]
        for svc in compose.get("services", {}).values()
        if "build" in svc and svc.get("image")
    }


def runs_our_image(svc: dict, compose: dict) -> bool:
    """Whether the service builds, or runs an image another service builds."""
    return "build" in svc or svc.get("image") in built_images(compose)


def check_schema(compose: dict, schema: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        problems.append(f"compose schema: {where}: {err.message}")
    if "version" in compose:
        problems.append("compose: remove the obsolete top-level `version:` key (Compose Specification)")
    return problems


def check_images_pinned(compose: dict) -> list[str]:
    problems = []
    ours = built_images(compose)
    for name, svc in compose.get("services", {}).items():
        image = svc.get("image")
        if "build" in svc:
            if not image:
                problems.append(f"{name}: a built service needs an `image:` name so all services share one build")
            continue
        if image in ours:
            continue
        if not image:
            problems.append(f"{name}: no image")
            continue
        _, tag, digest = image_ref(image)
        if digest:
            continue
        if tag is None:
            problems.append(f"{name}: image {image!r} has no tag (that means :latest); pin a version")
        elif tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version (tag {tag!r})")
    return problems


def check_healthchecks(compose: dict) -> list[str]:
    problems = []
    services = compose.get("services", {})
    for name, svc in services.items():
        test = healthcheck_test(svc)
        reason = str(svc.get(NO_HEALTHCHECK_FIELD, "")).strip()
        if test is None and not reason:
            problems.append(
                f"{name}: no healthcheck (add one, or say why in `{NO_HEALTHCHECK_FIELD}:` for a one-shot job)"
            )
        if test is not None and reason:
            problems.append(f"{name}: has a healthcheck and also `{NO_HEALTHCHECK_FIELD}`; drop one")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on as a list waits for nothing; use `condition: service_healthy`")
            continue
        for dep, spec in deps.items():
            cond = (spec or {}).get("condition", "service_started")
            target = services.get(dep)
            if target is None:
                problems.append(f"{name}: depends_on unknown service {dep!r}")
            elif cond == "service_healthy" and healthcheck_test(target) is None:
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            elif cond == "service_completed_successfully" and str(target.get("restart", "no")) != "no":
                problems.append(f"{name}: waits for {dep} to complete, but {dep} restarts (not a one-shot job)")
            elif cond == "service_started" and healthcheck_test(target) is not None:
                problems.append(f"{name}: depends on {dep} only being started although {dep} has a healthcheck")
    return problems


def check_memory(compose: dict, budget: int = MEMORY_BUDGET_BYTES) -> list[str]:
    problems = []
    total = 0
    for name, svc in compose.get("services", {}).items():
        raw = memory_limit(svc)
        if raw is None:
            problems.append(f"{name}: no memory limit (deploy.resources.limits.memory)")
            continue
        size = parse_size(raw)
        if size is None:
            problems.append(f"{name}: memory limit {raw!r} does not parse")
            continue
        total += size
    if total >= budget:
        problems.append(
            f"memory limits add up to {total / 1024**2:.0f} MiB, not under {budget / 1024**2:.0f} MiB"
        )
    return problems


def memory_total_mib(compose: dict) -> float:
    return sum(parse_size(memory_limit(s)) or 0 for s in compose["services"].values()) / 1024**2


def check_ports(compose: dict, expected: dict[int, str] = EXPECTED_HOST_PORTS) -> list[str]:
    problems = []
    for name, svc in compose.get("services", {}).items():
        for p in svc.get("ports") or []:
            if isinstance(p, dict):
                published = str(p.get("published", ""))
            else:  # [ip:]published:target[/proto]
                published = re.sub(r"^[0-9.]+:", "", str(p).split("/")[0].rsplit(":", 1)[0])
            if not re.fullmatch(r"\$\{TRACELAB_[A-Z0-9_]+_HOST_PORT:-\d+\}", published):
                problems.append(
                    f"{name}: host port {published!r} cannot be moved; write it as "
                    "${TRACELAB_<NAME>_HOST_PORT:-<port>} so .env can change it"
                )
    seen: dict[int, str] = {}
    for name, svc in compose.get("services", {}).items():
        for port in host_ports(svc):
            if port in seen:
                problems.append(f"host port {port} is published by both {seen[port]} and {name}")
            seen[port] = name
    for port, name in expected.items():
        if seen.get(port) != name:
            problems.append(f"host port {port} should publish {name} (docs/docker.md), found {seen.get(port)}")
    return problems


def check_network_and_volumes(compose: dict) -> list[str]:
    problems = []
    networks = compose.get("networks") or {}
    if len(networks) > 1:
        problems.append(f"more than one network: {sorted(networks)}")
    declared = set((compose.get("volumes") or {}).keys())
    used = set()
    for name, svc in compose.get("services", {}).items():
        for net in svc.get("networks") or []:
            if net not in networks:
                problems.append(f"{name}: uses network {net!r} that is not the stack's one network")
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                if vol.get("type") == "volume":
                    used.add(vol.get("source"))
                continue
            source = str(vol).split(":")[0]
            if not source.startswith((".", "/", "~")):
                used.add(source)
    for vol in sorted(used - declared):
        problems.append(f"named volume {vol!r} is used but not declared under top-level volumes")
    for vol in sorted(declared - used):
        problems.append(f"named volume {vol!r} is declared but no service uses it")
    return problems


def bind_mounts(compose: dict) -> list[tuple[str, str, str]]:
    """(service, source, target) for every bind mount."""
    out = []
    for name, svc in compose.get("services", {}).items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                if vol.get("type") == "bind":
                    out.append((name, str(vol["source"]), str(vol["target"])))
                continue
            parts = str(vol).split(":")
            if parts[0].startswith((".", "/", "~")) and len(parts) >= 2:
                out.append((name, parts[0], parts[1]))
    return out


def check_selinux_labels(compose: dict) -> list[str]:
    """Every bind mount asks for an SELinux relabel (`z`), or SELinux hosts
    (Fedora, RHEL) refuse the container its own config files."""
    problems = []
    for name, svc in compose.get("services", {}).items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                if vol.get("type") == "bind" and (vol.get("bind") or {}).get("selinux") not in ("z", "Z"):
                    problems.append(f"{name}: bind mount {vol.get('source')} has no `bind: {{selinux: z}}`")
                continue
            parts = str(vol).split(":")
            if parts[0].startswith((".", "/", "~")):
                mode = parts[2].split(",") if len(parts) > 2 else []
                if "z" not in mode and "Z" not in mode:
                    problems.append(f"{name}: bind mount {parts[0]} has no `z` in its mode (e.g. `:ro,z`)")
    return problems


def check_mounts_readable(compose: dict, root: Path = REPO) -> list[str]:
    """Bind-mounted files are readable by any user: the images run as their
    own non-root users (tests/static/images.yaml), not as the file's owner."""
    import stat

    problems = []
    for name, source, _ in bind_mounts(compose):
        path = root / source
        if not path.exists():
            continue
        paths = [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]
        for p in paths:
            mode = p.stat().st_mode
            need = stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0)
            if mode & need != need:
                problems.append(
                    f"{name}: {p.relative_to(root)} is mode {stat.filemode(mode)}; the container's user "
                    f"cannot {'list' if p.is_dir() else 'read'} it (chmod o+r{'x' if p.is_dir() else ''})"
                )
    return problems


def check_mounts_exist(compose: dict, root: Path = REPO) -> list[str]:
    problems = []
    for name, source, _ in bind_mounts(compose):
        if not source.startswith("./"):
            problems.append(f"{name}: bind mount {source!r} is outside the repository")
        elif not (root / source).exists():
            problems.append(f"{name}: bind mount source {source} does not exist in the repository")
    for name, svc in compose.get("services", {}).items():
        build = svc.get("build")
        if isinstance(build, dict):
            context = root / build.get("context", ".")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.exists():
                problems.append(f"{name}: build file {dockerfile.relative_to(root)} does not exist")
    return problems


# ---------------------------------------------------------------------------
# workspace: binaries and env vars read by the code


@dataclass
class Crate:
    name: str
    dir: Path
    bins: list[str] = field(default_factory=list)
    path_deps: list[Path] = field(default_factory=list)


def workspace_crates(root: Path = REPO) -> dict[Path, Crate]:
    """Every workspace member, keyed by its directory (relative to root)."""
    with open(root / "Cargo.toml", "rb") as f:
        manifest = tomllib.load(f)
    crates = {}
    for member in manifest.get("workspace", {}).get("members", []):
        rel = Path(member)
        with open(root / rel / "Cargo.toml", "rb") as f:
            m = tomllib.load(f)
        name = m["package"]["name"]
        bins = [b["name"] for b in m.get("bin", []) if "name" in b]
        autobins = m["package"].get("autobins", True)
        if not any(b.get("path") == "src/main.rs" for b in m.get("bin", [])) and (root / rel / "src/main.rs").exists():
            if name not in bins:
                bins.append(name)
        if autobins and (root / rel / "src/bin").is_dir():
            for p in sorted((root / rel / "src/bin").iterdir()):
                stem = p.stem if p.suffix == ".rs" else p.name
                if (p.suffix == ".rs" or (p / "main.rs").exists()) and stem not in bins:
                    bins.append(stem)
        deps = []
        for table in ("dependencies",):
            for dep in (m.get(table) or {}).values():
                if isinstance(dep, dict) and "path" in dep:
                    deps.append((root / rel / dep["path"]).resolve().relative_to(root.resolve()))
        crates[rel] = Crate(name=name, dir=rel, bins=bins, path_deps=deps)
    return crates


def workspace_bins(root: Path = REPO) -> dict[str, Crate]:
    return {b: c for c in workspace_crates(root).values() for b in c.bins}


ENV_READ = re.compile(r"""env::var(?:_os)?\s*\(\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*\)""")


CLAP_ENV = re.compile(r'\benv\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"')


def cli_env_reads(crate_dir: Path) -> set[str]:
    """Env names the CLI's flags read (`#[arg(env = "NAME")]`) or its code reads."""
    names: set[str] = set()
    for path in sorted((crate_dir / "src").rglob("*.rs")):
        text = path.read_text(encoding="utf-8")
        names |= set(CLAP_ENV.findall(text)) | set(ENV_READ.findall(text))
    return names


def env_reads(path: Path) -> set[str]:
    return set(ENV_READ.findall(path.read_text(encoding="utf-8")))


def config_files_for(bin_name: str, root: Path = REPO) -> tuple[list[Path], list[str]]:
    """The config.rs files whose env reads apply to a service binary.

    The binary's own crate must have src/config.rs (the contract in
    docs/architecture.md); shared crates it depends on (transitively)
    contribute any config.rs they have.
    """
    crates = workspace_crates(root)
    by_bin = {b: c for c in crates.values() for b in c.bins}
    crate = by_bin.get(bin_name)
    if crate is None:
        return [], [f"{bin_name}: no workspace crate builds a binary named {bin_name!r}"]
    own = root / crate.dir / "src/config.rs"
    problems = []
    files = []
    if own.exists():
        files.append(own)
    else:
        problems.append(
            f"{bin_name}: {crate.dir}/src/config.rs does not exist yet; docs/architecture.md says every "
            f"service reads its environment there, so the env vars docker-compose.yml gives {bin_name} "
            f"cannot be checked against the code"
        )
    seen, todo = set(), list(crate.path_deps)
    while todo:
        dep = todo.pop()
        if dep in seen or dep not in crates:
            continue
        seen.add(dep)
        todo.extend(crates[dep].path_deps)
        if dep.parts[0] == "shared":
            files.extend(sorted((root / dep / "src").rglob("config.rs")))
    return files, problems


def architecture_env(root: Path = REPO) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Env var tables of docs/architecture.md: (common name -> default, service -> {name -> default})."""
    text = (root / "docs/architecture.md").read_text(encoding="utf-8")
    section = text.split("## Environment variables", 1)[-1].split("\n## ", 1)[0]
    common: dict[str, str] = {}
    per_service: dict[str, dict[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.strip().startswith("|") or set(cells[0]) <= {"-", " "}:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        if names:  # | `NAME` | default | meaning |
            common[names[0]] = cells[1]
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[1])
        if names:  # | service[, service] | `NAME` | default |
            for svc in re.split(r"\s*,\s*", cells[0]):
                per_service.setdefault(svc, {})[names[0]] = cells[2]
    return common, per_service


def required_env(bin_name: str, root: Path = REPO) -> set[str]:
    """Vars whose documented default points at this machine's loopback: useless in a container."""
    common, per_service = architecture_env(root)
    table = {**common, **per_service.get(bin_name, {})}
    return {n for n, d in table.items() if re.search(r"127\.0\.0\.1|localhost", d)}


def compose_binary(svc: dict) -> str | None:
    cmd = as_list(svc.get("entrypoint")) or as_list(svc.get("command"))
    return cmd[0] if cmd else None


def check_env_vars(compose: dict, root: Path = REPO) -> list[str]:
    """Env given in compose == env the code reads; every container-relevant one is given."""
    problems = []
    bins = workspace_bins(root)
    for name, svc in compose.get("services", {}).items():
        if not runs_our_image(svc, compose):
            continue
        binary = compose_binary(svc)
        crate = bins.get(binary or "")
        given = set(environment(svc))
        if crate is not None and crate.dir.parts[0] == "lab" and binary == "tracelab":
            # The CLI reads its environment through clap (`env = "NAME"`).
            reads = cli_env_reads(root / crate.dir)
            for var in sorted(given - reads):
                problems.append(f"{name}: docker-compose.yml sets {var}, which the tracelab CLI never reads")
            continue
        if crate is None or crate.dir.parts[0] != "services":
            # Shell loops and other binaries read no service config: they get flags.
            if given:
                problems.append(f"{name}: runs {binary!r}, not a service, yet is given env {sorted(given)}")
            continue
        files, missing = config_files_for(binary, root)
        problems.extend(missing)
        if missing:
            continue
        reads = set().union(*(env_reads(f) for f in files)) if files else set()
        if not reads:
            problems.append(f"{name}: found no std::env::var(\"...\") reads in {[str(f.relative_to(root)) for f in files]}")
            continue
        for var in sorted(given - reads):
            problems.append(f"{name}: docker-compose.yml sets {var}, which {binary}'s config never reads")
        for var in sorted(required_env(binary, root) - given):
            if var in reads:
                problems.append(f"{name}: {var} is not set; its default points at 127.0.0.1, which is the container itself")
            else:
                problems.append(f"{name}: docs/architecture.md lists {var} for {binary}, but its config does not read it")
    return problems


# ---------------------------------------------------------------------------
# the services' admin (fault) API: its own port, never published; its token
# from .env or the file a one-shot job generates, never written here

ADMIN_LISTEN_VAR = "TRACELAB_ADMIN_LISTEN"
ADMIN_TOKEN_VAR = "TRACELAB_ADMIN_TOKEN"
ADMIN_TOKEN_FILE_VAR = "TRACELAB_ADMIN_TOKEN_FILE"
# The only values TRACELAB_ADMIN_TOKEN may have in the compose file: taken
# from .env or the shell, never a token written in the file.
ADMIN_TOKEN_FROM_ENV = re.compile(r"\$\{TRACELAB_ADMIN_TOKEN(:?-)?\}")


def port_of(address: str) -> int | None:
    m = re.search(r":(\d+)$", address.strip())
    return int(m.group(1)) if m else None


def container_ports(service: dict) -> set[int]:
    """The container-side ports a service publishes to the host."""
    out = set()
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            if p.get("target") is not None:
                out.add(int(p["target"]))
            continue
        target = interpolate(str(p)).split("/")[0].split(":")[-1]
        if target.split("-")[0].isdigit():
            out.add(int(target.split("-")[0]))
    return out


def named_volume_mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(volume, target, read_only) for every named volume a service mounts."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            if v.get("type") == "volume":
                out.append((str(v.get("source")), str(v.get("target")), bool(v.get("read_only"))))
            continue
        parts = str(v).split(":")
        if len(parts) >= 2 and not parts[0].startswith((".", "/", "~")):
            mode = parts[2].split(",") if len(parts) > 2 else []
            out.append((parts[0], parts[1], "ro" in mode))
    return out


def token_writers(compose: dict, volume: str, directory: str, path: str) -> list[str]:
    """One-shot jobs that mount `volume` writable at `directory` and run
    `tracelab admin-token --file <path>`."""
    found = []
    for name, svc in compose.get("services", {}).items():
        cmd = as_list(svc.get("entrypoint")) or as_list(svc.get("command"))
        writes = cmd[:2] == ["tracelab", "admin-token"] and "--file" in cmd and path in cmd
        mounted = (volume, directory, False) in named_volume_mounts(svc)
        if is_one_shot(svc) and writes and mounted:
            found.append(name)
    return found


def check_admin_api(compose: dict, dockerfile: str) -> list[str]:
    problems = []
    services = compose.get("services", {})
    token_dirs = set()
    for name, svc in services.items():
        if not runs_our_image(svc, compose):
            continue
        env = environment(svc)
        listen = env.get("TRACELAB_LISTEN")
        if listen is not None:
            admin = env.get(ADMIN_LISTEN_VAR)
            if not admin:
                problems.append(
                    f"{name}: no {ADMIN_LISTEN_VAR}: its admin API would listen on the container's own "
                    "loopback, out of the CLI's reach"
                )
            elif port_of(admin) == port_of(listen):
                problems.append(f"{name}: {ADMIN_LISTEN_VAR} is its public port: the admin API needs one of its own")
            elif port_of(admin) in container_ports(svc):
                problems.append(
                    f"{name}: publishes its admin port {port_of(admin)} to the host; the admin API stays on the "
                    "compose network"
                )
        if ADMIN_TOKEN_VAR in env and not ADMIN_TOKEN_FROM_ENV.fullmatch(env[ADMIN_TOKEN_VAR]):
            problems.append(
                f"{name}: {ADMIN_TOKEN_VAR} is written in docker-compose.yml; take it from .env "
                "(${TRACELAB_ADMIN_TOKEN:-}) or leave it to the generated file"
            )
        path = env.get(ADMIN_TOKEN_FILE_VAR)
        if not path:
            if listen is not None:
                problems.append(
                    f"{name}: no {ADMIN_TOKEN_FILE_VAR}: without a token in .env it would draw one nobody holds"
                )
            continue
        directory = path.rsplit("/", 1)[0]
        mounts = [m for m in named_volume_mounts(svc) if m[1] == directory]
        if not mounts:
            problems.append(f"{name}: {ADMIN_TOKEN_FILE_VAR}={path}, but no named volume is mounted at {directory}")
            continue
        volume, _, read_only = mounts[0]
        if not read_only:
            problems.append(f"{name}: mounts {volume} writable; only the init job writes the admin token")
        writers = token_writers(compose, volume, directory, path)
        if not writers:
            problems.append(
                f"{name}: no one-shot job writes {path} (`tracelab admin-token --file {path}` with "
                f"{volume} mounted at {directory})"
            )
            continue
        token_dirs.add(directory)
        deps = svc.get("depends_on") or {}
        if not isinstance(deps, dict) or not any(
            (deps.get(w) or {}).get("condition") == "service_completed_successfully" for w in writers
        ):
            problems.append(
                f"{name}: reads {path} but does not wait for {writers[0]} (condition: service_completed_successfully)"
            )
    # A fresh named volume takes the owner of the image's directory: the init
    # job runs as the image's user, so that user must own it.
    for directory in sorted(token_dirs):
        uid, owned = runtime_user_owns(dockerfile, directory)
        if not owned:
            problems.append(
                f"Dockerfile: the runtime stage must create {directory} owned by its user {uid} "
                "(mkdir, chown), or admin-token-init cannot write the token into a fresh volume"
            )
    return problems


def runtime_user_owns(dockerfile: str, directory: str) -> tuple[str, bool]:
    """(the runtime stage's user id, whether a RUN of that stage creates
    `directory` and chowns it to that user). Docker copies the image
    directory's owner and mode into a fresh named volume mounted there, so
    this decides whether the image's user can write the volume."""
    stages = dockerfile_stages(dockerfile)
    runtime = stages[-1]["ins"] if stages else []
    users = [a for i, a in runtime if i == "USER"]
    uid = users[-1].split(":")[0] if users else "root"
    runs = " ; ".join(a for i, a in runtime if i == "RUN")
    made = re.search(rf"mkdir\s+(-p\s+)?{re.escape(directory)}(\s|$)", runs)
    owned = re.search(rf"chown\s+(-R\s+)?{re.escape(uid)}(:\S+)?\s+{re.escape(directory)}(\s|$)", runs)
    return uid, bool(made and owned)


# ---------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_stages(text: str) -> list[dict]:
    stages = []
    for ins, args in dockerfile_instructions(text):
        if ins == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            stage = {"image": parts[0], "name": parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None,
                     "ins": []}
            stages.append(stage)
        elif stages:
            stages[-1]["ins"].append((ins, args))
    return stages


DEBIAN_RELEASES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}


def debian_codename(image: str) -> str | None:
    _, tag, _ = image_ref(image)
    tag = tag or ""
    for number, name in DEBIAN_RELEASES.items():
        if name in tag or re.match(rf"{number}(\.\d+)*(-|$)", tag):
            return name
    return None


def check_dockerfile(compose: dict, dockerfile: str, root: Path = REPO) -> list[str]:
    problems = []
    stages = dockerfile_stages(dockerfile)
    if not stages:
        return ["Dockerfile: no FROM"]
    names = {s["name"] for s in stages if s["name"]}
    for s in stages:
        if s["image"] in names:
            continue
        _, tag, digest = image_ref(s["image"])
        if not digest and (not tag or tag == "latest" or not re.search(r"\d", tag)):
            problems.append(f"Dockerfile: base image {s['image']!r} is not pinned to a version")
    builds = [a for s in stages for i, a in s["ins"] if i == "RUN" and "cargo build" in a]
    if not any(all(flag in a for flag in ("--release", "--locked", "--workspace", "--bins")) for a in builds):
        problems.append("Dockerfile: no `cargo build --release --locked --workspace --bins`")
    runtime = stages[-1]
    users = [a for i, a in runtime["ins"] if i == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: the runtime stage must end with a non-root USER")
    rusts = [s for s in stages if image_ref(s["image"])[0].endswith("rust")]
    if not rusts:
        problems.append("Dockerfile: no official rust builder image")
    for rust in rusts:
        _, tag, _ = image_ref(rust["image"])
        m = re.match(r"(\d+)\.(\d+)", tag or "")
        if not m or (int(m.group(1)), int(m.group(2))) < (1, 95):
            problems.append(f"Dockerfile: builder {rust['image']!r} is older than Rust 1.95")
        if debian_codename(rust["image"]) != debian_codename(runtime["image"]) or not debian_codename(runtime["image"]):
            problems.append(
                f"Dockerfile: builder {rust['image']} and runtime {runtime['image']} are not the same Debian release"
            )
    # Binaries copied into the runtime image.
    copied = set()
    for ins, args in runtime["ins"]:
        if ins == "COPY" and "--from=" in args:
            copied.update(re.findall(r"target/release/([A-Za-z0-9_-]+)\b", args))
    produced = set(workspace_bins(root))
    for b in sorted(copied - produced):
        problems.append(f"Dockerfile: copies target/release/{b}, which no workspace crate builds")
    # Every binary a tracelab container runs must be built and copied.
    for name, svc in compose.get("services", {}).items():
        if not runs_our_image(svc, compose):
            continue
        for b in sorted(binaries_used(svc)):
            if b not in produced:
                problems.append(f"{name}: runs {b!r}, which is not a [[bin]] or package binary of the workspace")
            elif b not in copied:
                problems.append(f"{name}: runs {b!r}, which the Dockerfile does not copy into the image")
    return problems


def shell_commands(script: str) -> list[str]:
    """First word of each simple command in a small sh script."""
    words = []
    for line in script.splitlines():
        for part in re.split(r";|&&|\|\||\|", line):
            tokens = part.strip().split()
            while tokens and tokens[0] in {"do", "then", "else", "exec", "!"}:
                tokens = tokens[1:]
            if tokens and not tokens[0].startswith("#") and "=" not in tokens[0]:
                words.append(tokens[0].strip("'\""))
    return words


def binaries_used(svc: dict) -> set[str]:
    used = set()
    for cmd in (as_list(svc.get("entrypoint")) or as_list(svc.get("command")), healthcheck_test(svc) or []):
        if cmd and cmd[0] in ("CMD", "CMD-SHELL"):
            shell = cmd[0] == "CMD-SHELL"
            cmd = cmd[1:]
            if shell:
                cmd = ["/bin/sh", "-c", " ".join(cmd)]
        if not cmd:
            continue
        if cmd[0] in SHELLS and len(cmd) >= 3 and cmd[1] == "-c":
            used.update(w for w in shell_commands(cmd[2]) if w not in SHELL_WORDS)
        else:
            used.add(cmd[0])
    return used


# ---------------------------------------------------------------------------
# Grafana provisioning


def dashboard_uids_used(node) -> set[str]:
    """Every datasource uid a dashboard refers to."""
    found = set()
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and isinstance(ds.get("uid"), str) and not ds["uid"].startswith("$"):
            found.add(ds["uid"])
        elif isinstance(ds, str) and ds and not ds.startswith("$") and ds not in ("-- Grafana --", "-- Mixed --"):
            found.add(ds)
        for v in node.values():
            found |= dashboard_uids_used(v)
    elif isinstance(node, list):
        for v in node:
            found |= dashboard_uids_used(v)
    return found


def check_grafana(compose: dict, root: Path = REPO) -> list[str]:
    problems = []
    prov = root / "grafana/provisioning"
    datasources: dict[str, dict] = {}
    ds_files = sorted((prov / "datasources").glob("*.y*ml"))
    if not ds_files:
        problems.append("grafana: no datasource provisioning file under grafana/provisioning/datasources")
    for path in ds_files:
        try:
            doc = load_yaml(path)
        except yaml.YAMLError as e:
            problems.append(f"{path.relative_to(root)}: does not parse: {e}")
            continue
        for ds in (doc or {}).get("datasources") or []:
            uid = ds.get("uid")
            if not uid:
                problems.append(f"{path.relative_to(root)}: datasource {ds.get('name')!r} has no stable uid")
            elif uid in datasources:
                problems.append(f"grafana: datasource uid {uid!r} defined twice")
            else:
                datasources[uid] = ds
    by_type = {ds.get("type"): uid for uid, ds in datasources.items()}
    for want in ("tempo", "prometheus"):
        if want not in by_type:
            problems.append(f"grafana: no {want} datasource provisioned")
    tempo = datasources.get(by_type.get("tempo"), {})
    jd = tempo.get("jsonData") or {}
    if (jd.get("serviceMap") or {}).get("datasourceUid") not in datasources or \
            datasources.get((jd.get("serviceMap") or {}).get("datasourceUid"), {}).get("type") != "prometheus":
        problems.append("grafana: the Tempo datasource's serviceMap.datasourceUid must name the Prometheus datasource")
    if not (jd.get("nodeGraph") or {}).get("enabled"):
        problems.append("grafana: the Tempo datasource must have nodeGraph.enabled: true")
    for key in ("tracesToMetrics",):
        ref = (jd.get(key) or {}).get("datasourceUid")
        if ref and ref not in datasources:
            problems.append(f"grafana: Tempo jsonData.{key}.datasourceUid {ref!r} is not a provisioned datasource")
    for uid, ds in datasources.items():
        for dest in (ds.get("jsonData") or {}).get("exemplarTraceIdDestinations") or []:
            if dest.get("datasourceUid") not in datasources:
                problems.append(f"grafana: {uid} exemplar link to unknown datasource {dest.get('datasourceUid')!r}")
    # ${VAR} in provisioning files is env-expanded by Grafana: Grafana's own $__vars must be $$-escaped.
    for path in ds_files:
        for m in re.finditer(r"(?<!\$)\$(__[a-z]+)", path.read_text(encoding="utf-8")):
            problems.append(f"{path.relative_to(root)}: ${m.group(1)} would be expanded as an env var; write $${m.group(1)}")

    # Dashboard providers and files.
    mounts = {target: source for _, source, target in bind_mounts(compose)}
    dash_dirs = []
    for path in sorted((prov / "dashboards").glob("*.y*ml")):
        try:
            doc = load_yaml(path)
        except yaml.YAMLError as e:
            problems.append(f"{path.relative_to(root)}: does not parse: {e}")
            continue
        for p in (doc or {}).get("providers") or []:
            target = (p.get("options") or {}).get("path", "")
            source = mounts.get(target)
            if source is None:
                problems.append(f"{path.relative_to(root)}: provider path {target} is not a bind mount in docker-compose.yml")
            else:
                dash_dirs.append((target, root / source))
    if not dash_dirs:
        problems.append("grafana: no dashboard provider")
    uids: dict[str, Path] = {}
    files: dict[str, Path] = {}
    for target, source in dash_dirs:
        for path in sorted(source.rglob("*.json")):
            files[f"{target}/{path.relative_to(source)}"] = path
            try:
                dash = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                problems.append(f"{path.relative_to(root)}: invalid JSON: {e}")
                continue
            uid = dash.get("uid")
            if not uid:
                problems.append(f"{path.relative_to(root)}: dashboard has no stable uid")
            elif uid in uids:
                problems.append(f"{path.relative_to(root)}: dashboard uid {uid!r} also used by {uids[uid].name}")
            else:
                uids[uid] = path
            for ref in sorted(dashboard_uids_used(dash) - set(datasources)):
                problems.append(f"{path.relative_to(root)}: refers to datasource uid {ref!r}, which is not provisioned")
    home = environment((compose.get("services") or {}).get("grafana", {})).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if not home:
        problems.append("grafana: GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH is not set (no home dashboard)")
    elif home not in files:
        problems.append(f"grafana: home dashboard {home} is not one of the provisioned dashboard files")
    return problems


# ---------------------------------------------------------------------------
# Tempo


def load_images() -> dict:
    return load_yaml(IMAGES_PATH)


def _has_tool(facts: dict, exe: str) -> bool:
    tools = facts.get("tools") or []
    return exe in tools or exe.rsplit("/", 1)[-1] in tools


def check_image_facts(compose: dict, images: dict) -> list[str]:
    """Every image has an entry in images.yaml; every healthcheck of a
    verified image only calls what that image has; at most one service builds
    each image tag."""
    problems = []
    services = compose.get("services", {})
    for name, svc in services.items():
        image = svc.get("image")
        if not image:
            continue
        facts = images.get(image)
        if facts is None:
            problems.append(
                f"{name}: image {image} has no entry in tests/static/images.yaml "
                "(read its Dockerfile at that tag: shell, tools, user)"
            )
            continue
        test = healthcheck_test(svc)
        if test is None or not facts.get("verified"):
            continue
        kind, args = test[0], test[1:]
        if kind == "CMD-SHELL":
            if not facts.get("shell"):
                problems.append(f"{name}: CMD-SHELL healthcheck, but image {image} has no shell")
            continue
        if not args:
            problems.append(f"{name}: healthcheck runs nothing")
            continue
        exe = args[0]
        if exe in SHELLS or exe.endswith("/sh"):
            if not facts.get("shell") or not _has_tool(facts, exe):
                problems.append(f"{name}: healthcheck runs {exe!r}, but image {image} has no shell at that path")
                continue
            script = args[2] if len(args) > 2 and args[1] == "-c" else ""
            for word in shell_commands(script):
                if word not in SHELL_WORDS and not _has_tool(facts, word):
                    problems.append(f"{name}: healthcheck calls {word!r}, which image {image} does not have")
        elif not _has_tool(facts, exe):
            problems.append(
                f"{name}: healthcheck runs {exe!r}, which image {image} does not have "
                f"(it has: {', '.join(facts.get('tools') or []) or 'nothing listed'})"
            )
    builders: dict[str, list[str]] = {}
    for name, svc in services.items():
        if "build" in svc and svc.get("image"):
            builders.setdefault(svc["image"], []).append(name)
    for image, names in sorted(builders.items()):
        if len(names) > 1:
            problems.append(
                f"image {image} is built by {len(names)} services ({', '.join(sorted(names))}); "
                "put `build:` on one: parallel exports of one tag fail with the containerd image store"
            )
    return problems


def check_data_volumes(compose: dict, images: dict) -> list[str]:
    """A named volume holds an image's data only where that image keeps it."""
    problems = []
    for name, svc in compose.get("services", {}).items():
        data = (images.get(svc.get("image")) or {}).get("data")
        if not data:
            continue
        targets = []
        for v in svc.get("volumes") or []:
            if isinstance(v, str) and not v.startswith((".", "/")):
                targets.append(v.split(":")[1])
            elif isinstance(v, dict) and v.get("type") == "volume":
                targets.append(v.get("target"))
        if data not in targets:
            problems.append(
                f"{name}: image {svc['image']} keeps its data in {data}, but no named volume mounts there "
                f"(mounted: {', '.join(t for t in targets if t) or 'none'}); the data would not survive a restart"
            )
    return problems


def check_rabbitmq(compose: dict, root: Path = REPO) -> list[str]:
    """RabbitMQ keeps its data per node name and needs an absolute memory
    watermark well under its container limit."""
    problems = []
    svc = compose.get("services", {}).get("rabbitmq")
    if svc is None:
        return ["no rabbitmq service"]
    if not svc.get("hostname"):
        problems.append("rabbitmq: no fixed `hostname:`; the node name (rabbit@<hostname>) and its data change with every new container")
    limit = memory_limit(svc)
    limit_bytes = parse_size(limit) if limit is not None else None
    watermark = None
    for _, source, target in bind_mounts({"services": {"rabbitmq": svc}}):
        if target.startswith("/etc/rabbitmq/conf.d/") and (root / source).is_file():
            for line in (root / source).read_text(encoding="utf-8").splitlines():
                m = re.match(r"\s*vm_memory_high_watermark\.absolute\s*=\s*(\d+)\s*(MiB|MB|GiB|GB)?\s*$", line)
                if m:
                    unit = {"MiB": 1024**2, "MB": 10**6, "GiB": 1024**3, "GB": 10**9, None: 1}[m.group(2)]
                    watermark = int(m.group(1)) * unit
    if watermark is None:
        problems.append("rabbitmq: no vm_memory_high_watermark.absolute in a mounted conf.d file")
    elif limit_bytes is None or watermark > 0.75 * limit_bytes:
        problems.append(
            f"rabbitmq: memory watermark {watermark} bytes is not under 75% of the container limit {limit}"
        )
    return problems


def unverified_images(images: dict) -> list[str]:
    return sorted(name for name, facts in images.items() if not facts.get("verified"))


def dotted_or_none(d, path: str):
    try:
        return dotted(d, path)
    except KeyError:
        return None


def check_exemplar_label(tempo: dict, datasources: dict) -> list[str]:
    """Grafana's exemplar link reads the label Tempo's metrics-generator writes."""
    label = dotted_or_none(tempo, "overrides.defaults.metrics_generator.trace_id_label_name") or "traceID"
    problems = []
    for ds in datasources.get("datasources", []):
        for dest in (ds.get("jsonData") or {}).get("exemplarTraceIdDestinations") or []:
            if dest.get("name") != label:
                problems.append(
                    f"datasource {ds.get('name')}: exemplar label {dest.get('name')!r}, but Tempo writes "
                    f"{label!r} (overrides.defaults.metrics_generator.trace_id_label_name; unset means traceID)"
                )
    return problems


def check_query_end_cutoff(tempo: dict) -> list[str]:
    """Tempo 3 ends every search `query_end_cutoff` before now: set it on purpose."""
    value = dotted_or_none(tempo, "query_frontend.query_end_cutoff")
    if value is None:
        return ["tempo: query_frontend.query_end_cutoff is unset (Tempo's default hides the last 30 s from search)"]
    ms = parse_duration_ms(value)
    if ms is None or ms <= 0:
        return [f"tempo: query_frontend.query_end_cutoff {value!r} must be a duration above 0 (live_store.fail_on_high_lag needs one)"]
    return []


def lesson_tempo_config() -> dict:
    return load_yaml(LESSON_TEMPO_FIXTURE)


def check_tempo(tempo: dict, compose: dict, lesson: dict) -> list[str]:
    problems = []
    for path, want in leaves(lesson):
        try:
            got = dotted(tempo, path)
        except KeyError:
            problems.append(f"tempo-config.yaml: lesson key {path} is missing")
            continue
        if path in TEMPO_LESSON_OVERRIDES:
            continue
        if got != want:
            problems.append(f"tempo-config.yaml: {path} is {got!r}, the lesson has {want!r}")
    services = compose.get("services", {})
    tempo_svc = services.get("tempo", {})
    try:
        host = str(dotted(tempo, "storage.trace.s3.endpoint")).split(":")[0]
        if host not in services:
            problems.append(f"tempo-config.yaml: S3 endpoint host {host!r} is not a compose service")
        if dotted(tempo, "storage.trace.s3.insecure") is not True:
            problems.append("tempo-config.yaml: storage.trace.s3.insecure must be true: the store speaks plain HTTP")
    except KeyError as e:
        problems.append(f"tempo-config.yaml: {e.args[0]} missing")
    bucket = (tempo.get("storage", {}).get("trace", {}).get("s3", {}) or {}).get("bucket")
    if not bucket_jobs(compose, str(bucket)):
        problems.append(f"docker-compose.yml: no one-shot job creates Tempo's bucket {bucket!r}")
    # ${VAR} needs -config.expand-env=true and the variable in tempo's environment.
    text_vars = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", yaml.safe_dump(tempo)))
    if text_vars:
        if "-config.expand-env=true" not in as_list(tempo_svc.get("command")):
            problems.append("tempo: the config uses ${VAR} but tempo's command lacks -config.expand-env=true")
        for var in sorted(text_vars - set(environment(tempo_svc))):
            problems.append(f"tempo: the config uses ${{{var}}} but docker-compose.yml does not set {var} for tempo")
    procs = set((((tempo.get("overrides") or {}).get("defaults") or {}).get("metrics_generator") or {}).get("processors") or [])
    for want in ("service-graphs", "span-metrics"):
        if want not in procs:
            problems.append(f"tempo-config.yaml: overrides.defaults.metrics_generator.processors lacks {want}")
    rw = (((tempo.get("metrics_generator") or {}).get("storage") or {}).get("remote_write") or [])
    prom_cmd = as_list(services.get("prometheus", {}).get("command"))
    if not any(re.match(r"http://prometheus:9090/api/v1/write$", str(r.get("url", ""))) for r in rw):
        problems.append("tempo-config.yaml: metrics_generator must remote-write to http://prometheus:9090/api/v1/write")
    if "--web.enable-remote-write-receiver" not in prom_cmd:
        problems.append("prometheus: --web.enable-remote-write-receiver is off, so Tempo's metrics are refused")
    for legacy in ("ingester", "compactor", "metrics_generator_client", "ingester_client"):
        if legacy in tempo:
            problems.append(f"tempo-config.yaml: `{legacy}` was removed in Tempo 3 (the pinned version)")
    return problems


# ---------------------------------------------------------------------------
# The S3 store, its bucket job and Tempo's s3 block


def job_text(svc: dict) -> str:
    """A service's entrypoint and command as one string, as the container runs them."""
    return " ".join(as_list(svc.get("entrypoint")) + as_list(svc.get("command")))


def bucket_jobs(compose: dict, bucket: str) -> list[str]:
    """One-shot services whose entrypoint or command names the bucket."""
    word = re.compile(rf"(?<![\w.-]){re.escape(bucket)}(?![\w.-])")
    return [
        name for name, svc in compose.get("services", {}).items()
        if is_one_shot(svc) and word.search(job_text(svc))
    ]


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of `--flag value` or `--flag=value` in an argument list."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def volume_targets(svc: dict) -> list[str]:
    """Where the service's named volumes are mounted."""
    targets = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str) and not v.startswith((".", "/", "~")):
            targets.append(v.split(":")[1])
        elif isinstance(v, dict) and v.get("type") == "volume":
            targets.append(str(v.get("target")))
    return targets


def job_executables(svc: dict) -> list[str]:
    """What a one-shot job runs: its program, and every command of a `sh -c` script."""
    cmd = as_list(svc.get("entrypoint")) + as_list(svc.get("command"))
    if not cmd:
        return []
    if cmd[0] in SHELLS or cmd[0].endswith("/sh"):
        script = cmd[2] if len(cmd) > 2 and cmd[1] == "-c" else ""
        return [cmd[0], *(w for w in shell_commands(script) if w not in SHELL_WORDS)]
    return [cmd[0]]


def check_s3_store(compose: dict, tempo: dict, images: dict) -> list[str]:
    """Tempo's s3 block, the store it names and the job that creates its
    bucket agree with each other and with what the store's image does at its
    pinned tag (the `s3:` facts in tests/static/images.yaml)."""
    services = compose.get("services", {})
    s3 = dotted_or_none(tempo, "storage.trace.s3") or {}
    host, _, port = str(s3.get("endpoint", "")).partition(":")
    store = services.get(host)
    if store is None:
        return [f"tempo-config.yaml: storage.trace.s3.endpoint {s3.get('endpoint')!r} is not a compose service"]
    image = store.get("image")
    facts = images.get(image) or {}
    sf = facts.get("s3")
    if not facts.get("verified") or not sf:
        return [f"{host}: image {image} has no verified `s3:` facts in tests/static/images.yaml"]
    problems = []
    args = as_list(store.get("command"))

    listen = flag_value(args, sf["port_flag"]) or f":{sf['default_port']}"
    listen_port = listen.rsplit(":", 1)[-1]
    if port != listen_port:
        problems.append(f"tempo-config.yaml: the S3 endpoint's port is {port or 'missing'}, but {host} listens on {listen_port}")
    region = flag_value(args, sf["region_flag"]) or sf["region"]
    if s3.get("region") != region:
        problems.append(
            f"tempo-config.yaml: region {s3.get('region')!r}, but {host} accepts only requests signed for {region!r}"
        )
    if s3.get("forcepathstyle") is not True:
        problems.append(
            "tempo-config.yaml: storage.trace.s3.forcepathstyle must be true: the store serves "
            f"http://{host}:{listen_port}/<bucket>, and no host <bucket>.{host} exists"
        )

    # One root account: the store reads it, the job and Tempo sign with it.
    store_env, tempo_env = environment(store), environment(services.get("tempo", {}))
    access_var, secret_var = sf["credentials_env"]
    for var in (access_var, secret_var):
        if not store_env.get(var):
            problems.append(f"{host}: {var} is not set, so the store has no root account")
    for key, var in (("access_key", access_var), ("secret_key", secret_var)):
        m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", str(s3.get(key, "")))
        if not m:
            problems.append(f"tempo-config.yaml: storage.trace.s3.{key} is not a ${{VAR}} from tempo's environment")
        elif tempo_env.get(m.group(1)) != store_env.get(var):
            problems.append(
                f"tempo: {key} is ${{{m.group(1)}}} = {tempo_env.get(m.group(1))!r}, "
                f"but {host}'s {var} is {store_env.get(var)!r}"
            )

    health = flag_value(args, sf["health_flag"])
    url = next((a for a in healthcheck_test(store) or [] if re.match(r"https?://", a)), None)
    if url:
        m = re.match(r"https?://[^/:]+(?::(\d+))?(/.*)?$", url)
        if health is None:
            problems.append(f"{host}: the healthcheck GETs {url}, but without {sf['health_flag']} the store has no health route")
        elif m and (m.group(1) != listen_port or m.group(2) != health):
            problems.append(f"{host}: the healthcheck GETs {url}, but the store serves {health} on port {listen_port}")

    after = sf["data_after"]
    data = args[args.index(after) + 1] if after in args and args.index(after) + 1 < len(args) else None
    if data is None:
        problems.append(f"{host}: the command has no `{after} <directory>`")
    elif data not in volume_targets(store):
        problems.append(
            f"{host}: the store keeps its buckets in {data}, but no named volume mounts there "
            f"(mounted: {', '.join(volume_targets(store)) or 'none'}); the traces would not survive a restart"
        )

    bucket = str(s3.get("bucket"))
    waits = {d for d, spec in (services.get("tempo", {}).get("depends_on") or {}).items()
             if (spec or {}).get("condition") == "service_completed_successfully"}
    jobs = [j for j in bucket_jobs(compose, bucket) if j in waits]
    if not jobs:
        problems.append(f"tempo: waits for no one-shot job (service_completed_successfully) that creates bucket {bucket!r}")
    for name in jobs:
        job = services[name]
        text = job_text(job)
        job_facts = images.get(job.get("image")) or {}
        if job.get("image") == image:
            cmd = as_list(job.get("command"))
            if not job.get("entrypoint") and cmd and (cmd[0] in SHELLS or cmd[0].endswith("/sh")):
                problems.append(
                    f"{name}: runs {cmd[0]} as the command of {image}, whose entrypoint runs "
                    f"`{facts.get('entrypoint_runs')} \"$@\"`; set `entrypoint:` to the shell"
                )
            for exe in job_executables(job):
                if not _has_tool(job_facts, exe):
                    problems.append(f"{name}: runs {exe!r}, which image {image} does not have")
            if sf["create_bucket"] in text and not re.search(
                    rf"{sf['list_buckets']}.*\|\|.*{sf['create_bucket']}", text, re.S):
                problems.append(
                    f"{name}: `{sf['create_bucket']}` fails on a bucket that exists (BucketAlreadyOwnedByYou), "
                    f"so the second `docker compose up` would stop Tempo; check `{sf['list_buckets']}` first"
                )
            endpoint = environment(job).get(sf["admin_endpoint_env"])
            if endpoint != f"http://{host}:{listen_port}":
                problems.append(f"{name}: {sf['admin_endpoint_env']} is {endpoint!r}, the store is http://{host}:{listen_port}")
            for var in (access_var, secret_var):
                if environment(job).get(var) != store_env.get(var):
                    problems.append(f"{name}: {var} differs from {host}'s, so its requests are refused")
        if ((job.get("depends_on") or {}).get(host) or {}).get("condition") != "service_healthy":
            problems.append(f"{name}: does not wait for {host} to be healthy")
    return problems


def check_docs_name_the_s3_account(compose: dict, images: dict, docs: dict[str, str]) -> list[str]:
    """The docs that tell a learner the store's root account give the one
    docker-compose.yml sets (docs: file name -> text)."""
    store = compose.get("services", {}).get("s3", {})
    sf = (images.get(store.get("image")) or {}).get("s3") or {}
    env = environment(store)
    problems = []
    for var in sf.get("credentials_env") or []:
        for name, text in docs.items():
            if f"{env.get(var)}" not in text:
                problems.append(f"{name}: does not give {var} {env.get(var)!r}, the s3 store's root account in docker-compose.yml")
    return problems


def lesson_block_from_text(text: str) -> dict:
    """The lesson's tempo-config.yaml block ("# tempo-config.yaml" up to the next prose line)."""
    start = text.index("# tempo-config.yaml")
    lines = []
    for line in text[start:].splitlines()[1:]:
        if line and not line.startswith((" ", "#")) and ":" not in line:
            break
        lines.append(line)
    return yaml.safe_load("\n".join(lines))


# ---------------------------------------------------------------------------
# sampling: sampling.yaml <-> otel-collector.yaml


def policies_from_sampling(sampling: dict) -> list[dict]:
    return (sampling.get("tail_based") or {}).get("policies") or []


def check_sampling_agreement(sampling: dict, collector: dict) -> list[str]:
    problems = []
    ts = (collector.get("processors") or {}).get("tail_sampling")
    if not ts:
        return ["otel-collector.yaml: no tail_sampling processor"]
    want = policies_from_sampling(sampling)
    got = ts.get("policies") or []
    if [p.get("name") for p in want] != [p.get("name") for p in got]:
        problems.append(
            f"tail policies differ: sampling.yaml has {[p.get('name') for p in want]}, "
            f"otel-collector.yaml has {[p.get('name') for p in got]}"
        )
    for w, g in zip(want, got):
        if w != g:
            problems.append(f"tail policy {w.get('name')!r}: sampling.yaml says {w}, otel-collector.yaml says {g}")
    wait_ms = (sampling.get("tail_based") or {}).get("decision_wait_ms")
    got_ms = parse_duration_ms(ts.get("decision_wait", "30s"))
    if wait_ms is not None and got_ms != float(wait_ms):
        problems.append(
            f"decision wait differs: sampling.yaml decision_wait_ms {wait_ms}, otel-collector.yaml decision_wait "
            f"{ts.get('decision_wait')}"
        )
    pipeline = ((collector.get("service") or {}).get("pipelines") or {}).get("traces") or {}
    procs = pipeline.get("processors") or []
    if "tail_sampling" not in procs:
        problems.append("otel-collector.yaml: tail_sampling is not in the traces pipeline")
    return problems


def check_collector(collector: dict, compose: dict) -> list[str]:
    problems = []
    pipeline = ((collector.get("service") or {}).get("pipelines") or {}).get("traces") or {}
    procs = pipeline.get("processors") or []
    order = ["memory_limiter", "redaction", "tail_sampling", "batch"]
    base = [p.split("/")[0] for p in procs]
    if [p for p in base if p in order] != order:
        problems.append(f"otel-collector.yaml: traces processors must run in the order {order}, got {procs}")
    elif base[0] != "memory_limiter":
        problems.append("otel-collector.yaml: memory_limiter must come first")
    red = (collector.get("processors") or {}).get("redaction") or {}
    patterns = [re.compile(v.replace("(?i)", ""), re.IGNORECASE if "(?i)" in v else 0) for v in red.get("blocked_values") or []]
    if not any(p.search("4242424242424242") for p in patterns):
        problems.append("otel-collector.yaml: redaction does not mask the test card number 4242424242424242")
    keys = [re.compile(v.replace("(?i)", ""), re.IGNORECASE) for v in red.get("blocked_key_patterns") or []]
    for key in ("http.request.header.authorization", "auth.token"):
        if not any(k.fullmatch(key) for k in keys):
            problems.append(f"otel-collector.yaml: redaction does not mask attribute {key}")
    exporters = pipeline.get("exporters") or []
    conf = collector.get("exporters") or {}
    targets = [str((conf.get(e) or {}).get("endpoint", "")) for e in exporters]
    if not any(t.replace("http://", "").startswith("tempo:4317") for t in targets):
        problems.append(f"otel-collector.yaml: the traces pipeline does not export OTLP/gRPC to tempo:4317 ({targets})")
    http = ((((collector.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("http") or {})
    port = str(http.get("endpoint", "")).rsplit(":", 1)[-1]
    for name, svc in compose.get("services", {}).items():
        endpoint = environment(svc).get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint and endpoint.rstrip("/") != f"http://otel-collector:{port}":
            problems.append(f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}, the collector's OTLP/HTTP is otel-collector:{port}")
    return problems


def check_sampling_values(lab: dict, lesson: dict, service_names: set[str]) -> list[str]:
    """sampling.yaml keeps every trace; sampling.lesson.yaml has the lesson's numbers."""
    problems = []
    head = lab.get("head_based") or {}
    if head.get("rate") != 1.0:
        problems.append(f"sampling.yaml: head rate is {head.get('rate')}, the lab default is 1.0")
    for svc, rate in (head.get("per_service") or {}).items():
        if rate != 1.0:
            problems.append(f"sampling.yaml: per_service {svc} is {rate}, the lab default is 1.0")
    for svc in set(head.get("per_service") or {}) | set((lesson.get("head_based") or {}).get("per_service") or {}):
        if svc not in service_names:
            problems.append(f"sampling: per_service key {svc!r} is not a service.name ({sorted(service_names)})")
    default = {p.get("name"): p for p in policies_from_sampling(lab)}.get("default", {})
    if (default.get("probabilistic") or {}).get("sampling_percentage") != 100:
        problems.append("sampling.yaml: the default tail policy must keep 100% in the lab")
    lh = lesson.get("head_based") or {}
    if lh.get("rate") != 0.1 or (lh.get("per_service") or {}) != {"payment": 1.0, "search": 0.01}:
        problems.append(f"sampling.lesson.yaml: head section differs from the lesson (0.1; payment 1.0, search 0.01): {lh}")
    lp = {p.get("name"): p for p in policies_from_sampling(lesson)}
    if (lp.get("default", {}).get("probabilistic") or {}).get("sampling_percentage") != 5:
        problems.append("sampling.lesson.yaml: the lesson keeps 5% of the rest")
    if (lp.get("slow_requests", {}).get("latency") or {}).get("threshold_ms") != 2000:
        problems.append("sampling.lesson.yaml: the lesson's slow threshold is 2000 ms")
    if (lp.get("errors", {}).get("status_code") or {}).get("status_codes") != ["ERROR"]:
        problems.append("sampling.lesson.yaml: the lesson keeps every ERROR trace")
    # Apart from the percentage, the two files' tail policies are the same.
    strip = lambda ps: [p for p in ps if p.get("name") != "default"]  # noqa: E731
    if strip(policies_from_sampling(lab)) != strip(policies_from_sampling(lesson)):
        problems.append("sampling.yaml and sampling.lesson.yaml differ in the errors/slow_requests policies")
    return problems


# ---------------------------------------------------------------------------
# summary


def summary(root: Path = REPO) -> str:
    compose = load_compose(root)
    services = compose["services"]
    one_shot = [n for n, s in services.items() if is_one_shot(s)]
    lines = [
        f"containers: {len(services)} ({len(services) - len(one_shot)} long-running, one-shot: {', '.join(one_shot)})",
        f"memory limits: {memory_total_mib(compose):.0f} MiB of {MEMORY_BUDGET_BYTES / 1024**2:.0f} MiB",
        "host ports: " + ", ".join(f"{p} {n}" for n, s in services.items() for p in host_ports(s)),
        "images not yet checked against their upstream source: " + (", ".join(unverified_images(load_images())) or "none"),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# the lab console


def listen_port(value: str) -> int | None:
    """The port of an `ip:port` listen address."""
    m = re.fullmatch(r".*:(\d+)", str(value).strip())
    return int(m.group(1)) if m else None


def check_console(compose: dict) -> list[str]:
    """The console runs `tracelab console`, is published on 127.0.0.1 only (it
    holds the admin token and drives faults), listens where it is published,
    and knows every tracelab service at the port that service listens on."""
    services = compose.get("services", {})
    console = services.get("console")
    if console is None:
        return ["console: no `console` service: the lab's one URL (the console) is missing"]
    problems = []
    if as_list(console.get("command"))[:2] != ["tracelab", "console"]:
        problems.append(f"console: runs {as_list(console.get('command'))}, not `tracelab console`")
    env = environment(console)
    inside = listen_port(env.get("TRACELAB_CONSOLE_LISTEN", ""))
    ports = console.get("ports") or []
    if not ports:
        problems.append("console: not published on the host")
    for p in ports:
        if isinstance(p, dict):
            host_ip, target = str(p.get("host_ip", "")), p.get("target")
        else:
            parts = interpolate(str(p)).split("/")[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            target = parts[-1]
        if host_ip != "127.0.0.1":
            problems.append(
                f"console: published as {p!r}; publish it on 127.0.0.1 only "
                "(it holds the admin token and sets faults)"
            )
        if inside is None or str(target) != str(inside):
            problems.append(
                f"console: publishes container port {target} but listens on "
                f"{env.get('TRACELAB_CONSOLE_LISTEN')!r} (TRACELAB_CONSOLE_LISTEN)"
            )
    given = {}
    for item in env.get("TRACELAB_CONSOLE_SERVICES", "").split(","):
        name, _, url = item.strip().partition("=")
        if name:
            given[name] = url
    for name, svc in services.items():
        listen = environment(svc).get("TRACELAB_LISTEN")
        if svc is console or listen is None:
            continue
        want = f"http://{name}:{listen_port(listen)}"
        if given.get(name) != want:
            problems.append(
                f"console: TRACELAB_CONSOLE_SERVICES gives {name} as {given.get(name)!r}, "
                f"but {name} listens at {want}"
            )
    for name in sorted(set(given) - set(services)):
        problems.append(f"console: TRACELAB_CONSOLE_SERVICES names {name}, which is no compose service")
    return problems


CONSOLE_STATE_VAR = "TRACELAB_HOME"


def check_console_state(compose: dict, dockerfile: str) -> list[str]:
    """The console keeps the exercise state and history in TRACELAB_HOME:
    that directory is a named volume, mounted writable, which the image's
    user owns, so the exercise survives a recreated container."""
    console = compose.get("services", {}).get("console")
    if console is None:
        return []  # check_console reports the missing console
    home = environment(console).get(CONSOLE_STATE_VAR)
    if not home:
        return [
            f"console: no {CONSOLE_STATE_VAR}: the console would keep the exercise under the image "
            "user's home (/nonexistent), which it cannot write"
        ]
    home = home.rstrip("/")
    mounts = [m for m in named_volume_mounts(console) if m[1].rstrip("/") == home]
    if not mounts:
        return [
            f"console: {CONSOLE_STATE_VAR}={home} is on no named volume: the exercise state and "
            "history are lost when the container is recreated"
        ]
    problems = []
    volume, _, read_only = mounts[0]
    if read_only:
        problems.append(f"console: mounts {volume} read-only at {home}; the console writes the exercise there")
    for name, svc in compose.get("services", {}).items():
        if name != "console" and any(m[0] == volume for m in named_volume_mounts(svc)):
            problems.append(f"{name}: mounts the console's state volume {volume}; only the console keeps it")
    uid, owned = runtime_user_owns(dockerfile, home)
    if not owned:
        problems.append(
            f"Dockerfile: the runtime stage must create {home} owned by its user {uid} (mkdir, chown), "
            f"or the console cannot write its state into a fresh {volume} volume"
        )
    return problems


def all_problems(root: Path = REPO) -> dict[str, list[str]]:
    compose = load_compose(root)
    collector = load_yaml(root / "otel-collector.yaml")
    sampling = load_yaml(root / "sampling.yaml")
    names = {environment(s).get("OTEL_SERVICE_NAME") for s in compose["services"].values()} - {None}
    return {
        "schema": check_schema(compose, load_schema()),
        "images": check_images_pinned(compose),
        "healthchecks": check_healthchecks(compose),
        "memory": check_memory(compose),
        "ports": check_ports(compose),
        "network/volumes": check_network_and_volumes(compose),
        "mounts": check_mounts_exist(compose, root)
        + check_selinux_labels(compose)
        + check_mounts_readable(compose, root),
        "env": check_env_vars(compose, root),
        "dockerfile": check_dockerfile(compose, (root / "Dockerfile").read_text(encoding="utf-8"), root),
        "admin api": check_admin_api(compose, (root / "Dockerfile").read_text(encoding="utf-8")),
        "grafana": check_grafana(compose, root),
        "tempo": check_tempo(load_yaml(root / "tempo-config.yaml"), compose, lesson_tempo_config())
        + check_query_end_cutoff(load_yaml(root / "tempo-config.yaml")),
        "s3 store": check_s3_store(compose, load_yaml(root / "tempo-config.yaml"), load_images())
        + check_docs_name_the_s3_account(compose, load_images(), {
            name: (root / name).read_text(encoding="utf-8") for name in ("README.md", "docs/docker.md")}),
        "image facts": check_image_facts(compose, load_images()) + check_data_volumes(compose, load_images()),
        "rabbitmq": check_rabbitmq(compose, root),
        "console": check_console(compose)
        + check_console_state(compose, (root / "Dockerfile").read_text(encoding="utf-8")),
        "exemplars": check_exemplar_label(
            load_yaml(root / "tempo-config.yaml"),
            load_yaml(root / "grafana/provisioning/datasources/datasources.yaml"),
        ),
        "collector": check_collector(collector, compose),
        "sampling": check_sampling_agreement(sampling, collector)
        + check_sampling_values(sampling, load_yaml(root / "sampling.lesson.yaml"), names),
    }


if __name__ == "__main__":
    print(summary())
    if "--summary-only" in sys.argv:
        sys.exit(0)
    failed = False
    for name, problems in all_problems().items():
        for p in problems:
            failed = True
            print(f"[{name}] {p}")
    sys.exit(1 if failed else 0)
