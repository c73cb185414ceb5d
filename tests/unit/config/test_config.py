"""shared.config: defaults, TOML file, SIPMESH_* environment, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shared.config import ConfigError, load_section, section_env_name


@dataclasses.dataclass(frozen=True)
class Demo:
    host: str = "127.0.0.1"
    port: int = 8888
    ratio: float = 0.5
    secure: bool = False
    names: tuple[str, ...] = ()
    token: str | None = None


def test_defaults_without_file_or_env() -> None:
    assert load_section(Demo, "demo", environ={}) == Demo()


def test_file_then_env_override(tmp_path: Path) -> None:
    f = tmp_path / "sipmesh.toml"
    f.write_text('[demo]\nport = 9000\nnames = ["a", "b"]\nsecure = true\n')
    env = {"SIPMESH_DEMO_PORT": "9100", "SIPMESH_DEMO_RATIO": "2.5",
           "SIPMESH_DEMO_NAMES": "x, y", "SIPMESH_DEMO_TOKEN": "t"}
    cfg = load_section(Demo, "demo", path=f, environ=env)
    assert cfg == Demo(port=9100, ratio=2.5, secure=True, names=("x", "y"), token="t")


def test_config_file_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[demo]\nhost = '::1'\n")
    assert load_section(Demo, "demo", environ={"SIPMESH_CONFIG": str(f)}).host == "::1"


@pytest.mark.parametrize(("env", "message"), [
    ({"SIPMESH_DEMO_PORT": "eighty"}, "SIPMESH_DEMO_PORT: expected an integer"),
    ({"SIPMESH_DEMO_SECURE": "maybe"}, "expected true/false"),
    ({"SIPMESH_DEMO_RATIO": "x"}, "expected a number"),
])
def test_bad_environment_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_section(Demo, "demo", environ=env)


def test_unknown_keys_wrong_types_and_bad_files(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[demo]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"\[demo\]: unknown key\(s\) prot"):
        load_section(Demo, "demo", path=f, environ={})
    f.write_text("[demo]\nhost = 5\n")
    with pytest.raises(ConfigError, match="expected a string"):
        load_section(Demo, "demo", path=f, environ={})
    f.write_text("[demo\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_section(Demo, "demo", path=f, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_section(Demo, "demo", path=tmp_path / "missing.toml", environ={})


def test_env_name() -> None:
    assert section_env_name("gateway", "call_timeout") == "SIPMESH_GATEWAY_CALL_TIMEOUT"


def test_dotted_sections_are_nested_tables(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[demo]\nport = 1\n[demo.runtime]\nport = 2\n")
    assert load_section(Demo, "demo", path=f, environ={}).port == 1
    assert load_section(Demo, "demo.runtime", path=f, environ={}).port == 2
    env = {"SIPMESH_DEMO_RUNTIME_PORT": "3"}
    assert load_section(Demo, "demo.runtime", path=f, environ=env).port == 3
    assert load_section(Demo, "other.runtime", path=f, environ={}) == Demo()
