"""Which failures Prefect retries: only `TransientError`s (a busy catalog, a lock held a moment).

A terminal error repeats on a retry, or does harm: a retry after a committed Lance merge fails on the
existing tag, and one after a partial write would do the work twice.
"""

from embedline.errors import TransientError


def retry_transient(task, task_run, state) -> bool:
    """`retry_condition_fn` for every task with retries: True only when it failed with a TransientError."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False
