import sys

from arcbeat_agent.cli import main

sys.exit(main())
