"""`python -m lorafull.config`: see lorafull.config.files."""
import sys

from lorafull.config.files import main

sys.exit(main())
