"""`python -m services.freeswitch`: see services/freeswitch/app.py."""

import sys

from services.freeswitch.app import main

sys.exit(main())
