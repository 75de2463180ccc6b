"""Fuzz every weights loader with seeded hostile files, in this (sub)process only.

    python tests/fuzz_weights.py FOLDER --seconds 60 --seed 0

Valid tiny files of every kind (each system's safetensors, a CG-IAA expert, an AesNet
pretraining model, a training checkpoint, a TorchScript-shaped archive, a legacy pickle)
are mutated by ``hostile_weights.hostile_files`` and handed to every loader. Each call must
load or raise an ``InputError`` of one line. The address space is capped
(``resource.setrlimit``) so an unbounded allocation fails as ``MemoryError`` here, never in
the caller; an audit hook records any file written or opened outside ``FOLDER`` (a bait
file outside it is named in the hostile metadata) and any socket. Prints a JSON report as
its last line; exit 1 on the first violation (the file is kept in ``FOLDER/failed``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

HEADROOM = 3 << 30  # bytes of address space beyond what the imports took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = args.folder.resolve()
    (folder / "seeds").mkdir(parents=True, exist_ok=True)
    bait = folder.parent / "outside" / "bait.pt"  # outside the folder: opening it is a violation
    bait.parent.mkdir(exist_ok=True)
    seeds = write_seeds(folder / "seeds", bait)
    loaders = every_loader()
    from mtpg_aiaa.errors import InputError
    from hostile_weights import hostile_files

    violations: list[str] = []
    install_audit_hook(folder, bait, violations)
    cap_memory()
    rng = random.Random(args.seed)
    report = {"files": 0, "calls": 0, "loaded": 0, "refused": 0, "seed": args.seed}
    deadline = time.monotonic() + args.seconds
    round_index = 0
    while time.monotonic() < deadline:
        work = folder / f"round{round_index % 2}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        for path in hostile_files(work, rng, seeds, bait):
            report["files"] += 1
            for name, loader in loaders.items():
                report["calls"] += 1
                try:
                    loader(path)
                    report["loaded"] += 1
                except InputError as error:
                    report["refused"] += 1
                    if "\n" in str(error):
                        return fail(folder, path, name, f"a multi-line error: {error}", report)
                except MemoryError:
                    return fail(folder, path, name, "MemoryError: an allocation the file's size did not bound", report)
                except Exception:  # noqa: BLE001 - any other exception is the finding this tool reports
                    return fail(folder, path, name, traceback.format_exc(), report)
                if violations:
                    return fail(folder, path, name, "; ".join(violations), report)
        round_index += 1
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(report))
    return 0


def fail(folder: Path, path: Path, loader: str, why: str, report: dict) -> int:
    kept = folder / "failed"
    kept.mkdir(exist_ok=True)
    shutil.copy(path, kept / path.name)
    print(f"{loader}({path.name}) broke the contract: {why}", file=sys.stderr)
    print(json.dumps({**report, "failed": str(kept / path.name), "loader": loader}))
    return 1


def cap_memory() -> None:
    """Cap the address space at what the process maps now plus ``HEADROOM``."""
    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limit = mapped + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def install_audit_hook(folder: Path, bait: Path, violations: list[str]) -> None:
    inside = str(folder) + os.sep
    allowed_writes = ("/dev/null", "/proc/")

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            mode, flags = args[1] or "", args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if writing and not path.startswith(inside) and not path.startswith(allowed_writes):
                violations.append(f"wrote {path}")
            if path.startswith(str(bait.parent)):
                violations.append(f"opened {path}, a path named inside a weights file")
        elif event in ("socket.connect", "socket.getaddrinfo", "urllib.Request"):
            violations.append(f"network: {event} {args!r:.80}")

    sys.addaudithook(hook)


def write_seeds(folder: Path, bait: Path) -> dict[str, Path]:
    """One valid tiny file of each kind the loaders read."""
    from hostile_weights import chain_archive

    from mtpg_aiaa.backbone.longclip import LongCLIP, LongCLIPArch
    from mtpg_aiaa.models.aesnet import AesNetConfig, AesNetPretrainModel, build_scorer
    from mtpg_aiaa.models.cgiaa import CritiqueExpert, GPT2Sizes, MapperConfig
    from mtpg_aiaa.models.cgiaa.scorer import build_cgiaa_scorer
    from mtpg_aiaa.models.checkpoints import model_record
    from mtpg_aiaa.models.mtpg import build_mtpg_model

    torch.manual_seed(0)
    arch = LongCLIPArch(embed_dim=16, image_size=32, patch_size=16, vision_width=64, vision_layers=1,
                        text_width=64, text_layers=1, context_length=77, vocab_size=64)  # fmt: skip
    cgiaa = build_cgiaa_scorer(clip=arch.to_dict(), bins=4)
    expert = CritiqueExpert(GPT2Sizes(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_inner=64),
                            MapperConfig(clip_dim=16, embed_dim=32, clip_length=2, prefix_length=2, num_layers=1, mlp_dim=64))  # fmt: skip
    seeds = {
        "mtpg.safetensors": build_mtpg_model(backbone="LongCLIP-tiny", fusion="token").save(folder / "mtpg.safetensors"),
        "cgiaa.safetensors": cgiaa.save(folder / "cgiaa.safetensors"),
        "expert.safetensors": expert.save(folder / "expert.safetensors"),
        "aesnet.safetensors": build_scorer(encoder="timm:test_resnet", image_size=32).save(folder / "aesnet.safetensors"),
        "pretrain.safetensors": AesNetPretrainModel(
            AesNetConfig(encoder="timm:test_resnet", image_size=32, attributes=("a", "b"), embed_dim=8, hidden_dim=8),
            torch.randn(2, 8)).save(folder / "pretrain.safetensors"),
    }  # fmt: skip
    torch.save({"model": cgiaa.state_dict(), "optimizer": {}, "scheduler": {}, "step": 2, "epoch": 0, "batch_in_epoch": 0,
                "config": {}, **model_record(cgiaa)}, folder / "last.pt")  # fmt: skip
    torch.save(LongCLIP(arch).state_dict(), folder / "clip.pt")
    torch.save(LongCLIP(arch).state_dict(), folder / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(LongCLIP(arch).state_dict(), bait)  # a valid file, outside: what hostile metadata points at
    seeds.update({name: folder / name for name in ("last.pt", "clip.pt", "legacy.pt")})
    seeds["script.pt"] = chain_archive(folder / "script.pt", depth=3)
    return seeds


def every_loader() -> dict:
    from mtpg_aiaa.backbone.clip import load_clip
    from mtpg_aiaa.backbone.convert import load_longclip, read_state_dict
    from mtpg_aiaa.engine.checkpointing import load_training_state
    from mtpg_aiaa.fileio import file_kind
    from mtpg_aiaa.models.base import read_metadata
    from mtpg_aiaa.models.cgiaa import load_expert
    from mtpg_aiaa.models.checkpoints import read_init_state
    from mtpg_aiaa.models.loading import identify, load_model

    def metadata_of_safetensors(path):
        return read_metadata(path) if file_kind(path) == "safetensors" else None

    return {"load_model": load_model, "identify": identify, "read_state_dict": read_state_dict,
            "read_metadata": metadata_of_safetensors, "load_expert": load_expert,
            "load_training_state": load_training_state, "read_init_state": read_init_state,
            "load_longclip": load_longclip, "load_clip": load_clip}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
