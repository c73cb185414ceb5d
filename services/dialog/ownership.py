"""Who owns a dialog: the one node that fires its timeout, sends its BYEs then and writes
its CDR.

OpenSIPS 2.4 gives that role by sharing tag: the node where the dialog's tag is active
owns it, the others keep a backup copy. A dialog without a tag is owned by *every* node
there, which is how clusters get two CDRs and profile counters below zero (OpenSIPS
#1937, Kamailio #3254). Here:

* a dialog with a sharing tag (``ctx.dialog.set_sharing_tag``, configured in
  ``[dialog.cluster] sharing_tags``) is owned where the tag is active (the clustering
  engine moves the tag when its holder dies);
* a dialog without one is owned by the node chosen by rendezvous hashing (highest random
  weight) of its identity over the nodes synced for ``dialog-dlg-repl``: every node with
  the same view of the cluster picks the same single owner without talking, and when a
  node dies only its dialogs move (each to the node that was second on its list).

A node that is not synced (still pulling the table from a donor) owns nothing.

Views can differ for a moment (a death noticed by one node before another); the CDR is
written with an idempotent insert keyed by the dialog, so even then a call never has two
rows, and its E_ACC_CDR is raised only by the write that inserted the row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _weight(key: str, node: int) -> int:
    digest = hashlib.blake2b(f"{node}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(key: str, nodes: Sequence[int]) -> int | None:
    """The node of `nodes` with the highest weight for `key` (None without nodes)."""
    best: int | None = None
    best_weight = -1
    for node in nodes:
        weight = _weight(key, node)
        if weight > best_weight or (weight == best_weight and best is not None and node < best):
            best, best_weight = node, weight
    return best


def owner_key(callid: str, from_tag: str) -> str:
    return f"{callid}\x00{from_tag}"
