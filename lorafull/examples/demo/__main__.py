"""python -m lorafull.examples.demo STUDY_DIR: write the demo study's data into STUDY_DIR/data/."""
import sys

from lorafull.examples.demo import main

sys.exit(main())
