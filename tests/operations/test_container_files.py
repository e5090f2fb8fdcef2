"""SPEC §5: Dockerfile and docker-compose.yml, read (no container engine runs the tests).

hadolint, compose-lint and the Compose specification's schema check them in .ci/run; these
tests hold the decisions those linters cannot know about.
"""

import re
from pathlib import Path

import yaml

from voicehooks.db.embedded import POSTGRES_MAJOR

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]
OURS = ("migrate", "api", "worker")


def test_compose_runs_the_postgres_major_of_the_embedded_server():
    image = SERVICES["postgres"]["image"]
    assert image == f"postgres:{POSTGRES_MAJOR}"
    assert any(volume.startswith("pgdata:") for volume in SERVICES["postgres"]["volumes"])
    assert "pgdata" in COMPOSE["volumes"]


def test_one_image_built_once_serves_every_service():
    images = {SERVICES[name]["image"] for name in OURS}
    assert len(images) == 1
    assert [name for name in SERVICES if "build" in SERVICES[name]] == ["migrate"]
    for name in ("api", "worker"):
        assert SERVICES[name]["pull_policy"] == "never"
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_secrets_are_required_not_defaulted():
    for name in OURS:
        environment = SERVICES[name]["environment"]
        assert re.fullmatch(
            r"\$\{VOICEHOOKS_INGEST_TOKEN:\?[^}]*\}", environment["VOICEHOOKS_INGEST_TOKEN"]
        )
        assert ":?" in environment["VOICEHOOKS_DATABASE_URL"]
        assert ":?" in environment["VOICEHOOKS_ENCRYPTION_KEYS"]
    assert ":?" in SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_long_running_services_restart_and_report_their_health():
    for name in ("postgres", "api", "worker"):
        assert SERVICES[name]["restart"] == "unless-stopped"
        assert SERVICES[name]["healthcheck"]["test"]
    assert "/readyz" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert "/proc/1/cmdline" in " ".join(SERVICES["worker"]["healthcheck"]["test"])


def test_the_api_port_is_bound_to_loopback_by_default():
    (port,) = SERVICES["api"]["ports"]
    assert port.startswith("${VOICEHOOKS_PUBLISH_ADDRESS:-127.0.0.1}:")
    assert "ports" not in SERVICES["postgres"]


def test_the_image_runs_as_a_numeric_user_and_keeps_embedded_data_in_a_volume():
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"\d+(:\d+)?", user) and not user.startswith("0")
    (data_dir,) = re.findall(r"VOICEHOOKS_DATA_DIR=(\S+)", DOCKERFILE)
    assert f'VOLUME ["{data_dir}"]' in DOCKERFILE
    assert re.search(r'^CMD \["voicehooks", "serve"', DOCKERFILE, re.MULTILINE)


def test_the_build_context_leaves_out_environments_caches_and_results():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "bench/results", ".pytest_cache", ".mypy_cache"} <= ignored
    assert "**/__pycache__" in ignored
