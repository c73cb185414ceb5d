"""Typed configuration: embedded defaults, an optional TOML file, ``SIPMESH_*`` overrides.

Every section is a frozen dataclass whose field defaults are the embedded defaults (so a
process runs with no file at all). :func:`load_section` layers, lowest first:

1. the dataclass defaults,
2. the ``[section]`` table of the TOML file named by ``path`` or ``$SIPMESH_CONFIG``
   (a dotted section such as ``edge.runtime`` is the nested table ``[edge.runtime]``),
3. environment variables ``SIPMESH_<SECTION>_<FIELD>`` (upper case, dots as ``_``:
   ``SIPMESH_EDGE_RUNTIME_PORT``).

Values from the environment are strings and are converted to the field's declared type
(``int``, ``float``, ``bool``, ``str``, ``tuple[str, ...]`` as a comma list). A wrong type or
an unknown key is a :class:`ConfigError` naming the key, never a silent default.
"""

from shared.config.loader import EXIT_CONFIG, ConfigError, load_section, section_env_name

__all__ = ["EXIT_CONFIG", "ConfigError", "load_section", "section_env_name"]
