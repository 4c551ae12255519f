"""Which searches a study runs, where each starts, and the order each worker walks them.

Both recipes are searched at every token budget and every preset (the paper's data scaling). A search starts where
the nearest finished search points, because the paper's optima move smoothly with D and N:

- the standard recipe at the main budget D starts from the study's start; at any other budget from its own optimum
  at the neighbouring budget towards D;
- the regularized recipe at D starts, for the first preset, from the study's start and, for each larger preset,
  from the optimum of the preset before it (the neighbouring size); at any other budget from its own optimum at the
  neighbouring budget towards D;
- every regularized search at D also starts from the standard recipe's optimum at the same N (weight decay 0.1 lies
  on its grid), so that regularizing is never worse than not regularizing because of the search's path, where the
  findings compare the two recipes at each N. (At the other budgets only the best loss over N enters the data laws,
  and a second start would double the costliest searches.)

The starts form a graph without cycles. Each worker walks every search after the searches its starts come from, so
every worker, whatever its order, starts each search from the same points and (the searches sharing their results)
ends at the same optimum: the study stays deterministic across workers walking in opposite orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hf_infcompute.method import RECIPES
from hf_infcompute.study.spec import StudySpec

CONFIGURED_START = "study's start"
STANDARD_START = "standard optimum"
NEIGHBOURING_SIZE = "neighbouring size"
NEIGHBOURING_BUDGET = "neighbouring budget"


@dataclass(frozen=True, order=True)
class SearchNode:
    """One search: a recipe at a token budget for a preset."""

    recipe: str
    token_budget: int
    preset: str


def search_nodes(spec: StudySpec) -> list[SearchNode]:
    """Every search of the study, standard first, each recipe's budgets from D outwards, presets in ladder order."""
    return [
        SearchNode(recipe, budget, preset)
        for recipe in RECIPES
        for budget in budgets_from_main(spec)
        for preset in spec.presets
    ]


def budgets_from_main(spec: StudySpec) -> list[int]:
    """The study's budgets ordered by their distance (in doublings) from the main budget D, D first."""
    return sorted(spec.budgets, key=lambda budget: (abs(math.log2(budget / spec.token_budget)), budget))


def neighbouring_budget(spec: StudySpec, budget: int) -> int:
    """The budget next to `budget` on the way to the main budget D."""
    ordered = sorted(spec.budgets)
    position, main = ordered.index(budget), ordered.index(spec.token_budget)
    return ordered[position - 1] if position > main else ordered[position + 1]


def start_sources(spec: StudySpec, node: SearchNode) -> dict[str, SearchNode | None]:
    """Where `node`'s search starts: label -> the search whose optimum is a start (None: the study's start)."""
    sources: dict[str, SearchNode | None] = {}
    if node.token_budget != spec.token_budget:
        sources[NEIGHBOURING_BUDGET] = SearchNode(
            node.recipe, neighbouring_budget(spec, node.token_budget), node.preset
        )
    elif node.recipe == "regularized" and spec.presets.index(node.preset) > 0:
        previous = spec.presets[spec.presets.index(node.preset) - 1]
        sources[NEIGHBOURING_SIZE] = SearchNode(node.recipe, node.token_budget, previous)
    else:
        sources[CONFIGURED_START] = None
    if node.recipe == "regularized" and node.token_budget == spec.token_budget:
        sources[STANDARD_START] = SearchNode("standard", node.token_budget, node.preset)
    return sources


def walk_order(spec: StudySpec, from_end: bool = False) -> list[SearchNode]:
    """Every search in the order a worker walks it: `search_nodes` (reversed with `from_end`), each search after
    the searches its starts come from. Workers walking from opposite ends train different searches until they meet,
    instead of all waiting, at the end of each coordinate-descent step, for the last points of one search."""
    nodes = search_nodes(spec)
    order: list[SearchNode] = []

    def visit(node: SearchNode) -> None:
        if node in order:
            return
        sources = [source for source in start_sources(spec, node).values() if source is not None]
        for source in sources[::-1] if from_end else sources:
            visit(source)
        order.append(node)

    for node in nodes[::-1] if from_end else nodes:
        visit(node)
    return order
