"""Protocol files: the real LFW / YTF files, round trips through the writers, errors, key mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sphereface_lib.data import PackedWriter
from sphereface_lib.data.protocols import (
    PairList,
    ProtocolFormatError,
    lfw_key,
    pair_rows,
    read_lfw_pairs,
    read_ytf_splits,
    video_rows,
    write_lfw_pairs,
    write_ytf_splits,
    ytf_frame_key,
)


@pytest.mark.realdata
def test_real_lfw_view2(protocols_dir: Path) -> None:
    pairs = read_lfw_pairs(protocols_dir / "pairs.txt")
    assert len(pairs) == 6000 and pairs.n_folds == 10
    for fold in range(10):
        block = slice(600 * fold, 600 * (fold + 1))
        assert (pairs.folds[block] == fold).all()
        assert pairs.is_same[block][:300].all() and not pairs.is_same[block][300:].any()
    assert pairs.keys_a[0] == "Abel_Pacheco/0001" and pairs.keys_b[0] == "Abel_Pacheco/0004"
    assert pairs.lines[0] == 2 and pairs.lines[-1] == 6001


@pytest.mark.realdata
@pytest.mark.parametrize("name, count", [("pairsDevTrain.txt", 1100), ("pairsDevTest.txt", 500)])
def test_real_lfw_view1(protocols_dir: Path, name: str, count: int) -> None:
    pairs = read_lfw_pairs(protocols_dir / name)
    assert len(pairs) == 2 * count and pairs.n_folds == 1
    assert pairs.is_same[:count].all() and not pairs.is_same[count:].any()


@pytest.mark.realdata
def test_real_ytf_splits(protocols_dir: Path) -> None:
    pairs = read_ytf_splits(protocols_dir / "ytf_splits.csv")
    assert len(pairs) == 5000 and pairs.n_folds == 10
    for split in range(10):
        in_split = pairs.folds == split
        assert in_split.sum() == 500 and pairs.is_same[in_split].sum() == 250
    assert all(k.count("/") == 1 for k in pairs.keys_a + pairs.keys_b)


def _lfw_like() -> PairList:
    keys_a, keys_b, same, folds = [], [], [], []
    for fold in range(3):
        for i in range(2):
            keys_a.append(lfw_key(f"P{fold}_{i}", 1))
            keys_b.append(lfw_key(f"P{fold}_{i}", 2 + i))
            same.append(True)
            folds.append(fold)
        for i in range(2):
            keys_a.append(lfw_key(f"P{fold}_{i}", 1))
            keys_b.append(lfw_key(f"Q{fold}_{i}", 12))
            same.append(False)
            folds.append(fold)
    return PairList.from_pairs(keys_a, keys_b, same, folds)


def test_lfw_round_trip_view2(tmp_path: Path) -> None:
    pairs = _lfw_like()
    write_lfw_pairs(tmp_path / "pairs.txt", pairs)
    text = (tmp_path / "pairs.txt").read_text().splitlines()
    assert text[0] == "3\t2" and text[1] == "P0_0\t1\t2" and text[3] == "P0_0\t1\tQ0_0\t12"
    back = read_lfw_pairs(tmp_path / "pairs.txt")
    assert back.keys_a == pairs.keys_a and back.keys_b == pairs.keys_b
    assert np.array_equal(back.is_same, pairs.is_same) and np.array_equal(back.folds, pairs.folds)


def test_lfw_round_trip_view1(tmp_path: Path) -> None:
    one = _lfw_like()
    first = PairList.from_pairs(one.keys_a[:4], one.keys_b[:4], one.is_same[:4], one.folds[:4])
    write_lfw_pairs(tmp_path / "dev.txt", first)
    assert (tmp_path / "dev.txt").read_text().splitlines()[0] == "2"
    back = read_lfw_pairs(tmp_path / "dev.txt")
    assert back.keys_b == first.keys_b and back.n_folds == 1


def test_lfw_writer_rejects_bad_order(tmp_path: Path) -> None:
    p = _lfw_like()
    shuffled = PairList.from_pairs(p.keys_a, p.keys_b, p.is_same[::-1], p.folds)
    with pytest.raises(ValueError, match="matched pairs then n mismatched"):
        write_lfw_pairs(tmp_path / "x.txt", shuffled)


@pytest.mark.parametrize("official", [False, True])
def test_ytf_round_trip(tmp_path: Path, official: bool) -> None:
    pairs = PairList.from_pairs(["A/0", "A/1", "B/0", "C/2"], ["A/1", "B/0", "B/1", "A/0"],
                                [True, False, True, False], [0, 0, 1, 1])
    write_ytf_splits(tmp_path / "splits.txt", pairs, official=official)
    back = read_ytf_splits(tmp_path / "splits.txt")
    assert back.keys_a == pairs.keys_a and back.keys_b == pairs.keys_b
    assert np.array_equal(back.is_same, pairs.is_same) and np.array_equal(back.folds, pairs.folds)


def test_ytf_official_layout(tmp_path: Path) -> None:
    path = tmp_path / "splits.txt"
    path.write_text(
        "split number, pair number, first name, second name, is same person, is same video\n"
        "1, 1, Aaron_Eckhart/0, Aaron_Eckhart/1, 1, 0\n"
        "1, 2, Aaron_Eckhart/0, Zico/3, 0, 0\n"
    )
    pairs = read_ytf_splits(path)
    assert pairs.keys_b == ("Aaron_Eckhart/1", "Zico/3") and list(pairs.is_same) == [True, False]


@pytest.mark.parametrize(
    "content, line, expected",
    [
        ("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\tx\nC\t1\tD\t1\n", 4, "image number"),
        ("1\t1\nA\t1\nA\t1\tB\t1\n", 2, "matched pair"),
        ("1\t1\nA\t1\t2\nA\t1\tB\n", 3, "mismatched pair"),
        ("ten\t300\n", 1, "number of folds"),
    ],
)
def test_lfw_malformed_names_file_and_line(tmp_path: Path, content: str, line: int, expected: str) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(content)
    with pytest.raises(ProtocolFormatError, match=rf"pairs\.txt, line {line}: expected .*{expected}"):
        read_lfw_pairs(path)


def test_lfw_wrong_count_names_header(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("1\t2\nA\t1\t2\nA\t1\tB\t1\n")
    with pytest.raises(ProtocolFormatError, match=r"pairs\.txt: the header .* announces 4 pair lines, the file has 2"):
        read_lfw_pairs(path)


@pytest.mark.parametrize(
    "body, expected",
    [("1,A/0,A/1\n", "expected 4 fields"), ("0,A/0,A/1,1\n", "start at 1"), ("1,A/0,A/1,yes\n", "0 or 1"),
     ("1,A,A/1,1\n", "Person/number")],
)
def test_ytf_malformed_names_file_and_line(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "ytf.csv"
    path.write_text("split,video_a,video_b,same\n1,B/0,B/1,1\n" + body)
    with pytest.raises(ProtocolFormatError, match=rf"ytf\.csv, line 3: .*{expected}"):
        read_ytf_splits(path)


def test_ytf_unknown_header(tmp_path: Path) -> None:
    path = tmp_path / "ytf.csv"
    path.write_text("a,b,c\n")
    with pytest.raises(ProtocolFormatError, match=r"ytf\.csv, line 1: expected the header"):
        read_ytf_splits(path)


def _packed(tmp_path: Path, keys: list[str]):
    with PackedWriter(tmp_path / "packed", height=2, width=2, channels=1, source="test") as w:
        w.add(np.arange(len(keys) * 4, dtype=np.uint8).reshape(-1, 2, 2, 1), np.zeros(len(keys), np.int64), keys)
    from sphereface_lib.data import PackedDataset

    return PackedDataset(tmp_path / "packed")


def test_pair_rows_and_missing_image(tmp_path: Path) -> None:
    ds = _packed(tmp_path, [lfw_key("A", 1), lfw_key("A", 2), lfw_key("B", 1)])
    pairs = PairList.from_pairs([lfw_key("A", 1), lfw_key("A", 2)], [lfw_key("A", 2), lfw_key("B", 1)],
                                [True, False], [0, 0], source="pairs.txt")
    rows_a, rows_b = pair_rows(ds, pairs)
    assert rows_a.tolist() == [0, 1] and rows_b.tolist() == [1, 2]
    broken = PairList.from_pairs(["A/0001", "A/0001"], ["A/0002", "C/0007"], [True, False], [0, 0], "pairs.txt")
    with pytest.raises(KeyError, match=r"pairs\.txt, line 2: image 'C/0007' is not in the packed dataset"):
        pair_rows(ds, broken)


def test_video_rows_and_missing_video(tmp_path: Path) -> None:
    keys = [ytf_frame_key("A/0", 1), ytf_frame_key("A/0", 2), ytf_frame_key("B/3", 1), ytf_frame_key("A/1", 5)]
    ds = _packed(tmp_path, keys)
    pairs = PairList.from_pairs(["A/0"], ["B/3"], [False], [0], "splits.csv")
    rows = video_rows(ds, pairs)
    assert rows["A/0"].tolist() == [0, 1] and rows["B/3"].tolist() == [2]
    with pytest.raises(KeyError, match=r"splits\.csv, line 1: video 'Z/9' has no frames"):
        video_rows(ds, PairList.from_pairs(["Z/9"], ["A/1"], [False], [0], "splits.csv"))


@pytest.mark.parametrize(
    "content, line, expected",
    [
        ("1\t1\nA\t1\t2\nB\t1\tB\t2\n", 3, "a mismatched pair names one person twice ('B'); a mismatched pair is two "
                                           "different people"),
        ("1\t1\nA\t3\t3\nA\t1\tB\t1\n", 2, "a matched pair names one image twice ('A/0003')"),
    ],
)
def test_lfw_pairs_that_contradict_their_kind_name_file_and_line(tmp_path: Path, content: str, line: int,
                                                                   expected: str) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(content)
    with pytest.raises(ProtocolFormatError, match=rf"pairs\.txt, line {line}: {expected}".replace("(", r"\(")
                       .replace(")", r"\)")):
        read_lfw_pairs(path)


@pytest.mark.parametrize("body, words", [("1,C/0,C/1,0\n", "flag is 0 but the videos show one person"),
                                         ("1,C/0,D/1,1\n", "flag is 1 but the videos show two people")])
def test_ytf_same_flag_that_contradicts_the_videos_is_named(tmp_path: Path, body: str, words: str) -> None:
    path = tmp_path / "ytf.csv"
    path.write_text("split,video_a,video_b,same\n1,B/0,B/1,1\n" + body)
    with pytest.raises(ProtocolFormatError, match=rf"ytf\.csv, line 3: the same-person {words}"):
        read_ytf_splits(path)


def test_a_folder_given_as_protocol_file_is_named_as_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ProtocolFormatError, match=r"is a folder, not a protocol file"):
        read_lfw_pairs(tmp_path)
    with pytest.raises(ProtocolFormatError, match=r"is a folder, not a protocol file"):
        read_ytf_splits(tmp_path)
