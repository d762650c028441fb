"""Prints the README's set-up commands, so that CI runs exactly what a user copies.

    python3 .ci/readme_commands.py 1   # the first command (install, then the main job)
    python3 .ci/readme_commands.py 2   # the second (the tests)

The commands are the ```sh blocks of the "## Set-up" section of README.md, in order.
"""

import os
import re
import sys

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


def setup_commands(text):
    section = re.search(r"^## Set-up\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if section is None:
        sys.exit("README.md has no '## Set-up' section")
    return [block.strip() for block in re.findall(r"^```sh\n(.*?)^```", section.group(1), re.M | re.S)]


def main(argv):
    with open(README) as f:
        commands = setup_commands(f.read())
    index = int(argv[1]) if len(argv) == 2 else 0
    if not 1 <= index <= len(commands):
        sys.exit(f"usage: {argv[0]} N, with N in 1..{len(commands)} (the Set-up commands)")
    print(commands[index - 1])


if __name__ == "__main__":
    main(sys.argv)
