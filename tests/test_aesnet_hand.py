"""The HAND converter on few-row fakes of the three layouts it reads: the canonical
multi-text table, and every validation problem named and counted."""
from __future__ import annotations

import json
import logging

import pytest
from PIL import Image

from mtpg_aiaa.data.catalogue import get_converter
from mtpg_aiaa.data.errors import BadInputError

convert = get_converter("hand")


def images(root, names):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8)).save(root / "images" / name)


def test_wide_json_with_a_field_mapping_and_every_problem_counted(tmp_path, caplog):
    images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    records = [
        {"image": "a.jpg", "colour": "Warm  reds\nand golds.", "lighting": "Soft light.", "mood": "calm"},
        {"image": "b.jpg", "colour": "Cool blues.", "lighting": "", "composition": "Centred."},
        {"image": "c.jpg", "colour": "Cool blues.", "lighting": "Harsh noon sun."},
        {"image": "gone.jpg", "colour": "Grey."},
    ]
    (tmp_path / "hand.json").write_text(json.dumps(records))
    with caplog.at_level(logging.INFO):
        table = convert(tmp_path, fields="color=colour", val_fraction=0.0)
    assert list(table.columns) == ["image", "content", "emotion", "composition", "depth_of_field", "lighting",
                                   "color", "technical_quality", "split"]  # fmt: skip
    assert table["image"].tolist() == ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    assert table.loc[0, "color"] == "Warm reds and golds."  # whitespace collapsed
    assert table.loc[1, "lighting"] == "" and table.loc[1, "composition"] == "Centred."
    assert set(table["split"]) == {"train"}
    report = table.attrs["report"]
    assert report["missing_images"] == 1 and report["unknown"] == {"mood": 1} and report["empty"] == {"lighting": 1}
    assert report["boilerplate"] == {"color": 2}
    log = caplog.text
    assert "gone.jpg" in log and "mood" in log and "color 3" in log and "lighting 2" in log


def test_long_jsonl_keeps_the_first_of_a_repeated_pair(tmp_path):
    images(tmp_path, ["a.jpg"])
    lines = [{"image": "a.jpg", "attribute": "color", "description": "Red."},
             {"image": "a.jpg", "attribute": "color", "description": "Blue."},
             {"image": "a.jpg", "attribute": "emotion", "description": "Joyful."}]  # fmt: skip
    (tmp_path / "hand.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    table = convert(tmp_path, layout="long")
    assert table.loc[0, "color"] == "Red." and table.loc[0, "emotion"] == "Joyful."
    assert table.attrs["report"]["repeated"] == {"color": 1}


def test_sharegpt4v_conversations_map_questions_to_attributes(tmp_path):
    images(tmp_path, ["a.jpg"])
    record = {"id": "1", "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nDescribe the depth of field of this image."},
        {"from": "gpt", "value": "A shallow depth of field blurs the background."},
        {"from": "human", "value": "How is the lighting?"}, {"from": "gpt", "value": "Backlit at dusk."},
        {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": "No."}]}  # fmt: skip
    (tmp_path / "share.json").write_text(json.dumps([record]))
    table = convert(tmp_path, layout="conversations")
    assert table.loc[0, "depth_of_field"].startswith("A shallow") and table.loc[0, "lighting"] == "Backlit at dusk."
    assert len(table.attrs["report"]["unknown"]) == 1  # the unmatched question is named, not guessed


def test_errors_name_the_file_record_or_option(tmp_path):
    images(tmp_path, ["a.jpg"])
    (tmp_path / "hand.json").write_text(json.dumps([{"img": "a.jpg"}]))
    with pytest.raises(BadInputError, match="record 0 has no 'image'"):
        convert(tmp_path)
    with pytest.raises(BadInputError, match="fields wants"):
        convert(tmp_path, fields="color")
    (tmp_path / "hand.json").write_text(json.dumps([{"image": "gone.jpg", "color": "Red."}]))
    with pytest.raises(BadInputError, match="1 of 1 images missing"):
        convert(tmp_path, strict=True)


def test_prepare_dataset_script_converts_hand(tmp_path, capsys):
    from helpers import load_script

    images(tmp_path, ["a.jpg", "b.jpg"])
    lines = [{"image": "a.jpg", "attribute": "color", "description": "Red."},
             {"image": "b.jpg", "attribute": "emotion", "description": "Joyful."}]  # fmt: skip
    (tmp_path / "hand.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    out = tmp_path / "out" / "hand.csv"
    main = load_script("scripts/prepare_dataset.py").main
    assert main(["hand", "--root", str(tmp_path), "--out", str(out), "--option", "layout=long",
                 "--option", "val_fraction=0"]) == 0  # fmt: skip
    assert "hand: 2 images (train 2); no scores" in capsys.readouterr().out
    assert out.is_file() and (tmp_path / "out" / "hand.train.csv").is_file()


# -- hostile and broken inputs (issue 21 item 12) --------------------------------------------
def test_absolute_climbing_or_symlinked_image_names_are_refused(tmp_path):
    images(tmp_path, ["a.jpg"])
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    Image.new("RGB", (8, 8)).save(outside)
    (tmp_path / "images" / "link.jpg").symlink_to(outside)
    for name in ("/etc/passwd", "../hand.json", "link.jpg"):
        (tmp_path / "hand.json").write_text(json.dumps([{"image": "a.jpg", "color": "Red."}, {"image": name, "color": "Red."}]))
        with pytest.raises(BadInputError, match="absolute or climbs out|outside"):
            convert(tmp_path)
    with pytest.raises(ValueError, match="images='/etc'"):
        convert(tmp_path, images="/etc")


def test_every_image_missing_is_an_error_not_a_header_only_table(tmp_path):
    (tmp_path / "hand.json").write_text(json.dumps([{"image": "gone.jpg", "color": "Red."}]))
    with pytest.raises(BadInputError, match="1 of 1 images missing"):
        convert(tmp_path)


@pytest.mark.parametrize("turns, message", [
    ([{"from": "human", "value": "Colour?"}], "an odd number"),
    ([{"from": "gpt", "value": "Red."}, {"from": "human", "value": "Colour?"}], "turn 0: from 'gpt', expected 'human'"),
    (["Colour?", "Red."], "turn 0: expected"),
    ("Colour? Red.", "must be a list of turns"),
])
def test_odd_conversations_are_named_in_one_line(tmp_path, turns, message):
    images(tmp_path, ["a.jpg"])
    (tmp_path / "share.json").write_text(json.dumps([{"image": "a.jpg", "conversations": turns}]))
    with pytest.raises(BadInputError, match=message):
        convert(tmp_path, layout="conversations")


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_deeply_nested_json_is_refused_before_parsing(tmp_path, suffix):
    (tmp_path / f"hand{suffix}").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadInputError, match="nested 100000 levels deep"):
        convert(tmp_path)


def test_option_typos_and_bad_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"hand: unknown option\(s\) val_fracton; valid options: layout, descriptions, "):
        convert(tmp_path, val_fracton=0.2)
    with pytest.raises(ValueError, match="option val_fraction wants float, got 'abc'"):
        convert(tmp_path, val_fraction="abc")
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        convert(tmp_path, val_fraction=2)
