import sys

from popproxy.cli import main

sys.exit(main())
