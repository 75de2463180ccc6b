"""Label CSVs, image loading and the dataset: every bad input gives a precise error."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from helpers import SHARED
from mtpg_aiaa.data import (
    AestheticsDataset,
    BadInputError,
    build_dataset,
    collate_samples,
    load_rgb_image,
    read_score_table,
)
from mtpg_aiaa.transforms import build_transform



def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _save_image(path, colour=(200, 100, 50), size=(32, 24)):
    Image.new("RGB", size, colour).save(path)
    return path


def _truncated_jpeg(path):
    noise = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _fake_tokenize(texts):
    """Stands in for a CLIP tokenizer: [len(texts), 8] LongTensor."""
    return torch.tensor([[len(text)] + [0] * 7 for text in texts], dtype=torch.long)


# ---------------------------------------------------------------- images


@pytest.mark.parametrize(
    "mode, fmt, value, expected",
    [
        ("L", "PNG", 100, (100, 100, 100)),
        ("LA", "PNG", (100, 0), (100, 100, 100)),
        ("RGBA", "PNG", (10, 20, 30, 0), (10, 20, 30)),  # alpha dropped, as the authors do
        ("CMYK", "TIFF", (0, 0, 0, 0), (255, 255, 255)),
        ("CMYK", "TIFF", (0, 255, 0, 0), (255, 0, 255)),
        ("I;16", "PNG", 65535, (255, 255, 255)),
        ("I;16", "PNG", 25700, (100, 100, 100)),  # scaled by 257, not clipped at 255
        ("I", "TIFF", 25700, (100, 100, 100)),
        ("F", "TIFF", 0.5, (128, 128, 128)),
    ],
)
def test_odd_modes_load_as_rgb(tmp_path, mode, fmt, value, expected):
    path = tmp_path / f"image.{fmt.lower()}"
    Image.new(mode, (32, 24), value).save(path, fmt)
    image = load_rgb_image(path)
    assert image.mode == "RGB" and image.size == (32, 24)
    assert image.getpixel((5, 5)) == expected


@pytest.mark.parametrize("transparency", [None, 0])
def test_palette_images_load_as_their_palette_colours(tmp_path, transparency):
    image = Image.new("P", (32, 24), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (16, 0, 32, 24))
    extra = {} if transparency is None else {"transparency": transparency}
    image.save(tmp_path / "palette.png", **extra)
    loaded = load_rgb_image(tmp_path / "palette.png")
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 0, 0) and loaded.getpixel((20, 0)) == (0, 255, 0)


def test_loaded_image_is_decoded_and_detached_from_the_file(tmp_path):
    path = _save_image(tmp_path / "a.jpg")
    image = load_rgb_image(path)
    path.unlink()
    assert image.resize((4, 4)).size == (4, 4)


def test_missing_image_names_the_path(tmp_path):
    with pytest.raises(BadInputError, match="nowhere.jpg.*does not exist"):
        load_rgb_image(tmp_path / "nowhere.jpg")


def test_not_an_image_names_path_and_cause(tmp_path):
    path = _write(tmp_path / "text.jpg", "this is not a jpeg")
    with pytest.raises(BadInputError, match=r"text\.jpg.*UnidentifiedImageError"):
        load_rgb_image(path)


@pytest.mark.parametrize("lenient_pil", [False, True])
def test_truncated_jpeg_is_refused_even_if_pil_is_lenient(tmp_path, monkeypatch, lenient_pil):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient_pil)
    path = _truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(BadInputError, match=r"cut\.jpg.*truncated"):
        load_rgb_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is lenient_pil  # global restored


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = _save_image(tmp_path / "big.png")
    with pytest.raises(BadInputError, match=r"big\.png is 32x24 = 768 pixels.*100"):
        load_rgb_image(path, max_pixels=100)
    assert load_rgb_image(path, max_pixels=768).size == (32, 24)


def test_pil_decompression_bomb_error_becomes_bad_input(tmp_path, monkeypatch):
    path = _save_image(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses above 2 * 100
    with pytest.raises(BadInputError, match=r"bomb\.png.*too large"):
        load_rgb_image(path, max_pixels=10_000)


# ---------------------------------------------------------------- tables


def test_table_columns_targets_and_zero_padded_names(tmp_path):
    csv = _write(tmp_path / "s.csv", "image,score,extra\n0001.jpg,5.5,x\n0002.jpg,10,y\n")
    table = read_score_table(csv)
    assert list(table.columns) == ["image", "score", "target", "description"]
    assert table["image"].tolist() == ["0001.jpg", "0002.jpg"]
    assert table["score"].tolist() == [5.5, 10.0] and table["target"].tolist() == [0.55, 1.0]
    assert table["description"].tolist() == ["", ""] and table.attrs["has_descriptions"] is False


def test_score_scale_one_versus_ten(tmp_path):
    csv = _write(tmp_path / "s.csv", "image,score\na.jpg,0.7\n")
    assert read_score_table(csv, score_scale=1.0)["target"].tolist() == [0.7]
    assert read_score_table(csv, score_scale=10.0)["target"].tolist() == pytest.approx([0.07])
    too_big = _write(tmp_path / "big.csv", "image,score\na.jpg,0.5\nb.jpg,7\n")
    with pytest.raises(BadInputError, match=r"big\.csv, line 3.*outside \[0, 1\]"):
        read_score_table(too_big, score_scale=1.0)


@pytest.mark.parametrize(
    "body, pattern",
    [
        ("a.jpg,5\nb.jpg,abc\n", r"line 3, column 'score': 'abc' is not a number"),
        ("a.jpg,nan\n", r"line 2, column 'score': 'nan' is not a finite"),
        ("a.jpg,5\nb.jpg,\n", r"line 3, column 'score': '' is not a number"),
        ("a.jpg,inf\n", r"line 2, column 'score': 'inf' is not a finite"),
        ("a.jpg,-0.5\n", r"line 2, column 'score': -0.5 is outside \[0, 10\]"),
        ("a.jpg,10.5\n", r"line 2, column 'score': 10.5 is outside"),
        ("a.jpg,5\n ,5\n", r"line 3: empty value in column 'image'"),
        ("a.jpg,5\nb.jpg,6\na.jpg,7\n", r"'a.jpg' appears twice, on lines 2 and 4"),
        ("a.jpg,5\nb.jpg,6,oops\n", r"line 3: expected 2 fields"),
        ('"a.jpg\nstill a.jpg",5\nb.jpg,x\n', r"line 4, column 'score': 'x'"),  # quoted newline
    ],
)
def test_bad_score_rows_name_file_line_and_value(tmp_path, body, pattern):
    csv = _write(tmp_path / "scores.csv", "image,score\n" + body)
    with pytest.raises(BadInputError, match=r"scores\.csv.*" + pattern):
        read_score_table(csv)


@pytest.mark.parametrize(
    "content, pattern",
    [
        (None, r"missing\.csv does not exist"),
        (b"\xff\xfe\x00\x81binary", r"Cannot parse CSV file .*missing\.csv"),
        (b"", r"missing\.csv is empty"),
        (b"image,score\n", r"missing\.csv has a header but no data rows"),
        (b"image,rating\na.jpg,5\n", r"missing\.csv: missing required column\(s\) \['score'\]; "
                                     r"columns found: \['image', 'rating'\]"),
        (b'image,score\n"a.jpg"x,5\n', r"Cannot parse CSV file .*missing\.csv, near line 2"),
    ],
)
def test_unusable_csv_files_are_named(tmp_path, content, pattern):
    path = tmp_path / "missing.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInputError, match=pattern):
        read_score_table(path)


def test_comment_column_variant(tmp_path):
    csv = _write(tmp_path / "s.csv", 'image,score,comment\na.jpg,4,"Bold, thick\nstrokes."\nb.jpg,6,Calm.\n')
    table = read_score_table(csv)
    assert table["description"].tolist() == ["Bold, thick\nstrokes.", "Calm."]
    assert table.attrs["has_descriptions"] is True
    empty = _write(tmp_path / "e.csv", 'image,score,comment\na.jpg,4,"x\ny"\nb.jpg,6,"  "\n')
    with pytest.raises(BadInputError, match=r"e\.csv, line 4: empty description for image 'b.jpg'"):
        read_score_table(empty)
    long = _write(tmp_path / "l.csv", "image,score,comment\na.jpg,4," + "w" * 50 + "\n")
    with pytest.raises(BadInputError, match=r"l\.csv, line 2: description of image 'a.jpg' has 50"):
        read_score_table(long, max_description_chars=49)


def test_descriptions_joined_from_second_csv_keep_score_order(tmp_path):
    scores = _write(tmp_path / "s.csv", "image,score\nc.jpg,3\na.jpg,5\nb.jpg,7\n")
    texts = _write(tmp_path / "d.csv", "score,image,comment\n1,a.jpg,About a.\n2,unused.jpg,U\n"
                                       "3,b.jpg,About b.\n4,c.jpg,About c.\n")
    table = read_score_table(scores, descriptions_csv=texts)
    assert table["image"].tolist() == ["c.jpg", "a.jpg", "b.jpg"]
    assert table["description"].tolist() == ["About c.", "About a.", "About b."]
    assert table["score"].tolist() == [3.0, 5.0, 7.0]  # the extra score column is ignored
    assert table.attrs["has_descriptions"] is True


@pytest.mark.parametrize(
    "descriptions, pattern",
    [
        ("image,comment\na.jpg,A\n", r"'b.jpg' \(line 3 of .*s\.csv\) has no description in .*d\.csv"),
        ("image,comment\na.jpg,A\nb.jpg,B\na.jpg,C\n", r"d\.csv: image 'a.jpg' has two descriptions, on lines 2 and 4"),
        ("image,comment\na.jpg,A\nb.jpg,\n", r"d\.csv, line 3: empty description for image 'b.jpg'"),
        ("image,text\na.jpg,A\n", r"d\.csv: missing required column\(s\) \['comment'\]"),
    ],
)
def test_bad_descriptions_file(tmp_path, descriptions, pattern):
    scores = _write(tmp_path / "s.csv", "image,score\na.jpg,3\nb.jpg,5\n")
    with pytest.raises(BadInputError, match=pattern):
        read_score_table(scores, descriptions_csv=_write(tmp_path / "d.csv", descriptions))


# ---------------------------------------------------------------- dataset


def _dataset_files(tmp_path):
    _save_image(tmp_path / "good.png", (255, 0, 0))
    _truncated_jpeg(tmp_path / "cut.jpg")
    _save_image(tmp_path / "other.png", (0, 0, 255))
    return _write(tmp_path / "s.csv", "image,score,comment\ngood.png,8,Red.\ncut.jpg,4,Cut.\nother.png,2,Blue.\n")


def test_dataset_sample_contents(tmp_path):
    dataset = build_dataset(_dataset_files(tmp_path), tmp_path, build_transform("official"),
                            tokenize=_fake_tokenize)
    sample = dataset[-1]
    assert sample["image"].shape == (3, 224, 224) and sample["index"] == 2
    assert sample["target"].dtype == torch.float32 and sample["target"].item() == pytest.approx(0.2)
    assert sample["score"] == 2.0 and sample["image_name"] == "other.png"
    assert sample["description"] == "Blue." and sample["description_tokens"].tolist()[0] == 5
    assert sample["description_tokens"].dtype == torch.long


def test_bad_image_raises_by_default_naming_file_and_row(tmp_path):
    dataset = build_dataset(_dataset_files(tmp_path), tmp_path, build_transform("official"))
    with pytest.raises(BadInputError, match=r"cut\.jpg.*table row 1, 0-based, read from .*s\.csv"):
        dataset[1]


def test_bad_image_is_skipped_and_reported_through_a_dataloader(tmp_path, caplog):
    dataset = build_dataset(_dataset_files(tmp_path), tmp_path, build_transform("official"),
                            tokenize=_fake_tokenize, on_bad_image="skip")
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate_samples)
    with caplog.at_level(logging.WARNING, logger="mtpg_aiaa.data.dataset"):
        (batch,) = list(loader)
    assert batch["image"].shape == (2, 3, 224, 224) and batch["index"].tolist() == [0, 2]
    assert batch["target"].dtype == torch.float32 and batch["score"].tolist() == [8.0, 2.0]
    assert batch["image_name"] == ["good.png", "other.png"]
    assert batch["description_tokens"].shape == (2, 8)
    (skipped,) = batch["skipped"]
    assert skipped["index"] == 1 and skipped["image_name"] == "cut.jpg" and "truncated" in skipped["reason"]
    assert "cut.jpg" in caplog.text


def test_batch_with_every_sample_skipped(tmp_path):
    dataset = build_dataset(_dataset_files(tmp_path), tmp_path, build_transform("official"),
                            on_bad_image="skip", max_pixels=10)
    batch = collate_samples([dataset[0], dataset[1]])
    assert "image" not in batch and len(batch["index"]) == 0
    assert [entry["image_name"] for entry in batch["skipped"]] == ["good.png", "cut.jpg"]


def test_invalid_bad_image_policy(tmp_path):
    table = read_score_table(_dataset_files(tmp_path))
    with pytest.raises(ValueError, match="on_bad_image"):
        AestheticsDataset(table, tmp_path, build_transform("official"), on_bad_image="ignore")


# ---------------------------------------------------------------- real data in ../shared


def test_real_baid_test_labels():
    csv = SHARED / "data" / "baid" / "test_set.csv"
    if not csv.is_file():
        pytest.skip(f"{csv} is absent (only CI and developer machines have ../shared)")
    table = read_score_table(csv)
    assert len(table) == 6400 and table["image"].is_unique
    assert round(table["score"].min(), 2) == 3.46 and round(table["score"].max(), 2) == 10.0
    assert round(100 * (table["score"] > 5).mean(), 1) == 23.8


def test_real_paintings_through_the_dataset(tmp_path):
    paintings = SHARED / "data" / "paintings"
    if not (paintings / "20698.jpg").is_file() or not (paintings / "196817.jpg").is_file():
        pytest.skip(f"{paintings} is absent (only CI and developer machines have ../shared)")
    scores = _write(tmp_path / "s.csv", "image,score\n20698.jpg,3.9546\n196817.jpg,9.400612\n")
    text_by_image = json.loads((paintings / "descriptions.json").read_text(encoding="utf-8"))
    import csv  # noqa: PLC0415 - only this test writes a CSV with quoting

    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("image", "comment"), *text_by_image.items()])
    dataset = build_dataset(scores, paintings, build_transform("official"),
                            descriptions_csv=tmp_path / "d.csv", tokenize=_fake_tokenize)
    batch = collate_samples([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 3, 224, 224) and torch.isfinite(batch["image"]).all()
    assert batch["target"].tolist() == pytest.approx([0.39546, 0.9400612])
    assert batch["description"][0].startswith("The painting is executed")
