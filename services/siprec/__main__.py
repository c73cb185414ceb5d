"""`python -m services.siprec`: see services/siprec/app.py."""

import sys

from shared.service.entry import exit_if_version

exit_if_version("siprec")  # `--version`: this service's own version, nothing started

from services.siprec.app import main  # noqa: E402 (after the --version check)

sys.exit(main())
