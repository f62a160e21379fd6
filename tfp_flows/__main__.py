import sys

from tfp_flows.cli import main

sys.exit(main())
