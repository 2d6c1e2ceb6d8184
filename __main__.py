"""The Iotistic Pulumi program's entry point for the CLI (`pulumi up -s <customer>` from the root).

The program itself is `program.iotistic_program`, which the deploy path also runs inline.
"""

from program import iotistic_program

iotistic_program()
