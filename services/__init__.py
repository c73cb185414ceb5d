"""SipMesh's services, one package each.

`shared` is imported first so that `shared.compiled` decides, before the edge's core is
imported, whether the compiled or the pure-Python sans-IO core runs.
"""

import shared as _shared  # noqa: F401
