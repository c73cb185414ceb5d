"""On a failure, the tests of this folder that use `service_logs` print their services'
logs (tests/support/service_logs.py)."""

from tests.support.service_logs import pytest_runtest_makereport, service_logs

__all__ = ["pytest_runtest_makereport", "service_logs"]
