"""`python -m services.dialog`: see services/dialog/app.py."""

import sys

from shared.service.entry import exit_if_version

exit_if_version("dialog")  # `--version`: this service's own version, nothing started

from services.dialog.app import main  # noqa: E402 (after the --version check)

sys.exit(main())
