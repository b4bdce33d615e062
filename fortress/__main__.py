from fortress.cli import main

raise SystemExit(main())
