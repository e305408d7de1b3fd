"""``python -m experiments`` prints the registry; ``... NAME [flags]`` runs
NAME; ``... --config=PATH.py:PRESET|NAME:PRESET [flags]`` runs the
experiment that config names."""

import sys

from genjax import cli, registry

if __name__ == "__main__":
    args = sys.argv[1:]
    if args and not args[0].startswith("-"):
        sys.exit(cli.run(args[0], args[1:]))
    if any(a.startswith(("--config=", "--flagfile")) for a in args):
        sys.exit(cli.run(None, args))
    print(registry.table())
