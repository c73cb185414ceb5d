"""Command-aware merging of fan-out answers (user location across registrar nodes).

A fan-out command's answers are merged by :func:`gateway.router.merge_answers` (lists
concatenated, dicts key by key) unless the command has a merger here, because some
answers describe the same records seen from several nodes:

* ``ul_dump`` -- in cluster mode ``none`` (and between the points of presence of
  ``federation-cachedb``) each registrar holds its own bindings, so the mesh's table is
  the union of every node's; in the sharing modes (``full-sharing``,
  ``full-sharing-cachedb``, ``sql-only``) every node holds the same ones.  Either way the
  answer keeps OpenSIPS 2.4's shape (``contracts/mi/ul_dump.json``): one entry per domain
  (table) name, one per AOR, and each contact once -- a contact is the same when its
  ``Contact`` URI and ``Callid`` are (a REGISTER's binding, as usrloc matches it).  Two
  nodes may show one contact at different moments (replication in flight): the fresher
  view wins (higher ``Cseq``, then the later ``Expires``).  ``ul_dump brief`` (AORs
  without ``Contacts``) is united the same way.
* ``ul_show_contact`` -- answered by whichever nodes hold the AOR (the others say 404,
  which the router leaves out): their contacts united as above.

The functions are pure (JSON in, JSON out). When an answer is not shaped as the command's
(another service's command of the same name), a merger returns None and the router merges
generically; inside a well-shaped answer, an item not shaped as expected is kept as it
came rather than dropped, so a merge never loses data it does not understand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Merger = Callable[[Sequence[Any]], Any]  # None: not this command's shape


def _contact_key(contact: Any) -> tuple[str, str] | None:
    if not isinstance(contact, dict):
        return None
    uri, callid = contact.get("Contact"), contact.get("Callid")
    if not isinstance(uri, str) or not isinstance(callid, str):
        return None
    return uri, callid


def _expiry_rank(expires: Any) -> float:
    """Later is larger: ``permanent`` beats any count of seconds, ``expired``/``deleted``
    lose to every live one."""
    if expires == "permanent":
        return float("inf")
    if isinstance(expires, int) and not isinstance(expires, bool):
        return float(expires)
    return -1.0


def _fresher(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether ``b`` is a newer view of the contact ``a`` is."""
    ca, cb = a.get("Cseq"), b.get("Cseq")
    if isinstance(ca, int) and isinstance(cb, int) and ca != cb:
        return cb > ca
    return _expiry_rank(b.get("Expires")) > _expiry_rank(a.get("Expires"))


def unite_contacts(lists: Sequence[Any]) -> list[Any]:
    """The contacts of several views of one AOR, each (URI, Call-ID) once, first-seen order."""
    out: list[Any] = []
    where: dict[tuple[str, str], int] = {}
    for contacts in lists:
        if not isinstance(contacts, list):
            continue
        for contact in contacts:
            key = _contact_key(contact)
            if key is None:
                out.append(contact)
            elif key not in where:
                where[key] = len(out)
                out.append(contact)
            elif _fresher(out[where[key]], contact):
                out[where[key]] = contact
    return out


def _unite_aors(entries: Sequence[Any]) -> list[Any]:
    aors: dict[str, dict[str, Any]] = {}
    contacts: dict[str, list[Any]] = {}
    odd: list[Any] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("AOR"), str):
            odd.append(entry)
            continue
        name = entry["AOR"]
        if name not in aors:
            aors[name] = {k: v for k, v in entry.items() if k != "Contacts"}
        if "Contacts" in entry:
            contacts.setdefault(name, []).append(entry["Contacts"])
    out: list[Any] = []
    for name, head in aors.items():
        if name in contacts:
            head["Contacts"] = unite_contacts(contacts[name])
        out.append(head)
    return out + odd


def merge_ul_dump(answers: Sequence[Any]) -> Any:
    """Every node's ``{"Domains": [{name, hash_size, AORs}]}`` as one table (see module)."""
    if not all(isinstance(a, dict) and isinstance(a.get("Domains"), list) for a in answers):
        return None
    domains: dict[str, dict[str, Any]] = {}
    aors: dict[str, list[Any]] = {}
    odd: list[Any] = []
    for answer in answers:
        for domain in answer["Domains"]:
            if not isinstance(domain, dict) or not isinstance(domain.get("name"), str):
                odd.append(domain)
                continue
            name = domain["name"]
            if name not in domains:
                domains[name] = {k: v for k, v in domain.items() if k != "AORs"}
            if isinstance(domain.get("AORs"), list):
                aors.setdefault(name, []).extend(domain["AORs"])
    merged = []
    for name, head in domains.items():
        head["AORs"] = _unite_aors(aors.get(name, []))
        merged.append(head)
    return {"Domains": merged + odd}


def merge_ul_show_contact(answers: Sequence[Any]) -> Any:
    """The nodes holding the AOR: ``{"AOR", "Contacts"}`` with their contacts united."""
    shaped = [a for a in answers if isinstance(a, dict) and isinstance(a.get("AOR"), str)]
    if not shaped or len(shaped) != len(answers):
        return None
    out = {k: v for k, v in shaped[0].items() if k != "Contacts"}
    out["Contacts"] = unite_contacts([a.get("Contacts") for a in shaped])
    return out


def merge_rtpengine_show(answers: Sequence[Any]) -> Any:
    """Every media broker's ``[{"Set", "Nodes": [{url, ...}]}]`` as one list: each set
    once, each instance once by url; an instance any broker sees disabled is shown
    disabled, with the longest ``recheck_ticks`` (each broker finds out by itself)."""
    if not all(isinstance(a, list) for a in answers):
        return None
    sets: dict[int, dict[str, dict[str, Any]]] = {}
    odd: list[Any] = []
    for answer in answers:
        for entry in answer:
            if not isinstance(entry, dict) or not isinstance(entry.get("Set"), int) or \
                    not isinstance(entry.get("Nodes"), list):
                odd.append(entry)
                continue
            nodes = sets.setdefault(entry["Set"], {})
            for node in entry["Nodes"]:
                if not isinstance(node, dict) or not isinstance(node.get("url"), str):
                    continue
                seen = nodes.get(node["url"])
                if seen is None:
                    nodes[node["url"]] = dict(node)
                    continue
                for key in ("disabled", "recheck_ticks"):
                    if isinstance(node.get(key), int) and isinstance(seen.get(key), int):
                        seen[key] = max(seen[key], node[key])
    merged: list[Any] = [{"Set": set_id, "Nodes": list(nodes.values())}
                         for set_id, nodes in sorted(sets.items())]
    return merged + odd


MERGERS: dict[str, Merger] = {
    "ul_dump": merge_ul_dump,
    "ul_show_contact": merge_ul_show_contact,
    "rtpengine_show": merge_rtpengine_show,
}


__all__ = ["MERGERS", "Merger", "merge_rtpengine_show", "merge_ul_dump",
           "merge_ul_show_contact", "unite_contacts"]
