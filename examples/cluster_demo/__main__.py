import sys

from examples.cluster_demo.node import main

sys.exit(main())
