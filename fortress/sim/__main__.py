import sys

from fortress.sim.server import main

raise SystemExit(main(sys.argv[1:]))
