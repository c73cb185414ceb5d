"""The dialog service (OpenSIPS `dialog` + `acc`): dialogs the edge record-routes, their
profiles and timeouts, clustering with one owner per dialog, and one CDR per call.

Sans-IO core: `states` (the transition table), `table` (the dialog table, fake-clock
testable), `model` (a dialog and its replicated record), `ownership`, `cdr`, `byes`.
Adapters: `app` (gRPC, cluster, stores, events), `store`, `mi`, `uac_client`.
"""

__version__ = "0.2.0"  # this service's own release (docs/adr/0002-versioning.md)
