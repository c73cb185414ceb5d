"""`python -m services.registrar`: see services/registrar/app.py."""

import sys

from services.registrar.app import main

sys.exit(main())
