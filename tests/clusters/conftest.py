"""moto-backed AWS fixtures shared by the EMR test modules (defined in test_emr.py)."""

from tests.clusters.test_emr import aws, aws_env, emr_settings, moto_server  # noqa: F401
