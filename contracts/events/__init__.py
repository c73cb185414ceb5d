"""One JSON Schema per event, named after the OpenSIPS event (E_UL_CONTACT_INSERT.json, ...).

Data only: `shared.events.schema.EventCatalog` loads them.
"""
