"""`python -m services.media`: see services/media/app.py."""

import sys

from services.media.app import main

sys.exit(main())
