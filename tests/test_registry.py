"""Registry: lazy entry-point discovery, real installed plugin distributions, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from plugin_fixture.fixture_dist import activate_site, install_dist

from crbench.api import Inputs, Method
from crbench.cli.main import main
from crbench.errors import CheckpointError, PluginError, UsageError
from crbench.registry import (
    conflicts,
    create_method,
    find_checkpoint,
    get_method_class,
    list_methods,
)

DUMMY = {"dummy_mean": "crbench_dummy_plugin:DummyMean",
         "dummy_trained": "crbench_dummy_plugin:DummyTrained"}
BROKEN = {"broken_one": "crbench_broken_plugin:Anything"}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty site directory on sys.path; fixture plugin modules are forgotten afterwards."""
    yield from activate_site(tmp_path / "site", monkeypatch)


def _inputs(b: int = 2, L: int = 3, size: int = 8) -> Inputs:
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(b, L, size, size, generator=g) > 0.5).float()
    return Inputs(s2=torch.rand(b, L, 13, size, size, generator=g),
                  s1=torch.rand(b, L, 2, size, size, generator=g), masks=masks,
                  coverage=masks.mean(dim=(2, 3)), days=torch.arange(L).repeat(b, 1))


def test_builtins_listed_with_their_distribution() -> None:
    infos = {i.name: i for i in list_methods()}
    for name in ("least_cloudy", "mosaicing", "stgan", "seq2point", "seqdm", "seqdm_no_tts"):
        assert infos[name].package == "crbench"
        assert infos[name].version
        assert infos[name].value.startswith("crbench_methods.")
    assert infos["mosaicing"].value == "crbench_methods.mosaicing:Mosaicing"


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UsageError, match=r"'mosaicng'.*did you mean 'mosaicing'"):
        get_method_class("mosaicng")
    with pytest.raises(UsageError, match=r"registered methods: .*least_cloudy"):
        create_method("zzzz")


def test_dummy_plugin_listed_lazily_then_created(site: Path) -> None:
    install_dist(site, "crbench-dummy-plugin", "crbench_dummy_plugin", DUMMY, version="0.1")
    infos = {i.name: i for i in list_methods()}
    assert infos["dummy_mean"].package == "crbench-dummy-plugin"
    assert infos["dummy_mean"].version == "0.1"
    assert infos["dummy_mean"].value == DUMMY["dummy_mean"]
    assert "crbench_dummy_plugin" not in sys.modules  # listing imported nothing
    method = create_method("dummy_mean", scale=0.5)
    assert "crbench_dummy_plugin" in sys.modules
    x = _inputs()
    torch.testing.assert_close(method.predict(x), x.s2.mean(dim=1) * 0.5)
    with pytest.raises(UsageError, match=r"dummy_mean.*bogus"):
        create_method("dummy_mean", bogus=1)


def test_broken_plugin_names_itself_and_breaks_nothing_else(site: Path) -> None:
    install_dist(site, "crbench-broken-plugin", "crbench_broken_plugin", BROKEN, version="2.3")
    install_dist(site, "crbench-dummy-plugin", "crbench_dummy_plugin", DUMMY)
    names = [i.name for i in list_methods()]
    assert "broken_one" in names and "least_cloudy" in names
    with pytest.raises(PluginError) as err:
        get_method_class("broken_one")
    msg = str(err.value)
    for part in ("broken_one", BROKEN["broken_one"], "crbench-broken-plugin 2.3",
                 "crbench_missing_dependency_for_tests"):
        assert part in msg
    assert isinstance(create_method("least_cloudy"), Method)
    assert isinstance(create_method("dummy_mean"), Method)


def test_same_name_from_two_distributions_is_refused(site: Path) -> None:
    install_dist(site, "crbench-dummy-plugin", "crbench_dummy_plugin", DUMMY)
    install_dist(site, "other-plugin", None, {"dummy_mean": "crbench_dummy_plugin:DummyTrained"})
    assert {c.package for c in conflicts()["dummy_mean"]} == {"crbench-dummy-plugin",
                                                             "other-plugin"}
    with pytest.raises(PluginError, match=r"crbench-dummy-plugin 0.1.*other-plugin 0.1"):
        get_method_class("dummy_mean")
    assert isinstance(create_method("mosaicing"), Method)  # other names unaffected


def test_entry_point_to_a_non_method_is_refused(site: Path) -> None:
    install_dist(site, "bad-target", "crbench_dummy_plugin",
                 {"not_a_method": "crbench_dummy_plugin:NotAMethod",
                  "missing_attr": "crbench_dummy_plugin:Nope"})
    with pytest.raises(PluginError, match=r"not_a_method.*not a subclass of crbench.api.Method"):
        get_method_class("not_a_method")
    with pytest.raises(PluginError, match=r"missing_attr.*bad-target.*failed to import"):
        get_method_class("missing_attr")


def test_trainable_method_needs_a_matching_checkpoint(site: Path, tmp_path: Path) -> None:
    install_dist(site, "crbench-dummy-plugin", "crbench_dummy_plugin", DUMMY)
    with pytest.raises(CheckpointError, match=r"crbench train dummy_trained .*--L 3"):
        create_method("dummy_trained", seq_len=3)
    cls = get_method_class("dummy_trained")
    ckpt = tmp_path / "ckpts" / "dummy_trained"
    cls(seq_len=3, offset=0.25).save(ckpt)
    method = create_method("dummy_trained", checkpoint=ckpt, seq_len=3)
    x = _inputs()
    torch.testing.assert_close(method.predict(x), (x.s2.mean(dim=1) + 0.25).clamp(0, 1))
    with pytest.raises(CheckpointError, match="seq_len=3 but seq_len=4"):
        create_method("dummy_trained", checkpoint=ckpt, seq_len=4)
    with pytest.raises(CheckpointError, match="not a directory"):
        create_method("dummy_trained", checkpoint=tmp_path / "nowhere", seq_len=3)
    with pytest.raises(UsageError, match=r"least_cloudy.*no weights"):
        create_method("least_cloudy", checkpoint=ckpt)


def test_checkpoint_lookup_prefers_per_L_directory(tmp_path: Path) -> None:
    assert find_checkpoint(None, "seqdm", 3) is None
    assert find_checkpoint(tmp_path, "seqdm", 3) is None
    (tmp_path / "seqdm").mkdir()
    assert find_checkpoint(tmp_path, "seqdm", 3) == tmp_path / "seqdm"
    (tmp_path / "seqdm" / "L3").mkdir()
    assert find_checkpoint(tmp_path, "seqdm", 3) == tmp_path / "seqdm" / "L3"
    assert find_checkpoint(tmp_path, "seqdm", 4) == tmp_path / "seqdm"


def test_cli_methods_lists_sources_and_survives_a_broken_plugin(
        site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install_dist(site, "crbench-broken-plugin", "crbench_broken_plugin", BROKEN, version="2.3")
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "crbench_methods.mosaicing:Mosaicing" in out
    assert "broken_one" in out and "crbench-broken-plugin 2.3" in out
    assert "crbench_broken_plugin" not in sys.modules
    assert main(["methods", "--verbose", "mosaicing", "broken_one"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "import failed" in lines["broken_one"]
    assert "error: method plugin 'broken_one'" in out and "crbench_missing_dependency" in out
    assert " no " in lines["mosaicing"] and "masks" in lines["mosaicing"]
    assert "least_cloudy" not in lines
    assert main(["methods", "mosaicng"]) == 2
    assert "did you mean 'mosaicing'" in capsys.readouterr().err
