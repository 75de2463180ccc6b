"""Checking that a model directory holds what loading it needs, naming every missing file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mtpg_aiaa.data.errors import BadInputError


class MissingFilesError(BadInputError):
    """One or more required files are absent; ``missing`` lists them (paths as given)."""

    def __init__(self, what: str, missing: list[str]):
        self.missing = list(missing)
        lines = "\n".join(f"  - {item}" for item in self.missing)
        super().__init__(f"{what}: {len(self.missing)} required file(s) missing:\n{lines}")


@dataclass(frozen=True)
class Requirement:
    """Any one of ``names`` must exist in the directory; ``why`` is said when none does."""

    names: tuple[str, ...]
    why: str

    def describe(self, directory: Path) -> str:
        choices = " or ".join(str(directory / name) for name in self.names)
        return f"{choices} ({self.why})"

    def find(self, directory: Path) -> Path | None:
        for name in self.names:
            if any(char in name for char in "*?["):
                matches = sorted(directory.glob(name))
                if matches:
                    return matches[0]
            elif (directory / name).is_file():
                return directory / name
        return None


def missing_requirements(directory: str | os.PathLike, requirements: list[Requirement]) -> list[str]:
    """Descriptions of the requirements not met in ``directory`` (all of them if it is absent)."""
    directory = Path(directory)
    if not directory.is_dir():
        reason = "is a file, not a directory" if directory.exists() else "does not exist"
        return [f"{directory} ({reason})"]
    return [req.describe(directory) for req in requirements if req.find(directory) is None]


MODEL_DIR_REQUIREMENTS = [
    Requirement(("config.json",), "the model configuration"),
    Requirement(("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json"), "the weights"),
    Requirement(("processor_config.json", "preprocessor_config.json"), "the image processor"),
    Requirement(("tokenizer.json", "tokenizer.model", "tokenizer_config.json"), "the tokenizer"),
]


def check_model_dir(path: str | os.PathLike, what: str = "describer model directory") -> Path:
    """Raise :class:`MissingFilesError` naming each file a Hugging Face model dir lacks."""
    missing = missing_requirements(path, MODEL_DIR_REQUIREMENTS)
    if missing:
        raise MissingFilesError(f"{what} {path}", missing)
    return Path(path)
