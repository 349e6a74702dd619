"""`python -m lorafull.report`: see lorafull.report.build."""
import sys

from lorafull.report.build import main

sys.exit(main())
