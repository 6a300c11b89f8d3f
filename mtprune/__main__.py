import sys

from mtprune.cli import main

sys.exit(main())
