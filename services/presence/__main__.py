"""`python -m services.presence`: see services/presence/app.py."""

import sys

from shared.service.entry import exit_if_version

exit_if_version("presence")  # `--version`: this service's own version, nothing started

from services.presence.app import main  # noqa: E402 (after the --version check)

sys.exit(main())
