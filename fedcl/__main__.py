import sys

from fedcl.cli import main

sys.exit(main())
