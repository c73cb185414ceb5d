"""`python -m services.edge`: run the edge proxy (see services/edge/app.py)."""

import sys

from shared.service.entry import exit_if_version

exit_if_version("edge")  # `--version`: this service's own version, nothing started

from services.edge.app import main  # noqa: E402 (after the --version check)

sys.exit(main())
