"""Task definitions. `registry` is torch-free so the launcher can import it."""

from jobs.tasks.registry import BASELINE, TASKS, Task, get_task, task_names

__all__ = ["BASELINE", "TASKS", "Task", "get_task", "task_names"]
