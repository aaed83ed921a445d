"""setup.cfg's filterwarnings: a deprecation that ltjax's own code reaches fails the test.

A library marks a deprecated function with ``warnings.warn(..., DeprecationWarning,
stacklevel=2)`` (jax's ``deprecation_getattr``, numpy, flax and optax do): the warning is then
attributed to the calling module, and the filters ``error::DeprecationWarning:ltjax(\\.|$)`` and
``error::FutureWarning:ltjax(\\.|$)`` turn it into an error when that module is ltjax or one of
its submodules. The same call from a test, or a warning a library raises about itself
(stacklevel 1), stays a shown warning.
"""

import types
import warnings

import pytest

LIBRARY = """
import warnings

def deprecated():
  warnings.warn('deprecated() is deprecated', DeprecationWarning, stacklevel=2)

def changing():
  warnings.warn('changing() will change', FutureWarning, stacklevel=2)

def about_itself():
  warnings.warn('an internal deprecation', DeprecationWarning)
"""


def module(name, source, **names):
  mod = types.ModuleType(name)
  mod.__dict__.update(names)
  exec(compile(source, f'<{name}>', 'exec'), mod.__dict__)  # pylint: disable=exec-used
  return mod


@pytest.fixture
def library():
  return module('some_library', LIBRARY)


@pytest.mark.parametrize('caller', ['ltjax', 'ltjax.train.steps'])
def test_deprecated_call_from_ltjax_is_an_error(library, caller):
  calls = module(caller, 'def f(lib):\n  lib.deprecated()\n\ndef g(lib):\n  lib.changing()\n')
  with pytest.raises(DeprecationWarning, match='deprecated'):
    calls.f(library)
  with pytest.raises(FutureWarning, match='will change'):
    calls.g(library)


@pytest.mark.parametrize('caller', ['ltjaxx', 'tests.helpers', 'flax.linen'])
def test_deprecated_call_from_elsewhere_is_shown(library, caller):
  calls = module(caller, 'def f(lib):\n  lib.deprecated()\n')
  with pytest.warns(DeprecationWarning, match='deprecated'):
    calls.f(library)


def test_library_warning_about_itself_is_shown(library):
  calls = module('ltjax.data', 'def f(lib):\n  lib.about_itself()\n')
  with warnings.catch_warnings(record=True) as caught:
    calls.f(library)
  assert [str(w.message) for w in caught] == ['an internal deprecation']
