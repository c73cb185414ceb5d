"""``sipmesh import opensips``: an OpenSIPS 2.4 database carried over to SipMesh.

* :mod:`.source` -- reading the OpenSIPS database (MySQL/MariaDB, PostgreSQL), read only;
* :mod:`.rows` -- each OpenSIPS row turned into SipMesh's record, or a reason to skip it
  (sans-IO);
* :mod:`.run` -- table by table, batch by batch, into SipMesh's stores.
"""
