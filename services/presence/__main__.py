"""`python -m services.presence`: see services/presence/app.py."""

import sys

from services.presence.app import main

sys.exit(main())
