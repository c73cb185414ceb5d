"""`python -m services.media`: see services/media/app.py."""

import sys

from shared.service.entry import exit_if_version

exit_if_version("media")  # `--version`: this service's own version, nothing started

from services.media.app import main  # noqa: E402 (after the --version check)

sys.exit(main())
