"""Each dataset converter on a few-row fake in that set's released file format."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from mtpg_aiaa.data.catalogue import get_converter, list_datasets
from mtpg_aiaa.data.errors import BadInputError

REPO = Path(__file__).resolve().parents[1]


def test_all_six_sets_are_registered():
    assert {"baid", "ava", "aadb", "tad66k", "para", "apdd"} <= set(list_datasets())


def test_baid(tmp_path):
    for split, rows in {"train": "1.jpg,4.5\n2.jpg,6.25\n", "val": "3.jpg,3.0\n", "test": "4.jpg,10.0\n"}.items():
        (tmp_path / f"{split}_set.csv").write_text("image,score\n" + rows)
    table = get_converter("baid")(tmp_path)
    assert table["image"].tolist() == ["images/1.jpg", "images/2.jpg", "images/3.jpg", "images/4.jpg"]
    assert table["split"].tolist() == ["train", "train", "val", "test"]
    assert table["score_0_10"].tolist() == [4.5, 6.25, 3.0, 10.0]


def _ava(root: Path, lines: list[str], test: str = "953619\n", train: str = "953958\n") -> None:
    (root / "aesthetics_image_lists").mkdir(parents=True)
    (root / "AVA.txt").write_text("\n".join(lines) + "\n")
    (root / "aesthetics_image_lists" / "generic_test.jpgl").write_text(test)
    (root / "aesthetics_image_lists" / "generic_ls_train.jpgl").write_text(train)


def test_ava_counts_mean_and_released_lists(tmp_path):
    _ava(tmp_path, ["1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396",
                    "2 953958 10 7 15 26 26 21 10 8 1 2 15 13 1396",
                    "3 954184 0 0 4 8 41 56 10 5 0 0 0 0 1396"])  # fmt: skip
    table = get_converter("ava")(tmp_path)
    assert table["split"].tolist() == ["test", "train"]  # 954184 is in neither list
    counts = [0, 1, 5, 17, 38, 36, 15, 6, 5, 1]
    assert table.loc[0, [f"dist_{k}" for k in range(1, 11)]].tolist() == counts
    assert table.loc[0, "score"] == pytest.approx(sum((k + 1) * c for k, c in enumerate(counts)) / sum(counts))
    assert table.loc[0, "image"] == "images/953619.jpg"
    assert len(get_converter("ava")(tmp_path, unlisted="train")) == 3


def test_ava_bad_line_is_named(tmp_path):
    _ava(tmp_path, ["1 953619 0 1 5 17 38 36 15 6 5 1 1 22"])
    with pytest.raises(BadInputError, match=r"AVA.txt, line 1: expected 15 fields"):
        get_converter("ava")(tmp_path)


def test_aadb_scores_attributes_and_splits(tmp_path):
    labels = tmp_path / "imgListFiles_label"
    labels.mkdir()
    files = {"Train": "farm1_255_19452343093_8ee7e5e375_b.jpg 0.6\nfarm1_261_1.jpg 0.35\n",
             "Validation": "farm1_262_2.jpg 0.8\n", "TestNew": "farm1_263_3.jpg 0.05\n"}  # fmt: skip
    for split, text in files.items():
        (labels / f"imgList{split}Regression_score.txt").write_text(text)
        (labels / f"imgList{split}Regression_ColorHarmony.txt").write_text(text.replace("0.", "-0."))
    table = get_converter("aadb")(tmp_path)
    assert table["split"].tolist() == ["train", "train", "val", "test"]
    assert table["score_0_10"].tolist() == pytest.approx([6.0, 3.5, 8.0, 0.5])
    assert table["attr_ColorHarmony"].tolist() == pytest.approx([-0.6, -0.35, -0.8, -0.05])
    assert table.loc[0, "image"] == "datasetImages_originalSize/farm1_255_19452343093_8ee7e5e375_b.jpg"


def test_tad66k(tmp_path):
    merge = tmp_path / "labels" / "merge"
    merge.mkdir(parents=True)
    (merge / "train.csv").write_text("image,score\n10000001.jpg,5.642857\n10000002.jpg,4.3\n")
    (merge / "test.csv").write_text("image,score\n10000003.jpg,6.8125\n")
    table = get_converter("tad66k")(tmp_path)
    assert table["split"].tolist() == ["train", "train", "test"]
    assert table["image"].tolist()[-1] == "imgs/10000003.jpg"


def test_para_distribution_and_attributes(tmp_path):
    (tmp_path / "annotation").mkdir()
    bins = [f"aestheticScore_{1 + 0.5 * k:.1f}" for k in range(9)]
    header = ["userId", "sessionId", "imageName", *bins, "aestheticScore_mean", "aestheticScore_std",
              "qualityScore_mean", "colorScore_mean", "semantic"]  # fmt: skip
    row = ["A0", "session1", "iaa_pub1_.jpg", "0", "0", "1", "3", "10", "7", "3", "1", "0",
           "3.24", "0.5", "3.4", "3.1", "portrait"]  # fmt: skip
    for number, name in enumerate(("Train", "Test"), start=1):
        row[2] = f"iaa_pub{number}_.jpg"
        (tmp_path / "annotation" / f"PARA-Giaa{name}.csv").write_text(",".join(header) + "\n" + ",".join(row) + "\n")
    table = get_converter("para")(tmp_path)
    assert table["image"].tolist() == ["imgs/session1/iaa_pub1_.jpg", "imgs/session1/iaa_pub2_.jpg"]
    assert table["split"].tolist() == ["train", "test"]
    assert table.loc[0, [f"dist_{k}" for k in range(1, 10)]].tolist() == [0, 0, 1, 3, 10, 7, 3, 1, 0]
    assert table.loc[0, "score_0_10"] == pytest.approx(6.48)
    assert table.loc[0, "attr_colorScore"] == pytest.approx(3.1)


def test_apdd_latin1_missing_attributes_and_seeded_split(tmp_path):
    header = ["filename", "Artistic Categories", "Total aesthetic score", "Theme and logic", "Creativity",
              "Layout and composition", "Space and perspective", "The sense of order", "Light and shadow", "Color",
              "Details and texture", "The overall", "Mood", "Language Comment"]  # fmt: skip
    lines = [",".join(header)]
    for i in range(20):
        lines.append(f"oil_{i}.jpg,Oil painting,{5 + i * 0.2:.1f},6,7,,5,6,7,8,6,7,6,\"Tr\xe8s bien, la couleur {i}\"")
    lines.append("oil_x.jpg,Oil painting,,6,7,,5,6,7,8,6,7,6,")
    (tmp_path / "APDDv2-10023.csv").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    table = get_converter("apdd")(tmp_path)
    assert len(table) == 20 and "oil_x.jpg" not in " ".join(table["image"])  # no total score: left out
    assert table["language_comment"].iloc[0] == "Tr\xe8s bien, la couleur 0"
    assert table["attr_layout_and_composition"].isna().all() and table["attr_color"].eq(8).all()
    assert sorted(table["split"].value_counts().tolist()) == [2, 2, 16]
    again = get_converter("apdd")(tmp_path)
    assert again["split"].tolist() == table["split"].tolist()
    assert get_converter("apdd")(tmp_path, seed=1)["split"].tolist() != table["split"].tolist()


def _prepare_main():
    spec = importlib.util.spec_from_file_location("prepare_dataset", REPO / "scripts" / "prepare_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_prepare_dataset_script_writes_split_files_and_names_errors(tmp_path, capsys):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}_set.csv").write_text(f"image,score\n{split}.jpg,4.5\n" if split != "val" else "image,score\n2.jpg,x\n")
    main = _prepare_main()
    argv = ["baid", "--root", str(tmp_path), "--out", str(tmp_path / "out" / "baid.csv")]
    assert main(argv) == 2
    assert "val_set.csv, line 2, column 'score'" in capsys.readouterr().err
    (tmp_path / "val_set.csv").write_text("image,score\n2.jpg,7\n")
    assert main([*argv, "--check-images"]) == 0
    out = capsys.readouterr().out
    assert "3 images" in out and "3 of 3 images missing" in out
    assert pd.read_csv(tmp_path / "out" / "baid.val.csv")["image"].tolist() == ["images/2.jpg"]


# -- hostile and broken inputs (issue 21 item 12) --------------------------------------------
def test_an_ava_id_listed_twice_is_refused_naming_the_id_and_both_lines(tmp_path):
    _ava(tmp_path, ["1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396",
                    "2 953958 10 7 15 26 26 21 10 8 1 2 15 13 1396",
                    "3 953619 0 0 4 8 41 56 10 5 0 0 0 0 1396"])  # fmt: skip
    with pytest.raises(BadInputError, match=r"image 'images/953619.jpg' is listed twice .*AVA.txt, line 1 and .*AVA.txt, line 3"):
        get_converter("ava")(tmp_path)


def test_an_identical_repeated_row_is_kept_once_with_a_log_line(tmp_path, caplog):
    for split, rows in {"train": "1.jpg,4.5\n1.jpg,4.5\n", "val": "3.jpg,3.0\n", "test": "4.jpg,10.0\n"}.items():
        (tmp_path / f"{split}_set.csv").write_text("image,score\n" + rows)
    table = get_converter("baid")(tmp_path)
    assert table["image"].tolist() == ["images/1.jpg", "images/3.jpg", "images/4.jpg"]
    assert "listed twice with the same labels" in caplog.text and "train_set.csv, line 3" in caplog.text
    (tmp_path / "test_set.csv").write_text("image,score\n./1.jpg,10.0\n")  # the same file, spelled otherwise
    with pytest.raises(BadInputError, match=r"'images/./1.jpg' is listed twice .*train_set.csv, line 2 and .*test_set.csv, line 2"):
        get_converter("baid")(tmp_path)


def test_an_aadb_image_with_two_values_in_one_file_is_refused(tmp_path):
    labels = tmp_path / "imgListFiles_label"
    labels.mkdir()
    (labels / "imgListTrainRegression_score.txt").write_text("a.jpg 0.6\nb.jpg 0.2\na.jpg 0.7\n")
    with pytest.raises(BadInputError, match=r"image 'a.jpg' has two values, 0.6 on line 1 and 0.7 on line 3"):
        get_converter("aadb")(tmp_path)


@pytest.mark.parametrize("options, message", [
    ({"unlistd": "train"}, r"ava: unknown option\(s\) unlistd; valid options: unlisted$"),
    ({"unlisted": 3}, r"ava: option unlisted wants str, got 3"),
])
def test_option_typos_and_types_are_refused_naming_the_valid_ones(tmp_path, options, message):
    _ava(tmp_path, ["1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396"])
    with pytest.raises(ValueError, match=message):
        get_converter("ava")(tmp_path, **options)


def test_apdd_fractions_are_checked(tmp_path):
    with pytest.raises(ValueError, match="val_fraction wants float, got 'abc'"):
        get_converter("apdd")(tmp_path, val_fraction="abc")
    with pytest.raises(ValueError, match="leave some training images"):
        get_converter("apdd")(tmp_path, val_fraction=0.6, test_fraction=0.5)


def test_prepare_dataset_checks_options_and_out_before_converting(tmp_path, capsys, monkeypatch):
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}_set.csv").write_text(f"image,score\n{split}.jpg,4.5\n")
    main = _prepare_main()
    converted = []
    import mtpg_aiaa.data.catalogue.baid as baid

    monkeypatch.setattr(baid, "canonical_table", lambda *a, **k: converted.append(1) or pytest.fail("converted"))
    blocked = tmp_path / "file"
    blocked.write_text("")
    for argv, reason in (
        (["--option", "sed=1"], "baid: unknown option(s) sed; valid options: none"),
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(blocked / "x.csv")], "not a writable folder"),
        (["--out", str(tmp_path / "train_set.csv")], "would overwrite"),
    ):
        assert main(["baid", "--root", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and reason in err and err.count("\n") == 1
    assert not converted
    assert (tmp_path / "train_set.csv").read_text().startswith("image,score")
