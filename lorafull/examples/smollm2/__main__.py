"""python -m lorafull.examples.smollm2 STUDY_DIR: write the SmolLM2 miniature's data and model folder into STUDY_DIR/data/."""
import sys

from lorafull.examples.smollm2 import main

sys.exit(main())
