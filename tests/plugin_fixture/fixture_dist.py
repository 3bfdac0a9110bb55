"""Install the fixture plugin packages as real distributions in a directory for sys.path."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PLUGIN_MODULES = ("crbench_dummy_plugin", "crbench_broken_plugin")


def install_dist(site: Path, dist: str, package: str | None, entry_points: dict[str, str],
                 version: str = "0.1") -> Path:
    """Write ``dist`` into ``site`` (a directory to put on sys.path) as pip would.

    Args:
        site: target directory (acts as site-packages).
        dist: distribution name.
        package: fixture package to copy next to the metadata (None: metadata only).
        entry_points: name -> "module:attr" in group crbench.methods.
        version: distribution version.

    Returns:
        The dist-info directory.
    """
    site.mkdir(parents=True, exist_ok=True)
    if package is not None and not (site / package).exists():
        shutil.copytree(HERE / package, site / package)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                                   f"Summary: crbench test plugin\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[crbench.methods]\n{lines}")
    (info / "top_level.txt").write_text(f"{package or ''}\n")
    (info / "RECORD").write_text("")
    return info


def activate_site(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Put ``site`` on sys.path for one test and forget the fixture plugin modules before and
    after it (use with ``yield from`` inside a fixture)."""
    site.mkdir(parents=True, exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    for mod in PLUGIN_MODULES:
        monkeypatch.delitem(sys.modules, mod, raising=False)
    yield site
    for mod in PLUGIN_MODULES:
        sys.modules.pop(mod, None)
