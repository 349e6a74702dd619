"""`python -m lorafull.generate`: see lorafull.generate.stage."""
import sys

from lorafull.generate.stage import main

sys.exit(main())
