"""`python -m lorafull.plan`: see lorafull.plan.estimate."""
import sys

from lorafull.plan.estimate import main

sys.exit(main())
