"""`python -m services.siprec`: see services/siprec/app.py."""

import sys

from services.siprec.app import main

sys.exit(main())
