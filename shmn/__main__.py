from shmn.cli import main

raise SystemExit(main())
