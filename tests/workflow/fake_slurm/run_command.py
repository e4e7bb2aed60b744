"""The entry point of every fake SLURM executable in this folder (`run_command.py NAME ARGS`): the package
fakeslurm/ next to it does the work (see its __init__)."""

import sys

from fakeslurm.commands import main  # this folder is sys.path[0] when Python runs this file

if __name__ == "__main__":
    sys.exit(main())
