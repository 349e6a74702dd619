import sys

from lorafull.smollm2 import main

sys.exit(main())
