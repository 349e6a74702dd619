"""`python -m lorafull.train`: see lorafull.train.trainer."""
import sys

from lorafull.train.trainer import main

sys.exit(main())
