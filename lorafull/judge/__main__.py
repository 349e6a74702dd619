"""`python -m lorafull.judge`: see lorafull.judge.stage."""
import sys

from lorafull.judge.stage import main

sys.exit(main())
