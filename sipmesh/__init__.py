"""The SipMesh application: what an operator runs, built on the libraries in ``shared``.

* :mod:`sipmesh.cli` -- the ``sipmesh`` command (``up``, ``status``, ``rpc``, ``events``,
  ``parse``, ``user``);
* :mod:`sipmesh.supervisor` -- ``sipmesh up``: the embedded registry and the child processes;
* :mod:`sipmesh.catalog` -- the services ``sipmesh up`` starts, one line each.

The application may import every package of the tree (``shared``, ``gateway``,
``services``); nothing imports it back (``tests/unit/test_architecture.py``).
"""
