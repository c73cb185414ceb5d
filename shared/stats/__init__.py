"""Statistics: OpenSIPS group:name counters (registry) and the 2.4 load model (load, sampler)."""
