"""The edge worker's collector policy: shared/service/gc_policy.py (the registrar's too)."""

from shared.service.gc_policy import THRESHOLDS, tune_collector

__all__ = ["THRESHOLDS", "tune_collector"]
