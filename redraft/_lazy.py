"""`lazy_package`: a package's public names load on first use, so `import redraft.<area>.commands` (the CLI) does
not pull in torch and the rest of the area (PEP 562, with a module subclass for the one case it misses)."""

from __future__ import annotations

import importlib
import sys
import types


class LazyPackage(types.ModuleType):
    """Exports (name -> submodule) are imported on first access and cached. Importing a submodule that has the
    name of an export (`redraft.decoding.generate`, the function, lives in `decoding/generate.py`) does not hide
    the export: the import system's `setattr(package, "generate", <module>)` is skipped."""

    def __getattr__(self, name: str):
        exports = self.__dict__.get("_exports", {})
        if name not in exports:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], self.__name__), name)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value) -> None:
        if (name in self.__dict__.get("_exports", {}) and isinstance(value, types.ModuleType)
                and value.__name__ == f"{self.__name__}.{name}"):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_exports", {})))


def lazy_package(name: str, exports: dict[str, str]) -> None:
    """Call at the end of a package's `__init__`: `lazy_package(__name__, {"Engine": ".engine", ...})`. Sets
    `__all__` to the exported names."""
    module = sys.modules[name]
    module.__dict__["_exports"] = dict(exports)
    module.__dict__["__all__"] = list(exports)
    module.__class__ = LazyPackage
