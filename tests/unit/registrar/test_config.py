"""`[registrar]` restart persistence defaults: mode `none` (the default) reloads its table
from SQL and writes every change through, so nothing a 200 acknowledged is lost by a
restart; the other modes keep what their cluster or shared table gives them."""

from __future__ import annotations

import pytest

from services.registrar.config import RegistrarConfig


@pytest.mark.parametrize(("mode", "persistency", "write_mode"), [
    ("none", "load-from-sql", "write-through"),
    ("full-sharing", "sync-from-cluster", "none"),
    ("federation-cachedb", "sync-from-cluster", "none"),
    ("sql-only", "none", "none"),  # the shared table is written before every answer anyway
    ("full-sharing-cachedb", "none", "none"),
])
def test_defaults_by_mode(mode: str, persistency: str, write_mode: str) -> None:
    config = RegistrarConfig(cluster_mode=mode)
    config.validate()
    assert (config.persistency, config.write_mode) == (persistency, write_mode)


def test_the_default_configuration_persists_every_acknowledged_binding() -> None:
    config = RegistrarConfig()
    assert (config.cluster_mode, config.persistency, config.write_mode) == (
        "none", "load-from-sql", "write-through")


def test_explicit_choices_win() -> None:
    assert RegistrarConfig(restart_persistency="none").write_mode == "none"
    back = RegistrarConfig(sql_write_mode="write-back")
    assert (back.persistency, back.write_mode) == ("load-from-sql", "write-back")
    with pytest.raises(ValueError, match="sync-from-cluster"):
        RegistrarConfig(restart_persistency="sync-from-cluster").validate()
    with pytest.raises(ValueError, match="restart_persistency"):
        RegistrarConfig(restart_persistency="sometimes").validate()


def test_sqlite_synchronous_is_normal_by_default_and_full_can_be_chosen() -> None:
    assert RegistrarConfig().sqlite_synchronous == "normal"
    RegistrarConfig(sqlite_synchronous="full").validate()
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        RegistrarConfig(sqlite_synchronous="off").validate()
