"""The gateway's live web console (``GET /``): the mesh as it is now, pushed to the page.

* :mod:`.model` -- what the page shows, computed from MI answers and events (sans-IO);
* :mod:`.service` -- the routes, the poller and the server-sent event stream;
* ``static/`` -- the page, its script and style (shipped in the package: no CDN).
"""

from gateway.console.model import ConsoleModel, InstanceInfo, Poll
from gateway.console.service import Console

__all__ = ["Console", "ConsoleModel", "InstanceInfo", "Poll"]
