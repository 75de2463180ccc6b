"""The system registry reads declarations (``models/<system>/system.json``, entry points,
``MTPG_AIAA_SYSTEMS``) without importing the systems; the task registry lists tasks from the
configs and finds each builder in the module its system declares."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from helpers import ROOT
from mtpg_aiaa.engine import tasks as task_registry
from mtpg_aiaa.engine.system_configs import SystemConfigsSearchPath
from mtpg_aiaa.models import registry
from mtpg_aiaa.models.base import ScoreRange


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry read again after the test changed where systems come from."""
    monkeypatch.delenv(registry.SYSTEMS_VARIABLE, raising=False)
    registry._reset_for_tests()
    yield
    registry._reset_for_tests()


def write_system(folder, name="extra", **changes):
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "configs" / "task" / name).mkdir(parents=True)
    (folder / "configs" / "task" / name / "fit.yaml").write_text(f"# @package _global_\ntask:\n  name: {name}/fit\n")
    declaration = {"name": name, "description": "an extra system", "build": f"{folder.name}:build", "configs": "configs",
                   **changes}  # fmt: skip
    (folder / "system.json").write_text(json.dumps(declaration))


def test_listing_the_systems_imports_neither_torch_nor_a_system():
    code = ("import sys; from mtpg_aiaa.models.registry import describe_systems; rows = describe_systems(); "
            "print(sorted(r['name'] for r in rows)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'hydra') "
            "or m.startswith('mtpg_aiaa.models.') and m != 'mtpg_aiaa.models.registry'))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    names, imported = result.stdout.splitlines()
    assert names == "['aesnet', 'cgiaa', 'mtpg']" and imported == "[]"


def test_every_declared_system_resolves_and_its_tasks_match_its_configs(fresh_registry):
    for name, spec in registry.systems().items():
        entry = registry.get_model_entry(name)
        assert entry.system is spec and spec.declared_in == ROOT / "mtpg_aiaa" / "models" / name / "system.json"
        assert all(callable(f) for f in (entry.build, entry.load, entry.recognizes)), name
        assert spec.task_names(), f"{name} declares no task config"
        for task in spec.task_names():  # each task file names a builder that exists
            assert callable(task_registry.get_task_builder(task))
    from mtpg_aiaa.models.mtpg.model import MTPGAIAA

    declared = registry.systems()["mtpg"]
    assert ScoreRange(**declared.score_range) == MTPGAIAA.score_range
    assert tuple(declared.text_names) == MTPGAIAA.text_names
    from mtpg_aiaa.models.cgiaa.scorer import CGIAAScorerConfig

    assert registry.systems()["cgiaa"].text_names == tuple(CGIAAScorerConfig().attributes)


def test_a_system_named_by_the_setting_is_registered_with_its_configs(tmp_path, monkeypatch, fresh_registry):
    write_system(tmp_path / "extra_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.SYSTEMS_VARIABLE, "extra_pkg")
    registry._reset_for_tests()
    described = {row["name"]: row for row in registry.describe_systems()}
    assert described["extra"]["tasks"] == ["extra/fit"] and described["extra"]["origin"].startswith("MTPG_AIAA_SYSTEMS")
    assert "extra_pkg" not in sys.modules  # declared, not imported
    assert registry.config_search_path() == [f"file://{tmp_path / 'extra_pkg' / 'configs'}"]
    assert "extra/fit" in task_registry.list_tasks()

    class Recorder:
        def __init__(self):
            self.paths = []

        def append(self, provider, path):
            self.paths.append((provider, path))

    recorder = Recorder()
    SystemConfigsSearchPath().manipulate_search_path(recorder)
    assert recorder.paths == [("mtpg-aiaa systems", f"file://{tmp_path / 'extra_pkg' / 'configs'}")]
    # as train.py composes: the outside task config is found on the search path, and listed in --help
    from hydra import compose, initialize_config_dir

    from mtpg_aiaa.engine.run_names import register_resolvers
    from mtpg_aiaa.engine.system_configs import config_options

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        assert compose("train", overrides=["task=extra/fit"]).task.name == "extra/fit"
    assert "extra/fit" in config_options("task").split(" | ") and "mtpg/finetune" in config_options("task")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "mtpg"}, "declared twice"),
        ({"build": "no_colon"}, "not a 'module:attr' reference"),
        ({"surprise": 1}, "unknown key"),
        ({"configs": "missing"}, "does not exist"),
        ({"name": "Bad-Name"}, "lower-case identifier"),
    ],
)
def test_a_bad_declaration_is_one_line_naming_its_file(tmp_path, monkeypatch, fresh_registry, change, message):
    write_system(tmp_path / "bad_pkg", **change)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.SYSTEMS_VARIABLE, "bad_pkg")
    registry._reset_for_tests()
    with pytest.raises(registry.SystemDeclarationError, match=message) as error:
        registry.list_models()
    assert "\n" not in str(error.value) and str(tmp_path / "bad_pkg") in str(error.value)


def test_a_reference_to_nothing_is_one_line_naming_the_declaration(tmp_path, monkeypatch, fresh_registry):
    write_system(tmp_path / "typo_pkg", build="typo_pkg:biuld", load="typo_pkg.missing:load")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.SYSTEMS_VARIABLE, "typo_pkg")
    registry._reset_for_tests()
    entry = registry.get_model_entry("extra")  # declared: listing imports nothing
    with pytest.raises(registry.SystemDeclarationError, match=r"system.json: 'typo_pkg:biuld': typo_pkg has no 'biuld'"):
        entry.build
    with pytest.raises(registry.SystemDeclarationError, match=r"no module 'typo_pkg.missing'"):
        entry.load


def test_a_setting_naming_no_package_says_so(monkeypatch, fresh_registry):
    monkeypatch.setenv(registry.SYSTEMS_VARIABLE, "no_such_package_here")
    registry._reset_for_tests()
    with pytest.raises(registry.SystemDeclarationError, match="no package 'no_such_package_here'"):
        registry.list_models()


def test_a_weights_file_never_adds_a_system(tmp_path, fresh_registry):
    """A file whose metadata names an undeclared system is refused, whatever else it says."""
    from safetensors.torch import save_file

    from mtpg_aiaa.backbone.convert import CheckpointError
    from mtpg_aiaa.models.loading import load_model

    path = tmp_path / "evil.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "mtpg-aiaa", "system": "evil",
                                                         "config": "{}", "build": "os:system"})  # fmt: skip
    with pytest.raises(CheckpointError, match="'evil' model, which is not registered"):
        load_model(path)
    assert "evil" not in registry.list_models()


def test_an_unknown_task_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown task 'mtpg/nothing'.*mtpg/finetune"):
        task_registry.get_task_builder("mtpg/nothing")


@pytest.mark.parametrize("command", ["train", "test"])
def test_help_is_the_commands_own_page(command):
    """``train.py --help`` / ``test.py --help`` render configs/hydra/help/<command>.yaml:
    a description, examples, and (train) every registered system's tasks, not Hydra's page."""
    from hydra import compose, initialize_config_dir

    from mtpg_aiaa.engine.run_names import register_resolvers

    register_resolvers()  # as the commands do at import
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(command, return_hydra_config=True)
    page = cfg.hydra.help.template
    assert cfg.hydra.help.app_name == f"{command}.py" and "powered by Hydra" not in page
    assert f"python {command}.py ckpt=" in page if command == "test" else "python train.py experiment=quickstart" in page
    tasks = task_registry.list_tasks()
    if command == "train":
        assert all(task in page for task in tasks) and "stage       finetune | pretrain" in page
    else:
        assert not any(task in page for task in tasks) and "stage" not in page  # groups test.py never reads
