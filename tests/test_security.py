"""Files a user is handed never run code, never pick the memory, and never reach outside image_root."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Tuple

import pytest
import torch
from hydra import compose, initialize_config_dir

from mtpg_aiaa.backbone.convert import CheckpointError, load_longclip, read_state_dict
from mtpg_aiaa.backbone.longclip import KEPT_POSITIONS, LongCLIP, LongCLIPArch
from mtpg_aiaa.data import BadInputError, read_score_table
from mtpg_aiaa.models.mtpg import checkpoint as mtpg_checkpoint
from mtpg_aiaa.models.mtpg.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path):
    """A top-level script as a module, by path (``test.py`` would shadow Python's ``test``)."""
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    make_smoke_data = load_script(ROOT / "scripts" / "make_smoke_data.py")
    return make_smoke_data.write_smoke_data(tmp_path_factory.mktemp("smoke"), num_images=3, seed=4)


# -- TorchScript archives ------------------------------------------------------------------
class MarkerOnLoad(torch.nn.Module):
    """A module whose TorchScript ``__setstate__`` creates (and fills) a file: loading it
    with ``torch.jit.load`` runs that code."""

    def __init__(self, marker: str):
        super().__init__()
        self.register_buffer("weight", torch.ones(2))
        self.marker = marker

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:
        return (self.weight, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:
        written = torch.from_file(state[1], shared=True, size=8, dtype=torch.uint8)  # creates the file
        written.fill_(1)
        self.weight = state[0] + written.sum().float() * 0
        self.marker = state[1]
        self.training = state[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    """``(archive, marker)``: a TorchScript file that writes ``marker`` when loaded."""
    folder = tmp_path_factory.mktemp("planted")
    marker = folder / "MARKER"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.* is deprecated; OpenAI's files are not
        torch.jit.save(torch.jit.script(MarkerOnLoad(str(marker))), str(folder / "model_save.pt"))
    assert not marker.exists()
    return folder / "model_save.pt", marker


def test_planted_torchscript_runs_no_code_on_any_entry_point(planted, smoke, tmp_path, capsys):
    from mtpg_aiaa.engine.builders import build_training_model, read_init_state

    archive, marker = planted
    with pytest.raises(CheckpointError, match="model_save.pt"):
        read_state_dict(archive)
    with pytest.raises(CheckpointError, match="model_save.pt"):
        load_model(archive)
    with pytest.raises(CheckpointError, match="model_save.pt"):
        load_longclip(archive)
    with pytest.raises(CheckpointError, match="model_save.pt"):
        read_init_state(archive)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        train_cfg = compose("train", overrides=["model=tiny", f"model.backbone_weights={archive}"])
        test_cfg = compose("test", overrides=[
            f"ckpt={archive}", f"data.csv={smoke['csv']}", f"data.image_root={smoke['image_root']}",
            "eval.num_workers=0", "eval.progress=false",
        ])  # fmt: skip
    with pytest.raises(CheckpointError, match="model_save.pt"):
        build_training_model(train_cfg.model)
    with pytest.raises(CheckpointError, match="model_save.pt"):
        load_script(ROOT / "test.py").evaluate(test_cfg, tmp_path / "out")
    image = next(Path(smoke["image_root"]).iterdir())
    assert load_script(ROOT / "demo.py").main([str(image), "--ckpt", str(archive), "--desc1", "x"]) == 2
    assert "model_save.pt" in capsys.readouterr().err
    assert not marker.exists()

    # The control: the file is live, torch.jit.load does run its code.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(archive))
    assert marker.exists()


@pytest.mark.slow  # a fresh interpreter: ~10 s of imports on a shared CPU
def test_test_py_command_refuses_the_planted_file_in_one_line(planted, smoke, tmp_path):
    archive, marker = planted
    marker.unlink(missing_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, "test.py", f"ckpt={archive}", f"data.csv={smoke['csv']}",
         f"data.image_root={smoke['image_root']}", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model_save.pt" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    assert not marker.exists()


def tiny_clip() -> LongCLIP:
    """A CLIP-shaped model with OpenAI's 77 text positions, small enough to trace in a moment."""
    torch.manual_seed(0)
    arch = LongCLIPArch(embed_dim=16, image_size=32, patch_size=16, vision_width=64, vision_layers=2,
                        text_width=64, text_layers=2, context_length=77, vocab_size=100)  # fmt: skip
    return LongCLIP(arch).eval()


def test_a_traced_clip_archive_is_read_as_data_equal_to_its_weights(tmp_path):
    model = tiny_clip()
    path = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.randn(1, 3, 32, 32), torch.randint(0, 100, (1, 77))), check_trace=False)
        torch.jit.save(traced, str(path))
        reference = torch.jit.load(str(path)).state_dict()  # our own file: safe to run here
    state = read_state_dict(path)
    assert set(state) == set(reference) and set(model.state_dict()) <= set(state)
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key
    for key, value in reference.items():
        assert torch.equal(state[key], value), key

    loaded = load_longclip(path)  # 77 positions stretched to 248, the rest exact
    assert loaded.arch.context_length == 248 and loaded.arch.vision_layers == 2
    assert torch.equal(loaded.positional_embedding[:KEPT_POSITIONS], model.positional_embedding[:KEPT_POSITIONS])
    assert torch.equal(loaded.visual.conv1.weight, model.visual.conv1.weight)


def test_an_archive_pickling_a_callable_is_refused(tmp_path):
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "crafted.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("crafted/data.pkl", pickle.dumps(Payload(), protocol=2))
        archive.writestr("crafted/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("crafted/version", "3\n")
    with pytest.raises(CheckpointError, match=r"crafted\.pt.*refusing the global (posix|nt)\.system"):
        read_state_dict(path)
    assert not marker.exists()


# -- .safetensors metadata -----------------------------------------------------------------
def test_safetensors_metadata_cannot_choose_the_model_size(smoke, tmp_path, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(smoke["ckpt"]), framework="pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["config"])
    config["backbone"]["vocab_size"] = 50_000_000  # 50M x width floats if built as declared
    bomb = tmp_path / "bomb.safetensors"
    save_file(load_file(str(smoke["ckpt"])), str(bomb), metadata={**metadata, "config": json.dumps(config)})

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before the shapes were checked")

    monkeypatch.setattr(mtpg_checkpoint, "build_mtpg", no_build)
    with pytest.raises(CheckpointError, match=r"bomb\.safetensors.*vocab_size=50000000 \(its tensors: 49408\)"):
        load_model(bomb)

    raw = Path(smoke["ckpt"]).read_bytes()
    corrupted = tmp_path / "corrupted.safetensors"
    corrupted.write_bytes(raw[:8] + b"{not json" + raw[17:])
    with pytest.raises(CheckpointError, match=r"corrupted\.safetensors is not a readable safetensors file"):
        load_model(corrupted)


# -- image paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("image", ["../secret.jpg", "/etc/passwd", "a/../../x.jpg", "C:\\\\x.jpg", "..\\\\x.jpg"])
def test_image_paths_leaving_image_root_are_refused_naming_the_row(tmp_path, image):
    csv = tmp_path / "labels.csv"
    csv.write_text(f'image,score\nfine.jpg,5\n"{image}",6\n', encoding="utf-8")
    with pytest.raises(BadInputError, match=r"labels\.csv, line 3.*outside the image root.*allow_paths_outside_root"):
        read_score_table(csv)
    table = read_score_table(csv, allow_paths_outside_root=True)
    assert table["image"].tolist() == ["fine.jpg", image]


def test_paths_that_stay_inside_image_root_are_read(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("image,score\nsub/../a.jpg,5\n./b.jpg,6\n~c.jpg,7\n", encoding="utf-8")
    assert read_score_table(csv)["image"].tolist() == ["sub/../a.jpg", "./b.jpg", "~c.jpg"]
