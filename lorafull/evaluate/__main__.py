"""`python -m lorafull.evaluate`: see lorafull.evaluate.stage."""
import sys

from lorafull.evaluate.stage import main

sys.exit(main())
