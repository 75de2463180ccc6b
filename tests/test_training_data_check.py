"""test.py refuses a test table the checkpoint was trained on (data/provenance.py; issue 12).

A toy split is chosen by ``data.build.split_seed`` and its file names do not change with it,
so a model trained on one split and tested on another would be scored partly on its own
training pictures. The training run records what it was trained on in ``best.safetensors``
and ``last.pt``; ``test.py`` checks the test table against it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, compose_config, load_script
from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.data.provenance import (
    OVERRIDE,
    check_overlap,
    check_toy_split,
    merge_records,
    table_image_names,
    training_entry,
)
from mtpg_aiaa.data.toy import make_toy_dataset, split_indices
from mtpg_aiaa.engine.builders import read_init_record
from mtpg_aiaa.models.base import read_metadata
from mtpg_aiaa.models.loading import load_model

NUM_IMAGES, TRAIN_SPLIT, OTHER_SPLIT = 40, 7, 0


def toy_overrides(root, split_seed: int) -> list[str]:
    return ["data=toy", f"data.root={root}", f"data.build.num_images={NUM_IMAGES}", "data.build.image_size=32",
            "data.build.workers=1", f"data.build.split_seed={split_seed}"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained two steps on toy split 7: its run directory and toy root."""
    base = tmp_path_factory.mktemp("trained")
    root = base / "toy"
    make_toy_dataset(root, num_images=NUM_IMAGES, image_size=32, split_seed=TRAIN_SPLIT, progress=False)
    cfg = compose_config("train", "model=tiny", *toy_overrides(root, TRAIN_SPLIT), "debug=fast",
                         "trainer.batch_size=4", "trainer.eval_batch_size=8", "sched.warmup_steps=1",
                         f"paths.output_root={base / 'out'}", "run_name=run")  # fmt: skip
    load_script("train.py").train(cfg)
    return {"run": base / "out" / "train" / "run", "root": root}


@pytest.fixture(scope="module")
def smoke(make_smoke) -> dict:
    return make_smoke(10, seed=1)


def evaluate(ckpt, out, *overrides):
    cfg = compose_config("test", f"ckpt={ckpt}", "eval.num_workers=0", "eval.progress=false",
                         "eval.n_bootstrap=0", *overrides)  # fmt: skip
    return load_script("test.py").evaluate(cfg, out)


@pytest.mark.slow  # a two-step training of the tiny model (~10 s)
def test_training_records_its_table_and_toy_split_in_both_files(trained):
    train_csv = trained["root"] / "train_set.csv"
    names = sorted(set(table_image_names(train_csv)))
    assert names == sorted(f"{i:05d}.jpg" for i in split_indices(NUM_IMAGES, TRAIN_SPLIT)["train"])
    for name in ("best.safetensors", "last.pt"):
        record = load_model(trained["run"] / name).training_data
        assert len(record) == 1, name
        entry = record[0]
        assert entry["table"] == str(train_csv) and entry["images"] == len(names)
        assert entry["toy"] == {"seed": 0, "split_seed": TRAIN_SPLIT, "num_images": NUM_IMAGES, "image_size": 32}
        assert entry == training_entry(compose_config("train", *toy_overrides(trained["root"], TRAIN_SPLIT)).data)
    assert json.loads(read_metadata(trained["run"] / "best.safetensors")["training_data"]) == record
    assert read_init_record(trained["run"]) == record  # what a stage 2 started from this run inherits
    assert read_init_record(trained["run"] / "last.pt") == record


@pytest.mark.slow
def test_another_toy_split_is_refused_in_one_line_naming_both_splits_and_the_override(trained, tmp_path):
    ckpt = trained["run"] / "best.safetensors"
    run = subprocess.run(
        [sys.executable, "test.py", f"ckpt={ckpt}", *toy_overrides(trained["root"], OTHER_SPLIT),
         f"hydra.run.dir={tmp_path / 'out'}", "eval.num_workers=0", "device=cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    shared = len(set(split_indices(NUM_IMAGES, TRAIN_SPLIT)["train"]) & set(split_indices(NUM_IMAGES, OTHER_SPLIT)["test"]))
    assert len(lines) == 1 and lines[0].startswith("error: the checkpoint was trained on toy split "
                                                   f"data.build.split_seed={TRAIN_SPLIT}, but this test uses "
                                                   f"data.build.split_seed={OTHER_SPLIT}"), run.stderr  # fmt: skip
    assert f"holds {shared} of the model's training pictures" in lines[0] and shared > 0
    assert f"pass data.build.split_seed={TRAIN_SPLIT}" in lines[0] and OVERRIDE in lines[0]
    assert not (tmp_path / "out" / "predictions.csv").exists()
    # Refused before the toy tables were re-split: the training split is still on disk.
    assert sorted(set(table_image_names(trained["root"] / "train_set.csv"))) == trained_names()


def trained_names() -> list[str]:
    return sorted(f"{i:05d}.jpg" for i in split_indices(NUM_IMAGES, TRAIN_SPLIT)["train"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["best.safetensors", "last.pt"])
def test_the_training_split_passes_and_the_override_scores_another(trained, tmp_path, name):
    ckpt, root = trained["run"] / name, tmp_path / "toy"
    shutil.copytree(trained["root"], root)  # the override re-splits the toy tables: a copy of them
    metrics = evaluate(ckpt, tmp_path / "same", *toy_overrides(root, TRAIN_SPLIT))
    assert metrics["training_data_check"] == "passed" and metrics["n"] == len(split_indices(NUM_IMAGES, TRAIN_SPLIT)["test"])
    with pytest.raises(BadInputError, match=rf"data.build.split_seed={TRAIN_SPLIT}, but this test uses"):
        evaluate(ckpt, tmp_path / "other", *toy_overrides(root, OTHER_SPLIT))
    metrics = evaluate(ckpt, tmp_path / "other", *toy_overrides(root, OTHER_SPLIT), OVERRIDE)
    assert metrics["training_data_check"] == "overridden"
    assert (tmp_path / "other" / "predictions.csv").is_file()


@pytest.mark.slow
def test_a_test_table_listing_training_images_is_refused(trained, tmp_path):
    root = trained["root"]
    overrides = [f"data.csv={root / 'train_set.csv'}", f"data.image_root={root / 'images'}"]
    with pytest.raises(BadInputError) as refused:
        evaluate(trained["run"] / "best.safetensors", tmp_path, *overrides)
    message = str(refused.value)
    assert message.startswith(f"{len(trained_names())} of the {len(trained_names())} images of ")
    assert f"({root / 'train_set.csv'} (toy split {TRAIN_SPLIT}))" in message and OVERRIDE in message
    assert "\n" not in message


def test_released_layout_and_unrecorded_files_are_scored_as_before(official_ckpt, smoke, tmp_path):
    overrides = [f"data.csv={smoke['csv']}", f"data.image_root={smoke['image_root']}"]
    metrics = evaluate(official_ckpt, tmp_path, *overrides)
    assert metrics["training_data_check"] == "not recorded" and metrics["n"] == 10
    assert load_model(official_ckpt).training_data is None
    assert load_model(smoke["ckpt"]).training_data is None  # one of our files written before the record


def test_overlap_is_counted_by_name_and_other_toy_pictures_are_not_confused(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("image,score\na.jpg,1\n b.jpg ,2\nc.jpg,3\n")
    entry = training_entry({"train_csv": str(train)})
    assert entry["images"] == 3 and "toy" not in entry
    assert check_overlap([entry], {}, ["x.jpg", "y.jpg"], "test.csv") == "passed"
    with pytest.raises(BadInputError, match=r"^1 of the 2 images of test.csv are among the 3 images .* e\.g\. b\.jpg"):
        check_overlap([entry], {}, ["x.jpg", "b.jpg"], "test.csv")
    assert check_overlap([entry], {}, ["b.jpg"], "test.csv", allow=True) == "overridden"
    assert check_overlap(None, {}, ["b.jpg"], "test.csv") == "not recorded"
    # The same file names in a toy build of other pictures (another seed) are other images.
    toy = {"train_csv": str(train), "build": {"seed": 0, "split_seed": 3, "num_images": 40, "image_size": 32}}
    trained = training_entry(toy)
    other_pictures = {"build": {"seed": 1, "split_seed": 0, "num_images": 40, "image_size": 32}}
    check_toy_split([trained], other_pictures)
    assert check_overlap([trained], other_pictures, ["b.jpg"], "test.csv") == "passed"
    with pytest.raises(BadInputError, match="split_seed=3, but this test uses data.build.split_seed=0"):
        check_toy_split([trained], {"build": {**toy["build"], "split_seed": 0}})
    # Entries inherited through init_from are kept once each.
    assert merge_records([entry], [entry, trained]) == [entry, trained]
    assert merge_records(None, None) is None


def test_a_corrupt_record_names_the_file(official_ckpt, tmp_path):
    from safetensors.torch import save_file

    from mtpg_aiaa.models.mtpg.checkpoint import load_official_checkpoint

    model = load_official_checkpoint(official_ckpt)
    model.save(tmp_path / "good.safetensors")
    metadata = read_metadata(tmp_path / "good.safetensors")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "bad.safetensors", metadata={**metadata, "training_data": "{not json"})
    with pytest.raises(BadInputError, match=r"bad\.safetensors: its training_data metadata is not valid JSON"):
        load_model(tmp_path / "bad.safetensors")
    assert load_model(tmp_path / "good.safetensors").training_data is None  # no record: none invented
