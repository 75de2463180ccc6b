"""Hostile and broken weight files (issue 21, items 1-6 and 9): one reproducer each, small
on disk whatever the file declares, each refused in one line (``CheckpointError``) before
anything large is allocated; and the fuzz test, which runs the seeded generator of
``hostile_weights.py`` against every loader in one memory-capped subprocess.

The reproducers use entry points that existed before the fix (``load_model``,
``read_state_dict``, ``read_torchscript_state_dict``, ``file_kind``), so they run against
an older tree too (the branch report tabulates which broke on main before the fix).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hostile_weights import (
    chain_archive,
    deflated_zero_checkpoint,
    rewrite_zip,
    self_containing_archive,
    shared_archive,
    tensor_header,
    write_safetensors_raw,
)
from helpers import ROOT
from mtpg_aiaa.backbone.convert import CheckpointError, read_state_dict
from mtpg_aiaa.backbone.longclip import LongCLIP, LongCLIPArch
from mtpg_aiaa.fileio import file_kind
from mtpg_aiaa.models.base import read_metadata, scorer_metadata
from mtpg_aiaa.models.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
CLIP_ARCH = LongCLIPArch(embed_dim=16, image_size=32, patch_size=16, vision_width=64, vision_layers=1,
                         text_width=64, text_layers=1, context_length=77, vocab_size=64)  # fmt: skip


def one_line_refusal(call, match: str = "") -> str:
    """``call()`` raises a one-line ``CheckpointError`` (matching ``match``); its message."""
    with pytest.raises(CheckpointError, match=match) as info:
        call()
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


def cgiaa_scorer(**config):
    from mtpg_aiaa.models.cgiaa.scorer import build_cgiaa_scorer

    torch.manual_seed(0)
    return build_cgiaa_scorer(clip=CLIP_ARCH.to_dict(), **config)


def with_metadata(source: Path, target: Path, **changes) -> Path:
    """``source`` (safetensors) re-saved with metadata entries replaced (``config`` keys too)."""
    from safetensors.torch import load_file

    metadata = read_metadata(source)
    config = json.loads(metadata["config"])
    config.update(changes.pop("config", {}))
    metadata = {**metadata, "config": json.dumps(config), **changes}
    save_file(load_file(str(source)), str(target), metadata=metadata)
    if target.read_bytes()[0] == 0x80:  # keep item 1 (a header length starting with 0x80) out of these cases
        save_file(load_file(str(source)), str(target), metadata={**metadata, "pad": "x" * 8})
    return target


# -- 1: a safetensors file whose header length starts with 0x80 --------------------------
def test_1_safetensors_whose_header_length_starts_like_a_pickle_loads(tmp_path):
    scorer = cgiaa_scorer()
    state = {k: v.contiguous() for k, v in scorer.state_dict().items()}
    for pad in range(300):  # metadata of the right length, as a training-data record makes by chance
        metadata = {**scorer_metadata(scorer), "note": "x" * pad}
        save_file(state, str(tmp_path / "best.safetensors"), metadata=metadata)
        if (tmp_path / "best.safetensors").read_bytes()[0] == 0x80:
            break
    assert (tmp_path / "best.safetensors").read_bytes()[0] == 0x80
    assert file_kind(tmp_path / "best.safetensors") == "safetensors"
    assert load_model(tmp_path / "best.safetensors").system == "cgiaa"


# -- 2: a view larger than its storage -----------------------------------------------------
def test_2_zero_stride_view_is_refused_before_isnan(tmp_path):
    # 9 M elements from a 4-byte storage: small enough here; at 10^5 x 10^5 it was 10 GB
    torch.save({"weight": torch.zeros(1).expand(3000, 3000)}, tmp_path / "expanded.pt")
    one_line_refusal(lambda: read_state_dict(tmp_path / "expanded.pt"), "larger than its")
    one_line_refusal(lambda: load_model(tmp_path / "expanded.pt"), "larger than its")


# -- 3: TorchScript graphs -----------------------------------------------------------------
def test_3_self_containing_torchscript_module_is_read_once(tmp_path):
    state = read_state_dict(self_containing_archive(tmp_path / "loop.pt"))
    assert list(state) == ["weight"]


def test_3_shared_submodules_are_walked_once(tmp_path):
    # 2**16 paths to the bottom module before: each module is now read once
    state = read_state_dict(shared_archive(tmp_path / "shared.pt", depth=16))
    assert len(state) == 1


def test_3_a_5000_deep_chain_is_one_line(tmp_path):
    one_line_refusal(lambda: read_state_dict(chain_archive(tmp_path / "chain.pt", depth=5000)), "levels deep")


# -- 4: a weight file names data, never places ---------------------------------------------
@pytest.mark.parametrize("encoder", ["timm:hf-hub:someone/model", "open_clip:hf-hub:someone/model",
                                     "timm:local-dir:/tmp", "timm:../../model"])  # fmt: skip
def test_4_aesnet_encoder_from_a_file_may_not_name_a_hub_or_folder(tmp_path, encoder, monkeypatch):
    import open_clip
    import timm

    from mtpg_aiaa.models.aesnet import build_scorer

    path = build_scorer(encoder="timm:test_resnet", image_size=32).save(tmp_path / "a.safetensors")
    hostile = with_metadata(path, tmp_path / "hostile.safetensors", config={"encoder": encoder})
    asked = []

    def offline(name, *args, **kwargs):  # a download would start here
        asked.append(name)
        raise OSError(f"no network for {name}")

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(open_clip, "create_model", offline)
    one_line_refusal(lambda: load_model(hostile), "hub, a folder or a path")
    assert asked == []  # refused before timm / open_clip saw the name


def test_4_cgiaa_clip_weights_from_a_file_are_not_opened(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    torch.manual_seed(1)
    torch.save(LongCLIP(CLIP_ARCH).state_dict(), elsewhere / "clip.pt")  # a real CLIP file it would load
    path = cgiaa_scorer().save(tmp_path / "s.safetensors")
    hostile = with_metadata(path, tmp_path / "hostile.safetensors", config={"clip_weights": str(elsewhere / "clip.pt")})
    one_line_refusal(lambda: load_model(hostile), "clip_weights")


def test_4_a_last_pt_run_config_names_no_file_to_open(tmp_path):
    scorer = cgiaa_scorer()
    elsewhere = tmp_path / "clip.pt"
    torch.save(LongCLIP(CLIP_ARCH).state_dict(), elsewhere)
    run_config = {"task": {"build_model": "x", "model": {"_target_": "mtpg_aiaa.models.cgiaa.scorer.build_cgiaa_scorer",
                                                         "clip": "LongCLIP-B-16", "clip_weights": str(elsewhere)}}}  # fmt: skip
    state = {"model": scorer.state_dict(), "optimizer": {}, "scheduler": {}, "step": 2, "epoch": 0,
             "batch_in_epoch": 0, "config": run_config}  # fmt: skip
    torch.save(state, tmp_path / "legacy.pt")  # no model record: nothing is rebuilt from the run config
    one_line_refusal(lambda: load_model(tmp_path / "legacy.pt"), "model record")
    recorded = {**state, "system": "cgiaa", "model_kind": "scorer",
                "model_config": {**scorer.config_dict(), "clip_weights": str(elsewhere)}}  # fmt: skip
    torch.save(recorded, tmp_path / "recorded.pt")
    one_line_refusal(lambda: load_model(tmp_path / "recorded.pt"), "clip_weights")


# -- 5: metadata does not size allocations -------------------------------------------------
def _built_on(monkeypatch, cls) -> list[str]:
    """The default device each ``cls`` was constructed under (``meta`` costs no memory)."""
    devices, original = [], cls.__init__

    def spy(self, *args, **kwargs):
        devices.append(str(torch.empty(0).device))
        original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", spy)
    return devices


@pytest.mark.parametrize("changes", [{"bins": 200_000}, {"clip": {**CLIP_ARCH.to_dict(), "vocab_size": 400_000}}])
def test_5_cgiaa_config_sizes_are_checked_against_the_tensors_first(tmp_path, monkeypatch, changes):
    from mtpg_aiaa.models.cgiaa.scorer import CGIAAScorer

    path = cgiaa_scorer().save(tmp_path / "s.safetensors")
    hostile = with_metadata(path, tmp_path / "hostile.safetensors", config=changes)
    devices = _built_on(monkeypatch, CGIAAScorer)
    one_line_refusal(lambda: load_model(hostile))
    assert "cpu" not in devices  # never built for real: refused on the meta device or before


@pytest.mark.parametrize("changes", [{"unknown": 1}, {"bins": "ten"}, {"attributes": 5}, {"dropout": [0.1]}])
def test_5_unknown_keys_and_wrong_types_are_one_line(tmp_path, changes):
    path = cgiaa_scorer().save(tmp_path / "s.safetensors")
    hostile = with_metadata(path, tmp_path / "hostile.safetensors", config=changes)
    one_line_refusal(lambda: load_model(hostile))


def test_5_aesnet_and_training_checkpoint_configs_are_checked(tmp_path, monkeypatch):
    from mtpg_aiaa.models.aesnet import AesNetScorer, build_scorer

    path = build_scorer(encoder="timm:test_resnet", image_size=32, head="distribution").save(tmp_path / "a.safetensors")
    devices = _built_on(monkeypatch, AesNetScorer)
    one_line_refusal(lambda: load_model(with_metadata(path, tmp_path / "bins.safetensors", config={"bins": 3 * 10**8})))
    one_line_refusal(lambda: load_model(with_metadata(path, tmp_path / "typo.safetensors", config={"haed": "x"})))
    assert "cpu" not in devices
    scorer = cgiaa_scorer()
    state = {"model": scorer.state_dict(), "optimizer": {}, "scheduler": {}, "step": 2, "epoch": 0, "batch_in_epoch": 0,
             "config": {}, "system": "cgiaa", "model_kind": "scorer", "model_config": {**scorer.config_dict(), "bins": 10**8}}  # fmt: skip
    torch.save(state, tmp_path / "last.pt")
    one_line_refusal(lambda: load_model(tmp_path / "last.pt"))


def test_5_legacy_pickle_storage_sizes_are_checked_against_the_file(tmp_path):
    torch.save({"weight": torch.ones(4)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    data = bytearray((tmp_path / "legacy.pt").read_bytes())
    count = data.rfind((4).to_bytes(8, "little"))  # the storage record's element count, before its 16 bytes
    data[count : count + 8] = (2**40).to_bytes(8, "little")
    (tmp_path / "huge.pt").write_bytes(bytes(data))
    one_line_refusal(lambda: read_state_dict(tmp_path / "huge.pt"))
    assert read_state_dict(tmp_path / "legacy.pt")["weight"].tolist() == [1.0] * 4  # legacy files still load


# -- 6: zip bombs --------------------------------------------------------------------------
def test_6_deflated_torch_entries_are_refused(tmp_path):
    path = deflated_zero_checkpoint(tmp_path / "bomb.pt")
    assert path.stat().st_size < 50_000  # 4 MB of zeros inside
    one_line_refusal(lambda: read_state_dict(path), "compressed")
    one_line_refusal(lambda: load_model(path), "compressed")


def test_6_deflated_torchscript_data_is_refused(tmp_path):
    archive = self_containing_archive(tmp_path / "plain.pt")
    bomb = rewrite_zip(archive, tmp_path / "bomb.pt", compress=True)
    one_line_refusal(lambda: read_state_dict(bomb), "compressed")


def test_6_declared_sizes_beyond_the_file_are_refused(tmp_path):
    torch.save({"weight": torch.ones(64)}, tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2] + data[-200:])  # entries cut, directory kept
    one_line_refusal(lambda: read_state_dict(tmp_path / "cut.pt"))


# -- 9: corrupt safetensors ----------------------------------------------------------------
def _corrupt_files(folder: Path) -> dict[str, Path]:
    body = bytes(32)
    return {
        "truncated": write_safetensors_raw(folder / "truncated.safetensors",
                                           tensor_header({"w": ("F32", [8], 0, 32)}), body[:12]),
        "bad offsets": write_safetensors_raw(folder / "offsets.safetensors",
                                             tensor_header({"w": ("F32", [8], 16, 48)}), body),
        "overlap": write_safetensors_raw(folder / "overlap.safetensors",
                                         tensor_header({"a": ("F32", [4], 0, 16), "b": ("F32", [4], 8, 24)}), body),
        "shape overflow": write_safetensors_raw(folder / "overflow.safetensors",
                                                tensor_header({"w": ("F32", [2**62, 2**62, 4], 0, 32)}), body),
        "header past the end": folder / "header.safetensors",
    }  # fmt: skip


@pytest.mark.parametrize("case", ["truncated", "bad offsets", "overlap", "shape overflow", "header past the end"])
def test_9_corrupt_safetensors_are_one_line(tmp_path, case):
    files = _corrupt_files(tmp_path)
    (tmp_path / "header.safetensors").write_bytes((10**6).to_bytes(8, "little") + b'{"w": {}}' + bytes(8))
    path = files[case]
    for reader in (load_model, read_state_dict, read_metadata):
        one_line_refusal(lambda: reader(path))


def test_9_an_unreadable_weights_file_is_one_line(tmp_path, monkeypatch):
    path = cgiaa_scorer().save(tmp_path / "s.safetensors")
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    one_line_refusal(lambda: load_model(path), "Permission denied")


def test_input_errors_share_one_base_class():
    from mtpg_aiaa.data.errors import BadInputError
    from mtpg_aiaa.errors import InputError, SettingError

    assert all(issubclass(cls, InputError) for cls in (CheckpointError, BadInputError, SettingError))


def test_the_budget_setting_raises_the_limit(tmp_path, monkeypatch):
    from mtpg_aiaa.backbone.weights_file import BUDGET_SETTING, allocation_budget

    (tmp_path / "w.bin").write_bytes(bytes(1000))
    assert allocation_budget(tmp_path / "w.bin") == 2000 + (64 << 20)
    monkeypatch.setenv(BUDGET_SETTING, str(10**12))
    assert allocation_budget(tmp_path / "w.bin") == 10**12
    monkeypatch.setenv(BUDGET_SETTING, "lots")
    one_line_refusal(lambda: allocation_budget(tmp_path / "w.bin"), BUDGET_SETTING)


# -- the fuzz test -------------------------------------------------------------------------
def test_fuzz_every_loader_in_a_memory_capped_subprocess(tmp_path):
    """``fuzz_weights.py`` for ``MTPG_AIAA_FUZZ_SECONDS`` (60 unless set): every loader on
    seeded hostile files; each call loads or raises a one-line input error, memory stays
    under the cap, nothing outside the folder is written or opened, no socket is opened."""
    seconds = os.environ.get("MTPG_AIAA_FUZZ_SECONDS", "60")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path / "home")}  # fmt: skip
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_weights.py"), str(tmp_path / "work"),
                             "--seconds", seconds, "--seed", "0"], env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["files"] > 0 and report["calls"] > report["files"] and report["loaded"] + report["refused"] == report["calls"]
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*"))


# -- found by the fuzz test ----------------------------------------------------------------
def test_fuzz_found_an_unknown_zip_version_is_one_line(tmp_path):
    torch.save({"weight": torch.ones(4)}, tmp_path / "w.pt")
    data = bytearray((tmp_path / "w.pt").read_bytes())
    central = data.find(b"PK\x01\x02")
    data[central + 6 : central + 8] = (120).to_bytes(2, "little")  # "version needed to extract": 12.0
    (tmp_path / "v12.pt").write_bytes(bytes(data))
    for reader in (load_model, read_state_dict):
        one_line_refusal(lambda: reader(tmp_path / "v12.pt"))


def test_fuzz_found_a_negative_size_in_a_config_is_one_line(tmp_path):
    path = cgiaa_scorer().save(tmp_path / "s.safetensors")
    one_line_refusal(lambda: load_model(with_metadata(path, tmp_path / "neg.safetensors", config={"bins": -5})), "bins=-5")


def test_fuzz_found_a_key_mismatch_is_one_line(tmp_path):
    from mtpg_aiaa.backbone.convert import load_longclip

    state = LongCLIP(CLIP_ARCH).state_dict()
    state["ln_1.bias"] = state.pop("transformer.resblocks.0.ln_1.bias")
    torch.save(state, tmp_path / "clip.pt")
    message = one_line_refusal(lambda: load_longclip(tmp_path / "clip.pt"), "does not match the model")
    assert "missing: transformer.resblocks.0.ln_1.bias; unexpected: ln_1.bias" in message
