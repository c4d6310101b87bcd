"""Design-space search: discrete per-step action spaces, objectives and constraints as callables.

The search knows nothing of hardware (docs/DESIGN.md section 1): a cost model plugs in as a
:class:`Problem`'s objective and constraint.
"""

from gen.alloc.core import EXHAUSTIVE_LIMIT, METHODS, ActionSpace, Problem, SearchResult
from gen.alloc.search import search

__all__ = ["ActionSpace", "Problem", "SearchResult", "search", "METHODS", "EXHAUSTIVE_LIMIT"]
