"""`hf-infcompute search`: coordinate descent over (learning rate, epochs, weight decay) to a locally optimal point.

Start the same command several times (by hand, on several machines sharing a filesystem, or as the processes of
`accelerate launch` / `torchrun`) on one `--output` directory and the workers share the sweep: each trains points the
others have not claimed, and all end at the same answer.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hf_infcompute.errors import InputError
from hf_infcompute.records import write_json_atomic
from hf_infcompute.search.coordinate_descent import SearchResult, coordinate_descent
from hf_infcompute.search.grid import RUN_AXES, Point, SearchGrid, for_recipe, format_value, point_label
from hf_infcompute.search.pretrain_objective import PretrainObjective
from hf_infcompute.search.store import SweepStore, default_worker_id
from hf_infcompute.training.config import load_recipe, parse_run_config
from hf_infcompute.workers import detach_from_launcher

RESULT_FILENAME = "search.json"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "search",
        help="Find locally optimal learning rate, epochs and weight decay by coordinate descent.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="Recipe YAML file (its `recipe` key, standard or regularized, picks the grid).")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="Recipe settings to override (values read as YAML)."
    )
    parser.add_argument("--output", required=True, help="Sweep directory, shared by every worker of this search.")
    parser.add_argument("--grid-lr", type=_numbers, metavar="LR,...", help="Learning rates to search, comma-separated.")
    parser.add_argument(
        "--grid-epochs", type=_numbers, metavar="E,...", help="Epoch counts to search, comma-separated."
    )
    parser.add_argument(
        "--grid-wd", type=_numbers, metavar="WD,...", help="Weight decays to search (regularized recipe only)."
    )
    parser.add_argument(
        "--start",
        type=_numbers,
        metavar="LR,EPOCHS[,WD]",
        help="Starting point (default: the recipe's own values where they lie on the grid, else the grid's middle).",
    )
    parser.add_argument(
        "--worker-id", help="Name of this worker (default: process index under a launcher, else host-pid)."
    )
    parser.add_argument("--max-evaluations", type=int, help="Stop after training this many points in this worker.")
    parser.add_argument("--retry-failed", action="store_true", help="Train again points that failed in earlier runs.")
    parser.add_argument(
        "--poll-interval", type=float, default=10.0, help="Seconds between checks on points other workers train."
    )
    parser.add_argument(
        "--lease", type=float, default=600.0, help="Seconds without a heartbeat after which a worker's claim is stale."
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    slot = detach_from_launcher()
    worker_id = args.worker_id or (str(slot.rank) if slot else None) or default_worker_id()
    config = load_recipe(args.recipe, args.overrides)
    run_config = parse_run_config(config)
    grid = for_recipe(
        run_config.training.recipe, learning_rates=args.grid_lr, epochs=args.grid_epochs, weight_decays=args.grid_wd
    )
    start = start_point(grid, config, args.start)
    objective = PretrainObjective(run_config, args.output)
    objective.run_for(start)  # check the starting point's run now, not at the first training
    store = SweepStore(args.output, lease_s=args.lease)
    store.bind(objective.binding(grid.names))  # every setting but the searched ones
    print(f"[{worker_id}] searching {grid.size} grid points from {point_label(start)} in {args.output}")
    with _printing_progress():
        result = coordinate_descent(
            objective,
            grid,
            start,
            store,
            worker_id=worker_id,
            max_evaluations=args.max_evaluations,
            retry_failed=args.retry_failed,
            poll_interval=args.poll_interval,
        )
    print(format_result(result, grid))
    write_json_atomic(
        Path(args.output) / RESULT_FILENAME,
        {**result.to_dict(), "grid": grid.to_dict(), "start": start, "config": config, "worker_id": worker_id},
    )
    return 0


def start_point(grid: SearchGrid, config: dict[str, Any], start: list[float] | None) -> Point:
    """Per coordinate: the value from `--start` (LR,EPOCHS[,WD]), else the recipe's own value where it lies on the
    grid, else the grid's middle value."""
    if start is not None and len(start) not in (2, 3):
        raise InputError(f"--start takes LR,EPOCHS or LR,EPOCHS,WD, got {len(start)} values")
    point = grid.center()
    for name in RUN_AXES:
        value = _as_number(config.get(name))
        if value is not None and _on_grid(grid, point, name, value):
            point[name] = value
    for name, value in zip(RUN_AXES, start or ()):
        grid.index({**point, name: value})  # raises, naming the grid's values, when off the grid
        point[name] = value
    return grid.canonical(point)


def _as_number(value: Any) -> float | None:
    """A recipe value as a number ('3e-3' is a string to YAML), or None."""
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _on_grid(grid: SearchGrid, point: Point, name: str, value: Any) -> bool:
    try:
        grid.index({**point, name: value})
    except InputError:
        return False
    return True


def format_result(result: SearchResult, grid: SearchGrid) -> str:
    """The final point, its loss and the neighbours that prove it, as a small table."""
    if result.best is None:
        return "no point evaluated yet"
    best = result.best
    state = "locally optimal" if result.locally_optimal else "best so far (not yet locally optimal)"
    lines = [
        f"{state}: {point_label(best.point)}  loss {_loss(best.loss)}",
        f"  {len(result.path) - 1} move(s), {result.evaluations} point(s) trained here, {result.reused} reused",
    ]
    edges = grid.edges(best.point)
    if edges:
        lines.append(f"  on the grid's edge: {', '.join(edges)}; extend the grid past it to be sure")
    lines.append(f"  {'neighbour':<28}{'loss':>10}{'vs best':>10}")
    index = grid.index(best.point)
    for neighbour in result.neighbours:
        moved = [(name, other) for name, i, other in zip(grid.names, index, grid.index(neighbour.point)) if i != other]
        name, position = moved[0]
        label = f"{name} {format_value(grid.axes[name][position])}"
        delta = "" if neighbour.failed else f"{neighbour.loss - best.loss:+.4f}"
        lines.append(f"  {label:<28}{_loss(neighbour.loss):>10}{delta:>10}")
    return "\n".join(lines)


def _loss(value: float) -> str:
    return f"{value:.4f}" if value != float("inf") else "failed"


def _numbers(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1e-3,3e-3, got {text!r}") from None


@contextlib.contextmanager
def _printing_progress() -> Iterator[None]:
    """Print the search's progress lines (points, losses, moves) on stdout while the search runs."""
    logger = logging.getLogger("hf_infcompute.search")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
