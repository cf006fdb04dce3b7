"""The TorchX connection: the optional import, the one runner per process, and the wrapper
that turns a scheduler client's errors into messages.

torchx is the optional `phmscale[torchx]` extra: without it this module still imports (so
handles can be recognised and the component file still loads), and `require_torchx` says
what to install.
"""

import atexit
from typing import Any

from phmscale.errors import InvalidInputError, PhmscaleError

try:  # torchx is the optional `phmscale[torchx]` extra; is_torchx_handle works without it
    from torchx import specs
    from torchx.specs import AppDef
except ImportError:  # pragma: no cover - exercised only where torchx is absent
    specs = None

    class AppDef:  # type: ignore[no-redef]  # placeholder so the module still imports
        pass


def require_torchx() -> None:
    if specs is None:
        raise PhmscaleError("TorchX is not installed: pip install 'phmscale[torchx]'")


_RUNNER: Any = None


def runner() -> Any:
    """One TorchX runner per process: local_cwd apps are children of the runner that started
    them, so status/logs/stop on them must reach the same runner. It is closed at exit, which
    ends this process's local_cwd apps (TorchX's __del__ is not guaranteed to run then, and
    an orphaned torchrun would hold its ranks forever)."""
    global _RUNNER
    require_torchx()
    if _RUNNER is None:
        from torchx.runner import get_runner

        _RUNNER = get_runner()
        atexit.register(_RUNNER.close)
    return _RUNNER


def ask(sched: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """A runner call whose scheduler-client errors become messages (never tracebacks)."""
    from torchx.specs.api import InvalidRunConfigException, UnknownAppException

    try:
        return call(*args, **kwargs)
    except PhmscaleError:
        raise
    except UnknownAppException as error:
        raise InvalidInputError(f"no such TorchX app: {error}") from None
    except InvalidRunConfigException as error:
        raise InvalidInputError(f"torchx:{sched}: {error}") from None
    except ImportError as error:
        raise PhmscaleError(f"torchx:{sched} needs the Python package {error.name!r}: "
                            f"pip install {error.name}") from None
    except Exception as error:  # kubernetes' ApiException, squeue/scancel failures, …
        raise PhmscaleError(f"torchx:{sched}: {type(error).__name__}: {error}") from None
