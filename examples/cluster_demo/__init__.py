"""The cluster demo node: a replicated key/value store on the clustering engine
(:mod:`examples.cluster_demo.node`); ``python -m examples.cluster_demo``."""
