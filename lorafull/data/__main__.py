"""`python -m lorafull.data`: see lorafull.data.dataset."""
import sys

from lorafull.data.dataset import main

sys.exit(main())
