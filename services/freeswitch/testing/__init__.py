"""Test doubles for the FreeSWITCH bridge: a fake Event Socket server (FreeSWITCH itself
cannot be installed here) and a sipp UAS standing in for its SIP side."""
