"""Data files shipped with repana, found through :mod:`importlib.resources` (so they are found in a
wheel, an editable install or a zip alike, never through ``__file__`` arithmetic).

    from repana.resources import analyses_files, paper_files, preset_files
    for entry in analyses_files():            # the paper's analyses, one TOML each
        tomllib.loads(entry.read_text(encoding="utf-8"))
    preset_files()["quick"].read_text()       # training presets by name
    paper_files()["tables.toml"].read_text()  # the paper's numbers (repana.analysis.paper_data)

Each file is an ``importlib.resources.abc.Traversable``: ``.name``, ``.read_text()``, ``.read_bytes()``,
``.open()``; use ``importlib.resources.as_file(f)`` where a real path is needed.

The analyses live in ``analyses/`` at the top of the source tree and are installed as the package
``repana._analyses`` (``pyproject.toml``). From a source checkout run without installing (``PYTHONPATH``
at the checkout), ``repana._analyses`` does not exist; the checkout's ``analyses/`` is then used,
located through the resources of ``repana`` itself.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from repana.errors import ConfigError

__all__ = ["analyses_files", "analyses_folder", "paper_files", "preset_files"]

ANALYSES_PACKAGE = "repana._analyses"
PRESETS_PACKAGE, PRESETS_FOLDER = "repana.meta", "presets"
PAPER_PACKAGE, PAPER_FOLDER = "repana.analysis", "paper"


def _tomls(folder: Traversable) -> list[Traversable]:
    return sorted((f for f in folder.iterdir() if f.name.endswith(".toml") and f.is_file()), key=lambda f: f.name)


def _source_checkout() -> Traversable | None:
    """The repana source tree around the imported package (its pyproject.toml names repana), if any."""
    try:
        root = resources.files("repana").joinpath("..")
        pyproject = root.joinpath("pyproject.toml")
        if pyproject.is_file() and 'name = "repana"' in pyproject.read_text(encoding="utf-8"):
            return root
    except (OSError, TypeError, ValueError):  # not a file system (a zip): no checkout around it
        pass
    return None


def analyses_folder() -> Traversable:
    """The folder of the analysis entries: the source checkout's ``analyses/`` when repana runs from
    one, else the installed ``repana._analyses``."""
    checkout = _source_checkout()
    if checkout is not None and checkout.joinpath("analyses").is_dir():
        return checkout.joinpath("analyses")
    try:
        return resources.files(ANALYSES_PACKAGE)
    except ModuleNotFoundError:
        raise ConfigError("the analysis entries are missing: neither analyses/ beside the repana source nor "
                          "the installed repana._analyses was found; reinstall repana") from None


def analyses_files() -> list[Traversable]:
    """The analysis entries (``*.toml``), sorted by file name."""
    return _tomls(analyses_folder())


def preset_files() -> dict[str, Traversable]:
    """The bundled training presets: name (file name without ``.toml``) -> file."""
    folder = resources.files(PRESETS_PACKAGE).joinpath(PRESETS_FOLDER)
    return {f.name[: -len(".toml")]: f for f in _tomls(folder)}


def paper_files() -> dict[str, Traversable]:
    """The data files of the paper's numbers and quotes (``repana/analysis/paper/*.toml``): file name -> file."""
    folder = resources.files(PAPER_PACKAGE).joinpath(PAPER_FOLDER)
    return {f.name: f for f in _tomls(folder)}
