import sys

from journeyrec.cli import main

sys.exit(main())
