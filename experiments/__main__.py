"""``python -m experiments`` prints the registry; ``... NAME [flags]`` runs NAME."""

import sys

from genjax import cli, registry

if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        sys.exit(cli.run(sys.argv[1], sys.argv[2:]))
    print(registry.table())
