"""One rule for what a visitor sees when something goes wrong: a sentence, never internals.

`user_errors(fn)` wraps a handler or API function (plain or generator): the studio's own errors
(pipelines' `StudioError`, storage's `StorageError`, whose messages are sentences by contract) become
`gr.Error` with that sentence and one log line; anything else is logged with its traceback for the
operator and the visitor gets a generic sentence. Gradio reads the wrapped signature (through
`functools.wraps`), so request, profile and select-data parameters keep working.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, Iterator, TypeVar

import gradio as gr

import storage
from pipelines.errors import StudioError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
UNEXPECTED = ("Something went wrong on the server and nothing was changed; try again, and tell "
              "the operator if it keeps happening.")


def as_user_error(exc: BaseException, where: str) -> gr.Error:
    """The gr.Error a visitor sees for `exc`, logged as it deserves: one line for what the visitor
    can fix, the traceback for what nobody foresaw (Gradio is told not to print another)."""
    if isinstance(exc, gr.Error):
        log.info("%s: %s", where, exc.message)
        return gr.Error(exc.message, print_exception=False)
    if isinstance(exc, (StudioError, storage.StorageError)):
        log.info("%s: %s", where, exc)
        return gr.Error(str(exc), print_exception=False)
    log.exception("%s failed unexpectedly", where)
    return gr.Error(UNEXPECTED, print_exception=False)


def user_errors(fn: F) -> F:
    """`fn` with every exception turned into a gr.Error sentence (see module docstring)."""
    where = getattr(fn, "__qualname__", repr(fn))
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as exc:  # noqa: BLE001 - the point of this wrapper
                raise as_user_error(exc, where) from None
        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the point of this wrapper
            raise as_user_error(exc, where) from None
    return call  # type: ignore[return-value]
