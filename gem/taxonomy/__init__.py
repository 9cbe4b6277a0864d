"""The curators' taxonomy (see gem.taxonomy.matching): re-exports every public name."""
from gem.taxonomy.matching import *  # noqa: F401,F403
from gem.taxonomy.matching import __doc__ as _doc  # noqa: F401
