"""The media broker: rtpengine sets, per-call instance choice and the ng protocol
(see app.py for the process, broker.py for the asyncio side, ng/flags/sets/stats for the
sans-IO decisions)."""
