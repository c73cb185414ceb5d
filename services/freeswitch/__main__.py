"""`python -m services.freeswitch`: see services/freeswitch/app.py."""

import sys

from shared.service.entry import exit_if_version

exit_if_version("freeswitch")  # `--version`: this service's own version, nothing started

from services.freeswitch.app import main  # noqa: E402 (after the --version check)

sys.exit(main())
