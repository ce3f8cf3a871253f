"""Query strategies behind one contract: ``scores(context)`` gives one float per pool sample,
higher = query first, and ``query`` turns them into the top-b ``Selection`` (score -> rank).

Every strategy sees the same ``QueryContext`` (the round's trained task model, the labeled set
and the unlabeled pool), so a learning-curve comparison differs only in the selection.
"""

from gestalt_al.strategies.catalogue import STRATEGY_NAMES, build_strategy
from gestalt_al.strategies.context import QueryContext, Strategy, query

__all__ = ["STRATEGY_NAMES", "QueryContext", "Strategy", "build_strategy", "query"]
