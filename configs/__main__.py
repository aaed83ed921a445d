r"""Prints a paper recipe's settings, each with its source (configs/provenance.py).

    python -m ltjax.configs configs/wb_cifar_lt.py:dataset=cifar100,epochs=200

One line per setting: the config key, its value and where the value comes from
(paper, official code at a commit, the protocol it builds on, or "assumed:
why"). Keys the recipe leaves at configs/base.py's value and that no recipe
must state are not listed.
"""

import importlib
import re
import sys

from ltjax.configs import common


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print('usage: python -m ltjax.configs configs/NAME.py[:ARGS]', file=sys.stderr)
    return 2
  path, _, arg = argv[1].partition(':')
  name = re.sub(r'\.py$', '', path.rsplit('/', 1)[-1])
  module = importlib.import_module(f'ltjax.configs.{name}')
  if not hasattr(module, 'settings'):
    print(f'configs/{name}.py declares no settings table (not a paper recipe).', file=sys.stderr)
    return 2
  print(module.settings(common.parse_arg(arg or None, **module.ARGUMENTS)).render())
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
