"""`python -m lorafull.judge.serve SERVER_DIR`: see lorafull.judge.serve.server."""
import sys

from lorafull.judge.serve.server import main

sys.exit(main())
