"""postalias - Postfix alias database maintenance (postalias(1)).

    postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [file_type:]file_name ...

The same engine as postmap(1), reading aliases(5) syntax ("name: value,
value"); -q - and -s print "key:<TAB>value" as Postfix's postalias does.
"""

from __future__ import annotations

import sys

from pfy.cli import _common
from pfy.cli.postmap import run

__all__ = ["main"]


def main() -> None:
    _common.set_program_name("postalias")
    _common.run_main(run, "postalias", sys.argv[1:])


if __name__ == "__main__":
    main()
