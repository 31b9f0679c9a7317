"""Static checks of the Docker Compose stack, run by scripts/static-checks.

Every check runs twice: against the repository (must report nothing) and
against a deliberately broken copy (must report the breakage), so none of them
can pass vacuously.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checks  # noqa: E402

REPO = checks.REPO
LESSON_TEXT = REPO.parent / "shared/lesson/distributed-tracing-lesson.ja.txt"


def assert_reports(problems: list[str], *needles: str) -> None:
    text = "\n".join(problems)
    assert problems, "the checker reported nothing for a broken input"
    for needle in needles:
        assert needle in text, f"expected a problem mentioning {needle!r}, got:\n{text}"


@pytest.fixture(scope="module")
def compose() -> dict:
    return checks.load_compose()


@pytest.fixture
def broken(compose) -> dict:
    return copy.deepcopy(compose)


@pytest.fixture(scope="module")
def collector() -> dict:
    return checks.load_yaml(REPO / "otel-collector.yaml")


@pytest.fixture(scope="module")
def sampling() -> dict:
    return checks.load_yaml(REPO / "sampling.yaml")


@pytest.fixture(scope="module")
def lesson_sampling() -> dict:
    return checks.load_yaml(REPO / "sampling.lesson.yaml")


@pytest.fixture(scope="module")
def tempo() -> dict:
    return checks.load_yaml(REPO / "tempo-config.yaml")


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text(encoding="utf-8")


# ---------------------------------------------------------------- schema


def test_compose_validates_against_the_compose_schema(compose):
    assert checks.check_schema(compose, checks.load_schema()) == []


def test_schema_check_rejects_a_bad_compose_file(broken):
    broken["version"] = "3.8"
    broken["services"]["gateway"]["ports"] = "8080:8080"  # must be a list
    broken["services"]["gateway"]["restart"] = ["always"]
    assert_reports(checks.check_schema(broken, checks.load_schema()), "version", "services/gateway/ports")


def test_the_vendored_schema_is_the_kit_copy():
    kit = REPO.parent / "shared/schemas/compose-spec.json"
    if not kit.exists():
        pytest.skip("../shared is not beside the repository")
    assert json.loads(kit.read_text()) == checks.load_schema()


# ---------------------------------------------------------------- images


def test_every_image_is_pinned(compose):
    assert checks.check_images_pinned(compose) == []


@pytest.mark.parametrize(
    "image, needle",
    [
        ("grafana/grafana:latest", "not pinned"),
        ("grafana/grafana", "no tag"),
        ("grafana/grafana:main", "not pinned"),
        ("localhost:5000/grafana", "no tag"),
    ],
)
def test_unpinned_images_are_reported(broken, image, needle):
    broken["services"]["grafana"]["image"] = image
    assert_reports(checks.check_images_pinned(broken), "grafana", needle)


def test_digest_and_registry_port_are_understood():
    assert checks.image_ref("localhost:5000/a/b:1.2") == ("localhost:5000/a/b", "1.2", None)
    assert checks.image_ref("a/b@sha256:00") == ("a/b", None, "sha256:00")


def test_built_service_needs_an_image_name(broken):
    del broken["services"]["gateway"]["image"]
    assert_reports(checks.check_images_pinned(broken), "gateway", "image")


# ---------------------------------------------------------------- healthchecks


def test_every_service_has_a_healthcheck_or_says_why(compose):
    assert checks.check_healthchecks(compose) == []
    exempt = {n for n, s in compose["services"].items() if checks.NO_HEALTHCHECK_FIELD in s}
    # Exemptions are explicit and few: the one-shot bucket and admin token jobs,
    # and the collector whose scratch image cannot run a probe.
    assert exempt == {"s3-init", "admin-token-init", "otel-collector"}


def test_missing_healthcheck_is_reported(broken):
    del broken["services"]["payment"]["healthcheck"]
    assert_reports(checks.check_healthchecks(broken), "payment: no healthcheck", "payment to be healthy")


def test_disabled_healthcheck_is_reported(broken):
    broken["services"]["postgres"]["healthcheck"] = {"disable": True}
    assert_reports(checks.check_healthchecks(broken), "postgres: no healthcheck")


def test_depends_on_list_and_wrong_conditions_are_reported(broken):
    broken["services"]["gateway"]["depends_on"] = ["auth"]
    broken["services"]["tempo"]["depends_on"] = {"s3": {"condition": "service_completed_successfully"}}
    broken["services"]["grafana"]["depends_on"]["tempo"] = {"condition": "service_started"}
    assert_reports(
        checks.check_healthchecks(broken),
        "gateway: depends_on as a list",
        "tempo: waits for s3 to complete",
        "grafana: depends on tempo only being started",
    )


# ---------------------------------------------------------------- memory


def test_every_service_has_a_memory_limit_and_the_sum_is_under_2_gib(compose):
    assert checks.check_memory(compose) == []
    assert checks.memory_total_mib(compose) < 2048


def test_missing_memory_limit_is_reported(broken):
    del broken["services"]["tempo"]["deploy"]
    assert_reports(checks.check_memory(broken), "tempo: no memory limit")


def test_memory_over_budget_is_reported(broken):
    broken["services"]["tempo"]["deploy"]["resources"]["limits"]["memory"] = "1g"
    assert_reports(checks.check_memory(broken), "not under 2048 MiB")


def test_memory_sizes_parse():
    assert checks.parse_size("160M") == 160 * 1024**2
    assert checks.parse_size("1.5g") == int(1.5 * 1024**3)
    assert checks.parse_size("512mb") == 512 * 1024**2
    assert checks.parse_size(1024) == 1024
    assert checks.parse_size("lots") is None


# ---------------------------------------------------------------- ports, network, volumes, mounts


def test_host_ports_are_unique_and_as_documented(compose):
    assert checks.check_ports(compose) == []


def test_a_host_port_that_cannot_be_moved_is_reported(broken):
    broken["services"]["grafana"]["ports"] = ["3000:3000"]
    assert_reports(checks.check_ports(broken), "grafana: host port '3000' cannot be moved")


def test_host_ports_move_with_their_variables(compose):
    ports = checks.host_ports(compose["services"]["gateway"], {"TRACELAB_GATEWAY_HOST_PORT": "18080"})
    assert ports == [18080]
    assert checks.host_ports(compose["services"]["gateway"]) == [8080]


def test_duplicate_host_port_is_reported(broken):
    broken["services"]["prometheus"]["ports"] = ["3000:9090"]
    assert_reports(checks.check_ports(broken), "host port 3000 is published by both")


def test_missing_documented_port_is_reported(broken):
    del broken["services"]["rabbitmq"]["ports"]
    assert_reports(checks.check_ports(broken), "host port 15672 should publish rabbitmq")


def test_one_network_and_named_volumes(compose):
    assert checks.check_network_and_volumes(compose) == []


def test_second_network_and_undeclared_volume_are_reported(broken):
    broken["networks"]["backend"] = {}
    broken["services"]["postgres"]["volumes"] = ["pgdata:/var/lib/postgresql/data"]
    assert_reports(checks.check_network_and_volumes(broken), "more than one network", "'pgdata'", "postgres-data")


def test_mounted_files_exist(compose):
    assert checks.check_mounts_exist(compose) == []


def test_missing_mounted_file_is_reported(broken):
    broken["services"]["tempo"]["volumes"][0] = "./tempo.yaml:/etc/tempo/tempo-config.yaml:ro"
    broken["services"]["gateway"]["volumes"][0] = {"type": "bind", "source": "./nope.yaml", "target": "/x"}
    assert_reports(checks.check_mounts_exist(broken), "tempo: bind mount source ./tempo.yaml", "./nope.yaml")


# ---------------------------------------------------------------- env vars vs code


def test_compose_env_matches_what_the_services_read(compose):
    """Fails while a service has no src/config.rs yet: the code is the source of the list."""
    problems = checks.check_env_vars(compose)
    assert problems == [], "\n".join(problems)


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


@pytest.fixture
def env_fixture(tmp_path) -> tuple[Path, dict]:
    """A two-crate workspace: service `api` on top of shared `telemetry`."""
    root = tmp_path
    write(root, "Cargo.toml", """
        [workspace]
        members = ["shared/telemetry", "services/api", "lab/cli"]
    """)
    write(root, "shared/telemetry/Cargo.toml", '[package]\nname = "telemetry"\n')
    write(root, "shared/telemetry/src/config.rs", """
        pub fn read() {
            let _ = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT");
            let _ = std::env::var( "OTEL_SERVICE_NAME" ).ok();
        }
    """)
    write(root, "services/api/Cargo.toml", """
        [package]
        name = "api"
        [dependencies]
        telemetry = { path = "../../shared/telemetry" }
    """)
    write(root, "services/api/src/main.rs", "fn main() {}\n")
    write(root, "services/api/src/config.rs", """
        use std::env;
        pub fn read() {
            let _ = env::var("TRACELAB_LISTEN");
            let _ = env::var("DATABASE_URL");
            // A name that only appears in prose is not a read: "NOT_READ"
        }
    """)
    write(root, "lab/cli/Cargo.toml", '[package]\nname = "cli"\n[[bin]]\nname = "tracelab"\npath = "src/main.rs"\n')
    write(root, "lab/cli/src/main.rs", "fn main() {}\n")
    write(root, "docs/architecture.md", """
        # contract
        ## Environment variables
        | name | default | meaning |
        |---|---|---|
        | `TRACELAB_LISTEN` | `127.0.0.1:<port>` | listen |
        | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http://127.0.0.1:4318` | collector |
        | `OTEL_SERVICE_NAME` | the binary name | name |

        | service | name | default |
        |---|---|---|
        | api, other | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/x` |
        | api | `API_TIMEOUT_MS` | `5000` |
        ## Next section
        | `IGNORED` | `127.0.0.1` | not env |
    """)
    good = {"services": {
        "api": {"build": ".", "image": "x:dev", "command": ["api"], "environment": {
            "TRACELAB_LISTEN": "0.0.0.0:1", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_SERVICE_NAME": "api", "DATABASE_URL": "postgres://db/x"}},
        "load": {"build": ".", "image": "x:dev", "command": ["tracelab", "load"]},
    }}
    return root, good


def test_env_fixture_passes(env_fixture):
    root, good = env_fixture
    assert checks.check_env_vars(good, root) == []
    assert checks.required_env("api", root) == {"TRACELAB_LISTEN", "OTEL_EXPORTER_OTLP_ENDPOINT", "DATABASE_URL"}


def test_env_var_the_code_does_not_read_is_reported(env_fixture):
    root, good = env_fixture
    good["services"]["api"]["environment"]["NOT_READ"] = "1"
    assert_reports(checks.check_env_vars(good, root), "sets NOT_READ")


def test_missing_required_env_var_is_reported(env_fixture):
    root, good = env_fixture
    del good["services"]["api"]["environment"]["DATABASE_URL"]
    assert_reports(checks.check_env_vars(good, root), "DATABASE_URL is not set")


def test_documented_var_the_code_does_not_read_is_reported(env_fixture):
    root, good = env_fixture
    (root / "services/api/src/config.rs").write_text('fn f() { std::env::var("TRACELAB_LISTEN"); }\n')
    good["services"]["api"]["environment"].pop("DATABASE_URL")
    assert_reports(checks.check_env_vars(good, root), "lists DATABASE_URL for api, but its config does not read it")


def test_missing_config_rs_fails_clearly(env_fixture):
    root, good = env_fixture
    (root / "services/api/src/config.rs").unlink()
    assert_reports(checks.check_env_vars(good, root), "services/api/src/config.rs does not exist yet")


def test_shared_config_counts_only_for_crates_that_depend_on_it(env_fixture):
    root, good = env_fixture
    write(root, "services/api/Cargo.toml", '[package]\nname = "api"\n')
    assert_reports(checks.check_env_vars(good, root), "sets OTEL_EXPORTER_OTLP_ENDPOINT")


def test_cli_container_gets_no_env_the_cli_does_not_read(env_fixture):
    root, good = env_fixture
    good["services"]["load"]["environment"] = {"DATABASE_URL": "x"}
    assert_reports(
        checks.check_env_vars(good, root), "load: docker-compose.yml sets DATABASE_URL, which the tracelab CLI never reads"
    )


def test_a_shell_loop_given_service_env_is_reported(env_fixture):
    root, good = env_fixture
    good["services"]["loop"] = {"image": "x:dev", "command": ["sh", "-c", "sleep 1"], "environment": {"A": "1"}}
    assert_reports(checks.check_env_vars(good, root), "loop: runs 'sh', not a service")


def test_the_cli_container_gets_only_env_the_cli_reads(compose):
    load = compose["services"]["load"]
    assert {"TRACELAB_URL", "TRACELAB_TEMPO_URL"} <= set(checks.environment(load))
    assert checks.check_env_vars(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["load"]["environment"]["OTEL_SERVICE_NAME"] = "load"
    assert_reports(checks.check_env_vars(broken), "load: docker-compose.yml sets OTEL_SERVICE_NAME, which the tracelab CLI never reads")


def test_architecture_tables_are_read():
    common, per_service = checks.architecture_env()
    assert "TRACELAB_LISTEN" in common
    assert "DATABASE_URL" in per_service["payment"] and "DATABASE_URL" in per_service["notification"]
    assert checks.required_env("gateway") >= {"TRACELAB_AUTH_URL", "TRACELAB_LISTEN", "OTEL_EXPORTER_OTLP_ENDPOINT"}


# ---------------------------------------------------------------- admin API


def test_the_admin_api_stays_on_the_compose_network_behind_a_generated_token(compose, dockerfile):
    assert checks.check_admin_api(compose, dockerfile) == []
    services = [n for n, s in compose["services"].items() if "TRACELAB_LISTEN" in checks.environment(s)]
    assert len(services) == 6, services


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda c: c["services"]["gateway"]["ports"].append("8180:8180"), "gateway: publishes its admin port 8180"),
        (lambda c: c["services"]["payment"].__setitem__("ports", ["127.0.0.1:18183:8183"]),
         "payment: publishes its admin port 8183"),
        (lambda c: c["services"]["auth"]["environment"].__setitem__("TRACELAB_ADMIN_LISTEN", "0.0.0.0:8081"),
         "auth: TRACELAB_ADMIN_LISTEN is its public port"),
        (lambda c: c["services"]["search"]["environment"].pop("TRACELAB_ADMIN_LISTEN"), "search: no TRACELAB_ADMIN_LISTEN"),
        (lambda c: c["services"]["auth"]["environment"].__setitem__("TRACELAB_ADMIN_TOKEN", "tracelab-admin"),
         "auth: TRACELAB_ADMIN_TOKEN is written in docker-compose.yml"),
        (lambda c: c["services"]["load"]["environment"].__setitem__("TRACELAB_ADMIN_TOKEN", "${OTHER:-x}"),
         "load: TRACELAB_ADMIN_TOKEN is written"),
        (lambda c: c["services"]["notification"]["environment"].pop("TRACELAB_ADMIN_TOKEN_FILE"),
         "notification: no TRACELAB_ADMIN_TOKEN_FILE"),
        (lambda c: c["services"]["payment"]["volumes"].__setitem__(1, "admin-token:/var/lib/tracelab-admin"),
         "payment: mounts admin-token writable"),
        (lambda c: c["services"]["payment"]["volumes"].pop(1), "payment: TRACELAB_ADMIN_TOKEN_FILE=/var/lib/tracelab-admin/token, but no named volume"),
        (lambda c: c["services"]["gateway"]["depends_on"].pop("admin-token-init"), "gateway: reads /var/lib/tracelab-admin/token but does not wait"),
        (lambda c: c["services"].pop("admin-token-init"), "no one-shot job writes /var/lib/tracelab-admin/token"),
    ],
)
def test_admin_api_problems_are_reported(broken, dockerfile, mutate, needle):
    mutate(broken)
    assert_reports(checks.check_admin_api(broken, dockerfile), needle)


def test_a_token_volume_the_image_user_cannot_write_is_reported(compose, dockerfile):
    without = "\n".join(
        line for line in dockerfile.splitlines() if "tracelab-admin" not in line and "chmod 0700" not in line
    )
    assert_reports(
        checks.check_admin_api(compose, without),
        "Dockerfile: the runtime stage must create /var/lib/tracelab-admin owned by its user 10001",
    )


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_and_copies_every_binary_compose_runs(compose, dockerfile):
    assert checks.check_dockerfile(compose, dockerfile) == []


def test_compose_binaries_are_found(compose):
    used = set().union(
        *(checks.binaries_used(s) for s in compose["services"].values() if checks.runs_our_image(s, compose))
    )
    assert used == {"gateway", "auth", "search", "payment", "payment-provider", "notification", "tracelab"}


def test_binary_not_copied_is_reported(compose, dockerfile):
    broken = dockerfile.replace("    /src/target/release/notification \\\n", "")
    assert broken != dockerfile
    assert_reports(checks.check_dockerfile(compose, broken), "notification: runs 'notification', which the Dockerfile does not copy")


def test_binary_not_in_workspace_is_reported(broken, dockerfile):
    broken["services"]["auth"]["command"] = ["authd"]
    broken["services"]["load"]["command"][0] = "tracelab-loadgen"
    assert_reports(checks.check_dockerfile(broken, dockerfile), "auth: runs 'authd'", "'tracelab-loadgen'")


def test_dockerfile_without_locked_workspace_build_or_as_root_is_reported(compose, dockerfile):
    broken = dockerfile.replace("--locked --workspace", "--workspace").replace("USER 10001:10001", "USER root")
    assert_reports(checks.check_dockerfile(compose, broken), "--locked", "non-root USER")


def test_dockerfile_unpinned_or_mismatched_base_is_reported(compose, dockerfile):
    broken = dockerfile.replace("FROM debian:13-slim", "FROM debian:bookworm-slim")
    assert_reports(checks.check_dockerfile(compose, broken), "not pinned", "same Debian release")
    broken = dockerfile.replace("rust:1.95.0-slim-trixie AS builder", "rust:1.90.0-slim-trixie AS builder")
    assert_reports(checks.check_dockerfile(compose, broken), "older than Rust 1.95")


def test_dockerfile_skeleton_stage_stubs_sources(tmp_path, dockerfile):
    """Run the skeleton stage's shell script on a copy of the workspace manifests."""
    import subprocess

    run = next(a for s in checks.dockerfile_stages(dockerfile) if s["name"] == "skeleton"
               for i, a in s["ins"] if i == "RUN")
    src = tmp_path / "src"
    for rel in ["Cargo.toml", "Cargo.lock"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, src / rel)
    for crate in checks.workspace_crates().values():
        for path in (REPO / crate.dir).rglob("*"):
            if path.is_file() and "target" not in path.parts and path.suffix in (".rs", ".toml"):
                dest = src / path.relative_to(REPO)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest)
    script = run.replace("/skeleton", str(tmp_path / "skeleton"))
    subprocess.run(["sh", "-c", script], cwd=src, check=True)
    skel = tmp_path / "skeleton"
    for crate in checks.workspace_crates().values():
        assert (skel / crate.dir / "Cargo.toml").read_bytes() == (REPO / crate.dir / "Cargo.toml").read_bytes()
        for rs in (src / crate.dir).rglob("*.rs"):
            stub = (skel / rs.relative_to(src)).read_text()
            if rs.name == "build.rs":
                assert stub == rs.read_text()
            else:
                assert stub.strip() == "#[allow(dead_code)] fn main() {}"
    assert (skel / "Cargo.lock").exists()


def test_dockerignore_keeps_what_the_build_needs():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in ["Cargo.toml", "Cargo.lock", "sampling.yaml", "services", "shared", "lab", "migrations"]:
        assert needed not in ignored
    assert {"target", ".git"} <= ignored


# ---------------------------------------------------------------- Grafana


def test_grafana_provisioning_parses_and_refers_to_existing_uids(compose):
    assert checks.check_grafana(compose) == []


def grafana_copy(tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "grafana", root / "grafana")
    return root


def test_dashboard_with_unknown_datasource_uid_is_reported(compose, tmp_path):
    root = grafana_copy(tmp_path)
    path = root / "grafana/dashboards/tracelab-overview.json"
    path.write_text(path.read_text().replace('"uid": "prometheus"', '"uid": "mimir"', 1))
    assert_reports(checks.check_grafana(compose, root), "'mimir', which is not provisioned")


def test_broken_provisioning_is_reported(compose, tmp_path):
    root = grafana_copy(tmp_path)
    ds = root / "grafana/provisioning/datasources/datasources.yaml"
    ds.write_text(ds.read_text().replace("datasourceUid: prometheus\n      nodeGraph", "datasourceUid: nope\n      nodeGraph")
                  .replace("$$__tags", "$__tags"))
    (root / "grafana/dashboards/extra.json").write_text("{ not json")
    assert_reports(checks.check_grafana(compose, root), "serviceMap.datasourceUid", "$__tags", "invalid JSON")


def test_missing_home_dashboard_is_reported(broken):
    broken["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] = "/etc/grafana/dashboards/x.json"
    assert_reports(checks.check_grafana(broken), "home dashboard")


def test_dashboard_shows_what_the_issue_asks_for():
    dash = json.loads((REPO / "grafana/dashboards/tracelab-overview.json").read_text())
    text = json.dumps(dash)
    types = [p["type"] for p in dash["panels"]]
    assert "nodeGraph" in types
    for metric in ["traces_spanmetrics_calls_total", "traces_spanmetrics_latency_bucket", "STATUS_CODE_ERROR"]:
        assert metric in text
    for q in ["0.5", "0.95", "0.99"]:
        assert f"histogram_quantile({q}," in text
    queries = [t.get("query") for p in dash["panels"] for t in p.get("targets", []) if t.get("queryType") == "traceql"]
    assert "{ status = error }" in queries and any("duration" in q for q in queries)
    assert "/explore?" in text


# ---------------------------------------------------------------- Tempo


def test_tempo_config_keeps_the_lessons_keys_and_values(tempo, compose):
    assert checks.check_tempo(tempo, compose, checks.lesson_tempo_config()) == []


def test_lesson_fixture_is_the_lessons_block():
    if not LESSON_TEXT.exists():
        pytest.skip("../shared/lesson is not beside the repository")
    assert checks.lesson_block_from_text(LESSON_TEXT.read_text(encoding="utf-8")) == checks.lesson_tempo_config()


def test_changed_or_dropped_lesson_value_is_reported(tempo, compose):
    broken = copy.deepcopy(tempo)
    broken["overrides"]["defaults"]["ingestion"]["rate_limit_bytes"] = 1
    del broken["stream_over_http_enabled"]
    broken["storage"]["trace"]["s3"]["bucket"] = "traces"
    assert_reports(
        checks.check_tempo(broken, compose, checks.lesson_tempo_config()),
        "rate_limit_bytes is 1", "stream_over_http_enabled is missing", "bucket",
        "no one-shot job creates Tempo's bucket 'traces'",
    )


def test_tempo_wiring_problems_are_reported(tempo, broken):
    bad = copy.deepcopy(tempo)
    bad["storage"]["trace"]["s3"]["endpoint"] = "s3.amazonaws.com"
    bad["overrides"]["defaults"]["metrics_generator"]["processors"] = ["span-metrics"]
    bad["ingester"] = {"max_block_duration": "5m"}
    broken["services"]["tempo"]["command"] = ["-config.file=/etc/tempo/tempo-config.yaml"]
    broken["services"]["prometheus"]["command"] = ["--config.file=/etc/prometheus/prometheus.yml"]
    assert_reports(
        checks.check_tempo(bad, broken, checks.lesson_tempo_config()),
        "'s3.amazonaws.com' is not a compose service", "service-graphs", "expand-env",
        "remote-write-receiver", "`ingester` was removed",
    )


# ---------------------------------------------------------------- collector and sampling


def test_collector_pipeline(collector, compose):
    assert checks.check_collector(collector, compose) == []


def test_collector_pipeline_problems_are_reported(collector, broken):
    bad = copy.deepcopy(collector)
    bad["service"]["pipelines"]["traces"]["processors"] = ["batch", "tail_sampling", "memory_limiter"]
    bad["processors"]["redaction"]["blocked_values"] = []
    bad["exporters"]["otlp_grpc/tempo"]["endpoint"] = "jaeger:4317"
    broken["services"]["auth"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://otel-collector:4317"
    assert_reports(checks.check_collector(bad, broken), "order", "4242424242424242", "tempo:4317", "auth:")


def test_collector_tail_sampling_equals_sampling_yaml(sampling, collector):
    assert checks.check_sampling_agreement(sampling, collector) == []


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda c: c["processors"]["tail_sampling"]["policies"][1]["latency"].update(threshold_ms=3000), "slow_requests"),
        (lambda c: c["processors"]["tail_sampling"]["policies"][2]["probabilistic"].update(sampling_percentage=5), "default"),
        (lambda c: c["processors"]["tail_sampling"]["policies"].pop(0), "tail policies differ"),
        (lambda c: c["processors"]["tail_sampling"].update(decision_wait="2s"), "decision wait differs"),
        (lambda c: c["service"]["pipelines"]["traces"]["processors"].remove("tail_sampling"), "not in the traces pipeline"),
    ],
)
def test_mismatched_tail_policy_is_reported(sampling, collector, mutate, needle):
    bad = copy.deepcopy(collector)
    mutate(bad)
    assert_reports(checks.check_sampling_agreement(sampling, bad), needle)


def test_switching_to_the_lessons_percentage_needs_both_files(sampling, collector, lesson_sampling):
    """The documented switch: lesson file over sampling.yaml + 5 in the collector."""
    assert checks.check_sampling_agreement(lesson_sampling, collector) != []
    bad = copy.deepcopy(collector)
    bad["processors"]["tail_sampling"]["policies"][2]["probabilistic"]["sampling_percentage"] = 5
    assert checks.check_sampling_agreement(lesson_sampling, bad) == []


def service_names(compose) -> set[str]:
    return {checks.environment(s).get("OTEL_SERVICE_NAME") for s in compose["services"].values()} - {None}


def test_sampling_files_have_the_lab_and_lesson_values(sampling, lesson_sampling, compose):
    names = service_names(compose)
    assert names == {"gateway", "auth", "search", "payment", "payment-provider", "notification"}
    assert checks.check_sampling_values(sampling, lesson_sampling, names) == []


def test_wrong_sampling_values_are_reported(sampling, lesson_sampling, compose):
    lab, lesson = copy.deepcopy(sampling), copy.deepcopy(lesson_sampling)
    lab["head_based"]["rate"] = 0.5
    lab["head_based"]["per_service"]["payment-service"] = 1.0
    lesson["head_based"]["per_service"]["search"] = 0.1
    assert_reports(
        checks.check_sampling_values(lab, lesson, service_names(compose)),
        "head rate is 0.5", "'payment-service' is not a service.name", "sampling.lesson.yaml: head section",
    )


def test_durations_parse():
    assert checks.parse_duration_ms("10s") == 10_000
    assert checks.parse_duration_ms("1m30s") == 90_000
    assert checks.parse_duration_ms("500ms") == 500
    assert checks.parse_duration_ms("soon") is None


# ---------------------------------------------------------------- whole repo


def test_all_files_the_stack_reads_parse():
    for rel in ["docker-compose.yml", "tempo-config.yaml", "otel-collector.yaml", "prometheus.yml",
                "sampling.yaml", "sampling.lesson.yaml"]:
        assert yaml.safe_load((REPO / rel).read_text(encoding="utf-8")), rel


def test_documented_memory_total_matches_the_compose_file(compose):
    total = f"{checks.memory_total_mib(compose):.0f} MiB"
    assert total in (REPO / "docs/docker.md").read_text(encoding="utf-8"), f"docs/docker.md should say {total}"
    assert total in (REPO / "docker-compose.yml").read_text(encoding="utf-8"), f"the compose header should say {total}"


# ---------------------------------------------------------------- image facts


@pytest.fixture(scope="module")
def images() -> dict:
    return checks.load_images()


@pytest.fixture(scope="module")
def datasources() -> dict:
    return checks.load_yaml(REPO / "grafana/provisioning/datasources/datasources.yaml")


def test_healthchecks_use_only_what_their_images_have(compose, images):
    assert checks.check_image_facts(compose, images) == []


def test_every_verified_image_cites_its_sources(images):
    for name, facts in images.items():
        if facts.get("verified"):
            assert facts.get("sources"), name
            assert "shell" in facts and facts.get("tools"), name
        else:
            assert facts.get("why"), name


def test_a_shell_healthcheck_on_a_distroless_image_is_reported(broken, images):
    # What the stack shipped before: Tempo's image has no busybox and no wget.
    broken["services"]["tempo"]["healthcheck"]["test"] = [
        "CMD", "/busybox/sh", "-c", "wget -q -O /dev/null http://127.0.0.1:3200/ready",
    ]
    assert_reports(checks.check_image_facts(broken, images), "tempo", "/busybox/sh", "no shell")


def test_cmd_shell_and_missing_tools_are_reported(broken, images):
    broken["services"]["tempo"]["healthcheck"]["test"] = ["CMD-SHELL", "/tempo -health"]
    broken["services"]["gateway"]["healthcheck"]["test"] = ["CMD", "curl", "-f", "http://127.0.0.1:8080/health"]
    assert_reports(
        checks.check_image_facts(broken, images),
        "tempo: CMD-SHELL healthcheck, but image grafana/tempo:3.0.3 has no shell",
        "gateway: healthcheck runs 'curl'",
    )


def test_an_image_without_facts_is_reported(broken, images):
    broken["services"]["grafana"]["image"] = "grafana/grafana:13.0.0"
    assert_reports(checks.check_image_facts(broken, images), "grafana/grafana:13.0.0", "images.yaml")


def test_two_builders_of_one_tag_are_reported(broken, images):
    broken["services"]["auth"]["build"] = {"context": ".", "dockerfile": "Dockerfile"}
    assert_reports(checks.check_image_facts(broken, images), "tracelab:dev", "auth", "gateway")


def test_exemplar_label_matches_tempo(tempo, datasources):
    assert checks.check_exemplar_label(tempo, datasources) == []


def test_exemplar_label_mismatch_is_reported(tempo, datasources):
    unset = copy.deepcopy(tempo)
    del unset["overrides"]["defaults"]["metrics_generator"]["trace_id_label_name"]
    assert_reports(checks.check_exemplar_label(unset, datasources), "trace_id", "traceID")


def test_query_end_cutoff_is_set_on_purpose(tempo):
    assert checks.check_query_end_cutoff(tempo) == []
    unset = copy.deepcopy(tempo)
    del unset["query_frontend"]
    assert_reports(checks.check_query_end_cutoff(unset), "query_end_cutoff", "30 s")
    zero = copy.deepcopy(tempo)
    zero["query_frontend"]["query_end_cutoff"] = "0s"
    assert_reports(checks.check_query_end_cutoff(zero), "above 0")


def test_data_volumes_mount_where_the_image_keeps_data(compose, images):
    assert checks.check_data_volumes(compose, images) == []
    broken = copy.deepcopy(compose)
    # Where Postgres 17 kept its data: a mount left there by a version bump
    # misses the 18 image's data directory (/var/lib/postgresql/18/docker).
    broken["services"]["postgres"]["volumes"] = ["postgres-data:/var/lib/postgresql/data"]
    assert_reports(checks.check_data_volumes(broken, images), "postgres", "keeps its data in /var/lib/postgresql,")


def test_tempo_sends_no_usage_report(tempo):
    assert tempo["usage_report"]["reporting_enabled"] is False


def test_rabbitmq_has_a_fixed_node_and_an_absolute_watermark(compose):
    assert checks.check_rabbitmq(compose) == []
    broken = copy.deepcopy(compose)
    del broken["services"]["rabbitmq"]["hostname"]
    broken["services"]["rabbitmq"]["deploy"]["resources"]["limits"]["memory"] = "200M"
    assert_reports(checks.check_rabbitmq(broken), "hostname", "not under 75%")
    unmounted = copy.deepcopy(compose)
    unmounted["services"]["rabbitmq"]["volumes"] = ["rabbitmq-data:/var/lib/rabbitmq"]
    assert_reports(checks.check_rabbitmq(unmounted), "vm_memory_high_watermark.absolute")


def test_bind_mounts_are_relabelled_for_selinux(compose):
    assert checks.check_selinux_labels(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["tempo"]["volumes"][0] = "./tempo-config.yaml:/etc/tempo/tempo-config.yaml:ro"
    del broken["services"]["rabbitmq"]["volumes"][1]["bind"]
    assert_reports(
        checks.check_selinux_labels(broken),
        "tempo: bind mount ./tempo-config.yaml has no `z`",
        "rabbitmq: bind mount ./rabbitmq/30-tracelab.conf has no",
    )


# ---------------------------------------------------------------- a second parser


def compose_v1_text(text: str) -> str:
    """The stack's file without what Compose 1.29 does not know (the
    top-level `name`, `bind: {selinux: z}`), anchors and merges kept as
    written, so its parser checks the rest: merges, references,
    interpolation, its own schema."""
    text = re.sub(r"(?m)^name: .*\n", "", text)
    return re.sub(r"(?m)^(\s*)bind:\n\1  selinux: [zZ]\n", "", text)


def test_docker_compose_resolves_the_stack(compose, tmp_path):
    """Debian's docker-compose (1.29, Python) resolves the file with no
    engine: a second, real parser that sees anchor, merge, reference and
    interpolation errors a JSON schema cannot."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed: apt-get install docker-compose (.ci/run does)"
    for name in ("sampling.yaml", "tempo-config.yaml", "otel-collector.yaml", "prometheus.yml", "Dockerfile"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("grafana", "rabbitmq", "scenarios"):
        shutil.copytree(REPO / name, tmp_path / name)
    text = compose_v1_text((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert "selinux" not in text and "\nname:" not in text
    (tmp_path / "docker-compose.yml").write_text(text)
    out = subprocess.run(
        [exe, "--project-name", "tracelab", "config"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == set(compose["services"])
    assert resolved["services"]["gateway"]["ports"][0]["published"] == 8080
    assert resolved["services"]["load"]["image"] == "tracelab:dev"
    # A broken anchor reference is refused, so the test can fail.
    bad = text.replace("<<: *tracelab-image", "<<: *tracelab-imag", 1)
    (tmp_path / "docker-compose.yml").write_text(bad)
    out = subprocess.run(
        [exe, "--project-name", "tracelab", "config"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "tracelab-imag" in out.stderr, out.stderr


def test_bind_mounted_files_are_readable_by_the_containers_users(compose, tmp_path):
    assert checks.check_mounts_readable(compose) == []
    (tmp_path / "tempo-config.yaml").write_text("x: 1\n")
    (tmp_path / "tempo-config.yaml").chmod(0o600)
    only_tempo = {"services": {"tempo": compose["services"]["tempo"]}}
    assert_reports(checks.check_mounts_readable(only_tempo, tmp_path), "tempo: tempo-config.yaml is mode -rw-------")



# ---------------------------------------------------------------- the S3 store


def test_s3_store_bucket_job_and_tempo_agree(compose, tempo, images):
    assert checks.check_s3_store(compose, tempo, images) == []
    assert checks.bucket_jobs(compose, tempo["storage"]["trace"]["s3"]["bucket"]) == ["s3-init"]


def set_tempo_s3(**values):
    def mutate(compose, tempo):
        tempo["storage"]["trace"]["s3"].update(values)
    return mutate


def set_service(name, key, value):
    def mutate(compose, tempo):
        compose["services"][name][key] = value
    return mutate


def shell_as_command(compose, tempo):
    """The job's script as `command: [/bin/sh, -c, ...]`, the image's entrypoint left in place."""
    job = compose["services"]["s3-init"]
    job["command"] = ["/bin/sh", "-c", job["command"][0]]
    del job["entrypoint"]


def drop_tempo_s3(key):
    def mutate(compose, tempo):
        del tempo["storage"]["trace"]["s3"][key]
    return mutate


S3_INIT_SCRIPT = "versitygw admin create-bucket --owner \"$ROOT_ACCESS_KEY_ID\" --bucket tempo-traces"


@pytest.mark.parametrize(
    "mutate, needle",
    [
        # Where MinIO listened: the store listens on 7070.
        (set_tempo_s3(endpoint="s3:9000"), "port is 9000, but s3 listens on 7070"),
        (set_tempo_s3(region="ap-northeast-1"), "accepts only requests signed for 'us-east-1'"),
        (drop_tempo_s3("forcepathstyle"), "forcepathstyle must be true"),
        # MinIO's variable names, which the store's container no longer sets.
        (set_tempo_s3(access_key="${MINIO_ROOT_USER}"), "access_key is ${MINIO_ROOT_USER} = None"),
        (set_tempo_s3(endpoint="minio:9000"), "'minio:9000' is not a compose service"),
        (set_service("s3", "command", ["--port", ":7070", "posix", "/data"]), "without --health"),
        (set_service("s3", "command", ["--port", ":7071", "--health", "/health", "posix", "/data"]),
         "the store serves /health on port 7071"),
        (set_service("s3", "volumes", ["s3-data:/var/lib/versitygw"]), "keeps its buckets in /data"),
        (set_service("s3", "environment", {"GOMEMLIMIT": "128MiB"}), "ROOT_ACCESS_KEY_ID is not set"),
        # Without the list-buckets guard the second `docker compose up` fails.
        (set_service("s3-init", "command", [S3_INIT_SCRIPT]), "BucketAlreadyOwnedByYou"),
        # Without the entrypoint override the image runs `versitygw sh -c ...`.
        (shell_as_command, "runs /bin/sh as the command of versity/versitygw:v1.7.0"),
        (set_service("s3-init", "command", ["curl -X PUT http://s3:7070/tempo-traces"]),
         "runs 'curl', which image versity/versitygw:v1.7.0 does not have"),
        (set_service("s3-init", "command", [S3_INIT_SCRIPT.replace("tempo-traces", "traces")]),
         "creates bucket 'tempo-traces'"),
        (set_service("s3-init", "environment", {"ROOT_ACCESS_KEY_ID": "tracelab", "ROOT_SECRET_ACCESS_KEY": "x",
                                                 "ADMIN_ENDPOINT_URL": "http://minio:9000"}),
         "ADMIN_ENDPOINT_URL is 'http://minio:9000'"),
        (set_service("s3-init", "depends_on", {}), "s3-init: does not wait for s3 to be healthy"),
    ],
)
def test_s3_store_mistakes_are_reported(compose, tempo, images, mutate, needle):
    bad_compose, bad_tempo = copy.deepcopy(compose), copy.deepcopy(tempo)
    mutate(bad_compose, bad_tempo)
    assert_reports(checks.check_s3_store(bad_compose, bad_tempo, images), needle)


def test_the_s3_image_has_no_curl(broken, images):
    broken["services"]["s3"]["healthcheck"]["test"] = ["CMD", "curl", "-f", "http://127.0.0.1:7070/health"]
    assert_reports(checks.check_image_facts(broken, images), "s3: healthcheck runs 'curl'")


def test_an_s3_image_without_facts_is_reported(broken, tempo, images):
    broken["services"]["s3"]["image"] = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
    assert_reports(checks.check_s3_store(broken, tempo, images), "has no verified `s3:` facts")


def test_the_docs_give_the_s3_root_account(compose, images):
    docs = {name: (REPO / name).read_text(encoding="utf-8") for name in ("README.md", "docs/docker.md")}
    assert checks.check_docs_name_the_s3_account(compose, images, docs) == []
    broken = copy.deepcopy(compose)
    broken["services"]["s3"]["environment"]["ROOT_SECRET_ACCESS_KEY"] = "changed-secret"
    assert_reports(
        checks.check_docs_name_the_s3_account(broken, images, docs),
        "README.md: does not give ROOT_SECRET_ACCESS_KEY 'changed-secret'",
        "docs/docker.md: does not give ROOT_SECRET_ACCESS_KEY",
    )


# ---------------------------------------------------------------- the lab console

def test_console_is_published_on_loopback_and_knows_every_service(compose):
    assert checks.check_console(compose) == []
    assert checks.host_ports(compose["services"]["console"]) == [7070]


def test_console_published_on_every_interface_is_reported(broken):
    broken["services"]["console"]["ports"] = ["${TRACELAB_CONSOLE_HOST_PORT:-7070}:7070"]
    assert_reports(checks.check_console(broken), "publish it on 127.0.0.1 only")
    broken["services"]["console"]["ports"] = [{"target": 7070, "published": "7070"}]
    assert_reports(checks.check_console(broken), "publish it on 127.0.0.1 only")


def test_console_listening_elsewhere_than_published_is_reported(broken):
    broken["services"]["console"]["environment"]["TRACELAB_CONSOLE_LISTEN"] = "0.0.0.0:7071"
    assert_reports(checks.check_console(broken), "publishes container port 7070 but listens on '0.0.0.0:7071'")


def test_console_missing_or_misplacing_a_service_is_reported(broken):
    env = broken["services"]["console"]["environment"]
    env["TRACELAB_CONSOLE_SERVICES"] = env["TRACELAB_CONSOLE_SERVICES"].replace(
        "payment=http://payment:8083", "payment=http://payment:9999"
    ).replace(",notification=http://notification:8084", "")
    assert_reports(
        checks.check_console(broken),
        "gives payment as 'http://payment:9999'",
        "gives notification as None",
    )
    del broken["services"]["console"]
    assert_reports(checks.check_console(broken), "no `console` service")


# ---------------------------------------------------------------- the console's state


def test_console_state_is_on_a_volume_the_image_user_owns(compose, dockerfile):
    assert checks.check_console_state(compose, dockerfile) == []
    home = checks.environment(compose["services"]["console"])["TRACELAB_HOME"]
    assert ("console-state", home, False) in checks.named_volume_mounts(compose["services"]["console"])


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda c: c["services"]["console"]["environment"].__setitem__("TRACELAB_HOME", "/tmp/tracelab"),
         "console: TRACELAB_HOME=/tmp/tracelab is on no named volume"),
        (lambda c: c["services"]["console"]["environment"].pop("TRACELAB_HOME"), "console: no TRACELAB_HOME"),
        (lambda c: c["services"]["console"]["volumes"].remove("console-state:/var/lib/tracelab"),
         "console: TRACELAB_HOME=/var/lib/tracelab is on no named volume"),
        (lambda c: c["services"]["console"]["volumes"].__setitem__(
            c["services"]["console"]["volumes"].index("console-state:/var/lib/tracelab"),
            "console-state:/var/lib/tracelab:ro"),
         "console: mounts console-state read-only"),
        (lambda c: c["services"]["load"].__setitem__("volumes", ["console-state:/var/lib/tracelab"]),
         "load: mounts the console's state volume console-state"),
    ],
)
def test_console_state_problems_are_reported(broken, dockerfile, mutate, needle):
    mutate(broken)
    assert_reports(checks.check_console_state(broken, dockerfile), needle)


def test_a_state_volume_the_image_user_cannot_write_is_reported(compose, dockerfile):
    without = dockerfile.replace("chown 10001:10001 /var/lib/tracelab\n", "true\n")
    assert without != dockerfile
    assert_reports(
        checks.check_console_state(compose, without),
        "Dockerfile: the runtime stage must create /var/lib/tracelab owned by its user 10001",
    )
    # The admin token's directory is still owned: only the state is reported.
    assert checks.check_admin_api(compose, without) == []
