"""The FreeSWITCH ESL bridge (OpenSIPS 2.4 freeswitch + freeswitch_scripting): events in,
commands out, and the boxes' load for dispatching calls (README: section freeswitch)."""

__version__ = "0.2.0"  # this service's own release (docs/adr/0002-versioning.md)
