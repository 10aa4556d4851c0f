"""Deployment settings and the kernel environment."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import kernel

ROOT = Path(__file__).resolve().parent.parent.parent


def test_check_deploy_is_clean_with_production_settings():
    result = subprocess.run(
        ["bin/check-deploy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},  # whichever venv runs the tests
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_kernel_environment_is_an_allow_list(monkeypatch):
    for name in (
        "SECRET_KEY",
        "DATABASE_URL",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "REDIS_URL",
        "EMAIL_HOST_PASSWORD",
    ):
        monkeypatch.setenv(name, "secret-value")
    env = kernel.kernel_env("local[2]")
    assert "secret-value" not in env.values()
    assert env["PLOTLY_RENDERER"] == "plotly_mimetype"
    assert env["PYSPARK_SUBMIT_ARGS"] == "--master local[2] pyspark-shell"
    assert kernel.kernel_env("sc://127.0.0.1:15002")["SPARK_REMOTE"] == "sc://127.0.0.1:15002"


@pytest.mark.django_db
def test_health_answers_without_sign_in(client):
    response = client.get("/health/")
    assert response.status_code == 200 and response.json() == {"database": "ok"}


def test_error_pages_are_the_portals_own(client, django_user_model):
    user = django_user_model.objects.create_user(
        username="ana", email="ana@example.com", password="ana-password-1"
    )
    client.force_login(user)
    missing = client.get("/jobs/999999/")
    assert missing.status_code == 404 and "Back to the dashboard" in missing.content.decode()
    refused = client.get("/ops/")
    assert refused.status_code == 403 and "for the portal&#x27;s staff" in refused.content.decode()


def test_server_error_page_renders_without_a_request_context(rf):
    from django.views.defaults import server_error

    response = server_error(rf.get("/"))
    assert (
        response.status_code == 500
        and "Something went wrong on our side" in response.content.decode()
    )
