"""One module per `shmn` subcommand: each has ``add_parser(subparsers)`` and ``run(args) -> int``."""
