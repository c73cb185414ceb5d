"""Helpers every test tier shares: polling for a condition (:mod:`.waiting`) and ports
reserved race-free for real peers (:mod:`.ports`)."""
