"""`python -m services.dialog`: see services/dialog/app.py."""

import sys

from services.dialog.app import main

sys.exit(main())
