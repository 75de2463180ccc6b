"""GalleryGPT-style description generation with a tiny random LLaVA on CPU (no download)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from helpers import ROOT, load_script
from mtpg_aiaa.data import (
    AestheticsDataset,
    BadInputError,
    load_rgb_image,
    read_score_table,
)
from mtpg_aiaa.describe import (
    DescriberSettings,
    MissingFilesError,
    Shard,
    describe_items,
    items_from_folder,
    items_from_table,
    load_describer,
    resolve_shard,
    shard_positions,
    summary_path_for,
    vicuna_v1_prompt,
)
from mtpg_aiaa.describe.describer import finish_generation
from mtpg_aiaa.describe.images import pad_to_square
from mtpg_aiaa.describe.store import parts_dir_for
from mtpg_aiaa.describe.tiny import write_tiny_llava
from mtpg_aiaa.backbone.tokenizer import get_tokenizer

describe = load_script("scripts/describe.py").describe
demo = load_script("demo.py")

NUM_IMAGES = 5
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return write_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    """Five small paintings, each of a different size (so a test can tell them apart)."""
    root = tmp_path_factory.mktemp("paintings")
    rng = np.random.default_rng(0)
    names = [f"p{i}.jpg" for i in range(NUM_IMAGES)]
    for i, name in enumerate(names):
        pixels = rng.integers(0, 255, size=(30 + 2 * i, 40 - 3 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name, quality=90)
    csv = root / "labels.csv"
    pd.DataFrame({"image": names, "score": [3.5, 7.25, 5, 9.400612, 4.0]}).to_csv(csv, index=False)
    return {"csv": csv, "image_root": root, "names": names}


@pytest.fixture(scope="module")
def settings(tiny_llava) -> DescriberSettings:
    return DescriberSettings(model_path=str(tiny_llava), max_new_tokens=MAX_NEW_TOKENS, device="cpu")


@pytest.fixture(scope="module")
def describer(settings):
    return load_describer(settings)


class Recorder:
    """Wraps a describer: records the size of every image it is asked about; can crash."""

    def __init__(self, inner, crash_after_batches: int | None = None):
        self.inner, self.crash_after, self.sizes, self.batches = inner, crash_after_batches, [], 0

    def describe(self, images):
        if self.crash_after is not None and self.batches >= self.crash_after:
            raise RuntimeError("simulated crash")
        self.batches += 1
        self.sizes += [image.size for image in images]
        return self.inner.describe(images)


def run(items, settings, output, describer, **kwargs) -> dict:
    return describe_items(items, settings, output, progress=False, make_describer=lambda: describer, **kwargs)


def test_vicuna_v1_prompt_and_chat_template_match_llava(describer):
    prompt = vicuna_v1_prompt("Describe it.")
    assert prompt == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <image>\nDescribe it. ASSISTANT:"
    )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    rendered = describer.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == prompt
    two_turns = [*messages, {"role": "assistant", "content": "Bold."}, {"role": "user", "content": "More?"}]
    rendered = describer.processor.apply_chat_template(two_turns, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("ASSISTANT: Bold.</s>USER: More? ASSISTANT:")


def test_pad_to_square_centres_like_expand2square():
    image = Image.new("RGB", (4, 2), (255, 0, 0))
    square = pad_to_square(image, (1, 2, 3))
    assert square.size == (4, 4)
    assert square.getpixel((0, 0)) == (1, 2, 3) and square.getpixel((0, 3)) == (1, 2, 3)
    assert square.getpixel((0, 1)) == (255, 0, 0) and square.getpixel((3, 2)) == (255, 0, 0)


def test_finish_generation_cuts_at_eos_and_trims_budget_hits():
    words = {1: "Bold strokes.", 2: "Soft light"}
    decode = lambda ids: " ".join(words[i] for i in ids)  # noqa: E731
    done = finish_generation([1, 2, 9, 2], {9}, decode, trim_to_sentence=True)
    assert (done.text, done.new_tokens, done.stop, done.trimmed) == ("Bold strokes. Soft light", 2, "eos", False)
    cut = finish_generation([1, 2], {9}, decode, trim_to_sentence=True)
    assert (cut.text, cut.new_tokens, cut.stop, cut.trimmed) == ("Bold strokes.", 2, "budget", True)
    assert finish_generation([2], {9}, decode, trim_to_sentence=True).text == "Soft light"


def test_describe_command_writes_the_csv_test_py_reads(tiny_llava, dataset, tmp_path):
    overrides = [f"data.csv={dataset['csv']}", f"data.image_root={dataset['image_root']}",
                 f"describer.model_path={tiny_llava}", f"describer.max_new_tokens={MAX_NEW_TOKENS}",
                 f"output={tmp_path / 'out.csv'}", "batch_size=2", "progress=false"]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("describe", overrides=overrides)
    summary = describe(cfg)
    assert summary["merged"] and summary["described"] == NUM_IMAGES and summary["described_this_run"] == NUM_IMAGES
    assert summary["images_per_second"] > 0 and summary["truncated_for_longclip"] == 0
    assert summary["settings"]["template"] == "vicuna_v1" and summary["settings"]["dtype"] == "float32"
    assert json.loads(summary_path_for(tmp_path / "out.csv").read_text())["described"] == NUM_IMAGES

    table = read_score_table(tmp_path / "out.csv")  # image,score,comment as test.py reads it
    assert table["image"].tolist() == dataset["names"]
    assert table["score"].tolist() == [3.5, 7.25, 5.0, 9.400612, 4.0]
    assert table.attrs["has_descriptions"] and all(len(text.split()) >= 5 for text in table["description"])
    assert table["description"].nunique() == NUM_IMAGES  # the images differ, so do their descriptions
    joined = read_score_table(dataset["csv"], descriptions_csv=tmp_path / "out.csv")
    assert joined["description"].tolist() == table["description"].tolist()
    sample = AestheticsDataset(joined, dataset["image_root"], transform=lambda im: torch.zeros(1))[3]
    assert sample["image_name"] == "p3.jpg" and sample["description"] == table["description"][3]


@pytest.mark.parametrize("describer_name", sorted(p.stem for p in (ROOT / "configs/describer").glob("*.yaml")))
def test_describe_config_composes_with_every_describer_and_data_group(describer_name):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("describe", overrides=[f"describer={describer_name}", "describer.model_path=m",
                                             "data=baid", "data.root=/d", "table=train_csv"])  # fmt: skip
    settings = DescriberSettings.from_config(OmegaConf.to_container(cfg.describer, resolve=True))
    assert settings.model_path == "m" and cfg.data[cfg.table] == "/d/train_set.csv"


def test_greedy_output_does_not_depend_on_batching(describer, dataset, settings, tmp_path):
    items = items_from_table(dataset["csv"], dataset["image_root"])
    run(items, settings, tmp_path / "b2.csv", describer, batch_size=2)
    run(items, settings, tmp_path / "b1.csv", describer, batch_size=1)
    assert (tmp_path / "b2.csv").read_bytes() == (tmp_path / "b1.csv").read_bytes()


def test_restart_after_crash_skips_finished_images_and_gives_the_same_csv(describer, dataset, settings, tmp_path):
    items = items_from_table(dataset["csv"], dataset["image_root"])
    run(items, settings, tmp_path / "whole.csv", describer, batch_size=2)

    output = tmp_path / "resumed.csv"
    crashing = Recorder(describer, crash_after_batches=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(items, settings, output, crashing, batch_size=2)
    assert not output.exists()
    part = next(parts_dir_for(output).glob("*.part.jsonl"))
    assert [json.loads(line)["image"] for line in part.read_text().splitlines()] == ["p0.jpg", "p1.jpg"]
    with part.open("a") as handle:  # a batch torn mid-write by the crash
        handle.write('{"image": "p2.jpg", "comment": "half a')

    restarted = Recorder(describer)
    summary = run(items, settings, output, restarted, batch_size=2)
    sizes = [Image.open(dataset["image_root"] / name).size for name in dataset["names"]]
    assert restarted.sizes == sizes[2:]  # only the unfinished images reached the model
    assert summary["resumed"] == 2 and summary["described_this_run"] == 3
    assert summary["runs"] == 1 and summary["images_per_second_all_runs"] > 0  # the crashed run logged nothing
    assert output.read_bytes() == (tmp_path / "whole.csv").read_bytes()

    again = Recorder(describer)
    summary = run(items, settings, output, again, batch_size=2)
    assert summary["merged"] and again.sizes == [] and summary["images_per_second"] is None
    assert summary["images_per_second_all_runs"] > 0 and output.read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_shards_merge_in_input_order(describer, dataset, settings, tmp_path):
    items = items_from_table(dataset["csv"], dataset["image_root"])
    run(items, settings, tmp_path / "one.csv", describer, batch_size=2)
    for mode in ("strided", "contiguous"):
        output = tmp_path / f"{mode}.csv"
        first = run(items, settings, output, describer, batch_size=2, shard=Shard(1, 2), shard_mode=mode)
        assert not first["merged"] and first["missing"] == 3 and not output.exists()
        second = run(items, settings, output, describer, batch_size=2, shard=Shard(0, 2), shard_mode=mode)
        assert second["merged"] and second["described_this_run"] == 3
        assert output.read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_shard_layout_from_arguments_or_launcher():
    assert resolve_shard(env={}) == Shard(0, 1)
    assert resolve_shard(env={"RANK": "3", "WORLD_SIZE": "4"}) == Shard(3, 4)
    slurm_array = {"SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert resolve_shard(env=slurm_array) == Shard(1, 3)
    assert resolve_shard(env={"SLURM_PROCID": "2", "SLURM_NTASKS": "8"}) == Shard(2, 8)
    assert resolve_shard(1, 2, env={"RANK": "3", "WORLD_SIZE": "4"}) == Shard(1, 2)
    for mode in ("strided", "contiguous"):
        owned = [shard_positions(10, Shard(rank, 3), mode) for rank in range(3)]
        assert sorted(sum(owned, [])) == list(range(10)) and all(len(o) in (3, 4) for o in owned)
    assert shard_positions(10, Shard(1, 3), "contiguous") == [4, 5, 6]
    with pytest.raises(ValueError):
        Shard(2, 2)


class LongWinded(Recorder):
    """Repeats the first image's description until it is far over Long-CLIP's 248 tokens."""

    def describe(self, images):
        generations = super().describe(images)
        first = generations[0]
        return [dataclasses.replace(first, text=" ".join([first.text] * 30)), *generations[1:]]


def test_over_long_descriptions_are_counted(describer, dataset, settings, tmp_path):
    items = items_from_table(dataset["csv"], dataset["image_root"])[:2]
    summary = run(items, settings, tmp_path / "long.csv", LongWinded(describer), batch_size=2)
    assert summary["truncated_for_longclip"] == 1 and summary["truncated_images"] == ["p0.jpg"]
    assert summary["longclip_tokens_max"] > 248 and summary["stopped_at_budget"] == 2
    texts = read_score_table(tmp_path / "long.csv")["description"]
    assert [get_tokenizer().is_truncated(text) for text in texts] == [True, False]


def test_folder_of_paintings_gives_descriptions_to_join(describer, dataset, settings, tmp_path):
    items = items_from_folder(dataset["image_root"])  # labels.csv is not an image
    assert [item.image for item in items] == dataset["names"] and items[0].score == ""
    run(items, settings, tmp_path / "folder.csv", describer, batch_size=3)
    assert pd.read_csv(tmp_path / "folder.csv")["score"].isna().all()
    joined = read_score_table(dataset["csv"], descriptions_csv=tmp_path / "folder.csv")
    assert joined["description"].str.len().gt(0).all()


def test_bad_images_fail_with_their_name_or_are_skipped(describer, dataset, settings, tmp_path):
    csv = tmp_path / "with_missing.csv"
    pd.DataFrame({"image": ["p0.jpg", "gone.jpg", "p1.jpg"], "score": [1, 2, 3]}).to_csv(csv, index=False)
    items = items_from_table(csv, dataset["image_root"])
    with pytest.raises(BadInputError, match=r"gone\.jpg.*input row 1"):
        run(items, settings, tmp_path / "error.csv", describer)
    summary = run(items, settings, tmp_path / "skip.csv", describer, on_bad_image="skip")
    assert summary["skipped"] == 1 and summary["skipped_images"][0]["image"] == "gone.jpg"
    assert read_score_table(tmp_path / "skip.csv")["image"].tolist() == ["p0.jpg", "p1.jpg"]


def test_resume_refuses_other_settings_and_foreign_outputs(describer, dataset, settings, tmp_path):
    items = items_from_table(dataset["csv"], dataset["image_root"])[:1]
    run(items, settings, tmp_path / "a.csv", describer)
    changed = DescriberSettings(**{**settings.__dict__, "instruction": "Describe the colours."})
    with pytest.raises(ValueError, match="instruction"):
        run(items, changed, tmp_path / "a.csv", describer)
    (tmp_path / "foreign.csv").write_text("image,score,comment\n")
    with pytest.raises(ValueError, match="overwrite=true"):
        run(items, settings, tmp_path / "foreign.csv", describer)


def test_missing_model_files_are_named(tmp_path):
    model_dir = tmp_path / "half_copied"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(MissingFilesError) as error:
        load_describer(DescriberSettings(model_path=str(model_dir)))
    message = str(error.value)
    for name in ("model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        assert str(model_dir / name) in message
    assert len(error.value.missing) == 3  # config.json is there
    assert not any(item.startswith(f"{model_dir / 'config.json'} ") for item in error.value.missing)
    with pytest.raises(MissingFilesError, match="nowhere.*does not exist"):
        load_describer(DescriberSettings(model_path=str(tmp_path / "nowhere")))


def test_other_captioners_by_config(tiny_llava, describer, dataset):
    generic = DescriberSettings(model_path=str(tiny_llava), model_class="AutoModelForImageTextToText",
                                template="chat", max_new_tokens=MAX_NEW_TOKENS, device="cpu")  # fmt: skip
    other = load_describer(generic)
    assert type(other.model).__name__ == "LlavaForConditionalGeneration" and other.prompt == describer.prompt
    image = Image.open(dataset["image_root"] / "p0.jpg")
    assert other.describe([image]) == describer.describe([image])
    with pytest.raises(ValueError, match="not a transformers model class"):
        load_describer(DescriberSettings(model_path=str(tiny_llava), model_class="NoSuchModel"))


def test_demo_generates_a_missing_description(tiny_llava, describer, dataset, make_smoke, tmp_path, capsys):
    smoke = make_smoke(1, seed=1)
    config = tmp_path / "short.yaml"  # the gallerygpt config with a smaller budget, for speed
    config.write_text((ROOT / "configs/describer/gallerygpt.yaml").read_text().replace(
        "max_new_tokens: 230", f"max_new_tokens: {MAX_NEW_TOKENS}"))  # fmt: skip
    image = dataset["image_root"] / "p1.jpg"
    argv = [str(image), "--ckpt", str(smoke["ckpt"]), "--describer", str(tiny_llava), "--describer-config", str(config)]
    assert demo.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["description_generated"] and result["description_given"]
    assert result["description"] == describer.describe([load_rgb_image(image)])[0].text != ""
    sidecar = image.with_suffix(".txt")
    sidecar.write_text("A given description.")
    try:
        assert demo.main([*argv, "--json"]) == 0  # a sidecar wins over the describer
    finally:
        sidecar.unlink()
    assert not json.loads(capsys.readouterr().out)["results"][0]["description_generated"]
