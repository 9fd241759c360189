"""Make ``lm_eval --model avokit`` work: register avokit's model when lm-eval loads its models.

lm-eval 0.4.x has no plugin discovery (it never reads the ``lm_eval.models`` entry point that
pyproject also declares), so the ``avokit-lm-eval.pth`` file installed beside avokit runs
this file at interpreter start-up (as a module of its own: the ``avokit`` package itself is
not imported, so nothing pins where ``import avokit`` will find it). It only adds a finder to ``sys.meta_path``: nothing of
lm-eval, torch or avokit's evaluation code is imported until a program imports
``lm_eval.models`` itself; then ``"avokit"`` is registered as a lazy placeholder, so even
that costs nothing until a run asks for ``--model avokit``. Stdlib only; a failure to
register warns instead of breaking lm-eval's import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

TARGET = "lm_eval.models"
ALIAS = "avokit"
PLACEHOLDER = "avokit.evaluate.harness:AvokitLM"


def register() -> None:
    """Register ``"avokit"`` in lm-eval's model registry unless something already did."""
    try:
        from lm_eval.api.registry import model_registry
    except ImportError:  # an lm-eval without this registry: the -m wrapper still works
        return
    try:
        if ALIAS not in model_registry:
            model_registry.register(ALIAS, target=PLACEHOLDER)
    except (TypeError, ValueError, AttributeError) as err:  # a registry API this hook predates
        warnings.warn(f"avokit: could not register lm-eval model {ALIAS!r} ({err}); "
                      "use `python -m avokit.evaluate.harness` instead", stacklevel=2)


class _Loader(importlib.abc.Loader):
    """Runs lm-eval's own loader for ``lm_eval.models``, then registers avokit."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        register()


class Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``lm_eval.models`` when the path finder finds it."""

    # the .pth loads this file as its own module (not ``avokit._lm_eval_hook``): a marker, not
    # isinstance, tells whether a finder of either copy is installed
    avokit_lm_eval_hook = True

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Add the finder once (``.pth`` files can be processed twice, e.g. by ``site.addsitedir``)."""
    if not any(getattr(f, "avokit_lm_eval_hook", False) for f in sys.meta_path):
        sys.meta_path.insert(0, Finder())
    if TARGET in sys.modules:  # lm-eval was imported before the hook: register directly
        register()

