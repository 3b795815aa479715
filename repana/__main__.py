import sys

from repana.cli import main

sys.exit(main())
