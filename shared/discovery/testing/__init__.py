"""Test doubles for the discovery port (see :mod:`.fake_consul`)."""
