"""Harness tasks that read benchmark data from a local folder instead of the Hub.

The templates under the repository's `eval/` folder (installed as `hf_infcompute.eval_tasks`) include the harness's
own task files and change only where the rows come from. Data paths are known only at run time, so `render_task_dir`
fills them in and writes a concrete task folder that `lm_eval.tasks.TaskManager(include_path=...)` reads; the
templates' Python utilities are copied beside them, where `!function` looks first.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

import lm_eval.tasks
from lm_eval.tasks import TaskManager

from hf_infcompute.errors import InputError

TEMPLATE_PACKAGE = "hf_infcompute.eval_tasks"


def harness_tasks_dir() -> Path:
    """The installed harness's own task folder, which the templates include."""
    return Path(lm_eval.tasks.__file__).parent


def _yaml_string(text: str) -> str:
    """`text` escaped for a double-quoted YAML scalar (JSON escapes are valid there)."""
    return json.dumps(text)[1:-1]


def render_task_dir(data_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write concrete task files for `data_dir` into `dest`: templates filled in, utilities copied beside them."""
    values = {
        "data_dir": _yaml_string(str(Path(data_dir).expanduser().resolve())),
        "harness_tasks": _yaml_string(str(harness_tasks_dir())),
    }
    dest = Path(dest)

    def copy_tree(source: Traversable, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for entry in source.iterdir():
            if entry.is_dir():
                if entry.name != "__pycache__":
                    copy_tree(entry, target / entry.name)
            elif entry.name.endswith(".yaml"):
                (target / entry.name).write_text(Template(entry.read_text()).substitute(values))
            elif entry.name.endswith(".py") and entry.name != "__init__.py":
                (target / entry.name).write_text(entry.read_text())

    try:
        templates = files(TEMPLATE_PACKAGE)
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"{TEMPLATE_PACKAGE} (the repository's eval/ folder) is not installed; reinstall: pip install -e ."
        ) from error
    copy_tree(templates, dest)
    return dest


def local_task_manager(data_dir: str | os.PathLike, tasks: list[str], workdir: str | os.PathLike) -> TaskManager:
    """A TaskManager that knows only the local-data tasks, after checking `data_dir` holds every file they read."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise InputError(f"data dir {str(data_dir)!r} is not a folder; give the folder holding piqa/, sciq/, ...")
    manager = TaskManager(include_path=str(render_task_dir(data_dir, workdir)), include_defaults=False)
    for task in tasks:
        for leaf in _leaf_tasks(manager, task):
            for split, path in manager.task_index[leaf].cfg["dataset_kwargs"]["data_files"].items():
                if not Path(path).is_file():
                    expected = Path(path).relative_to(data_dir.resolve())
                    raise InputError(
                        f"task {task} needs {expected} ({split} split) inside data dir {str(data_dir)!r}; "
                        f"add it in the harness's row format (see eval/README.md) or drop {task} from the tasks"
                    )
    return manager


def _leaf_tasks(manager: TaskManager, name: str) -> list[str]:
    entry = manager.task_index.get(name)
    if entry is None:
        # The harness's index skips task files it cannot parse, so a broken or missing template surfaces here.
        raise RuntimeError(f"the templates in {TEMPLATE_PACKAGE} define no task {name!r}; reinstall: pip install -e .")
    members = entry.cfg.get("task") if entry.cfg.get("group") else None
    if members is None:
        return [name]
    return [leaf for member in members for leaf in _leaf_tasks(manager, member)]
