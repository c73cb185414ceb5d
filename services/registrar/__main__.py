"""`python -m services.registrar`: see services/registrar/app.py."""

import sys

from shared.service.entry import exit_if_version

exit_if_version("registrar")  # `--version`: this service's own version, nothing started

from services.registrar.app import main  # noqa: E402 (after the --version check)

sys.exit(main())
