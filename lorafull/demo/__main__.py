"""python -m lorafull.demo STUDY_DIR: write the demo study's data into STUDY_DIR/data/."""
import sys

from lorafull.demo import main

sys.exit(main())
