"""The project's data directory: ``corpus/`` (the benchmark's corpora) and ``eval/`` (the zero-shot benchmarks).

It is ``$BLISS_JAX_DATA_DIR`` when set, else ``<repo>/../shared/data`` (see ``shared/data/README.md``).
"""
import os
from typing import Optional

DATA_DIR_ENV_VAR = 'BLISS_JAX_DATA_DIR'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, '..', 'shared', 'data'))
CORPUS_SUBDIR = 'corpus'


def default_data_dir() -> str:
  """``$BLISS_JAX_DATA_DIR`` if set, else ``DEFAULT_DATA_DIR``, as given (not checked)."""
  return os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_DIR


def resolve_data_dir(data_dir: Optional[str] = None) -> str:
  """Returns the data directory: ``data_dir``, else ``default_data_dir()``, as an absolute path.

  Raises:
    FileNotFoundError: the chosen directory has no ``corpus/`` subdirectory (the message names the path and
      how to point elsewhere).
  """
  chosen = data_dir or default_data_dir()
  chosen = os.path.abspath(os.path.expanduser(chosen))
  corpus = os.path.join(chosen, CORPUS_SUBDIR)
  if not os.path.isdir(corpus):
    how = ('the data_dir argument' if data_dir else
           f'${DATA_DIR_ENV_VAR}' if os.environ.get(DATA_DIR_ENV_VAR) else 'the default')
    raise FileNotFoundError(
        f'benchmark data not found: {corpus} does not exist (data directory from {how}). Point '
        f'${DATA_DIR_ENV_VAR} or data_dir at a directory holding corpus/ (shared/data of the project).')
  return chosen


def data_dir_available(data_dir: Optional[str] = None) -> bool:
  """Whether ``resolve_data_dir(data_dir)`` would succeed."""
  try:
    resolve_data_dir(data_dir)
  except FileNotFoundError:
    return False
  return True
