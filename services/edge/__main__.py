"""`python -m services.edge`: run the edge proxy (see services/edge/app.py)."""

import sys

from services.edge.app import main

sys.exit(main())
