from padim_lib.cli import main

raise SystemExit(main())
