"""Only what pyproject.toml cannot say: install ``avokit-lm-eval.pth`` beside the package.

The ``.pth`` line runs :func:`avokit._lm_eval_hook.install` at interpreter start-up (loading
that file alone, not the ``avokit`` package), which
makes ``lm_eval --model avokit`` work with lm-eval 0.4.x (no plugin discovery there).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "avokit-lm-eval.pth"
# Runs avokit/_lm_eval_hook.py (stdlib only) as a module of its own, without importing the
# avokit package: importing it at start-up would pin `avokit` to where it was found first,
# so a later sys.path change (mutmut's mutated copy in mutants/) could not take effect.
LINE = (
    "import importlib.util as u, os; s = u.find_spec('avokit'); "
    "f = os.path.join(list(s.submodule_search_locations)[0], '_lm_eval_hook.py') "
    "if s and s.submodule_search_locations else ''; "
    "m = u.module_from_spec(u.spec_from_file_location('_avokit_lm_eval_hook', f)) "
    "if os.path.isfile(f) else None; "
    "m and (m.__spec__.loader.exec_module(m), m.install())\n"
)


class BuildWithPth(build_py):
    """build_py that also writes the .pth at the top of the build tree (site-packages on install)."""

    def run(self) -> None:
        super().run()
        self._pth().parent.mkdir(parents=True, exist_ok=True)
        self._pth().write_text(LINE)

    def _pth(self) -> Path:
        if getattr(self, "editable_mode", False):
            # An editable wheel takes only a path finder from build_lib; setuptools points
            # `install_lib` at the unpacked wheel, whose top level lands in site-packages.
            return Path(self.distribution.get_command_obj("install").install_lib) / PTH
        return Path(self.build_lib) / PTH

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(self._pth())]


setup(cmdclass={"build_py": BuildWithPth})
