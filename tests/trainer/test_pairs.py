"""LFW pairs files: the real shared View-2 and View-1 files, and malformed files that must fail clearly."""

from collections import Counter
from pathlib import Path

import pytest

from pipeline.core.errors import SourceError
from trainer.pairs import fold_count, image_path, parse_folds, read_pairs, select_folds


@pytest.fixture(scope="module")
def lfw(shared_data: Path) -> Path:
    return shared_data / "lfw"


def test_view2_shared_folds(lfw):
    pairs = read_pairs(lfw / "pairs_shared_folds.txt", lfw / "images")
    assert len(pairs) == 4200 and fold_count(pairs) == 7
    per_fold = Counter((p.fold, p.same) for p in pairs)
    assert all(per_fold[(fold, same)] == 300 for fold in range(1, 8) for same in (True, False))
    first = pairs[0]
    assert first == pairs[0] and first.same and first.fold == 1 and first.line == 2
    assert first.first == lfw / "images" / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"
    assert first.second == lfw / "images" / "Abdullah_Gul" / "Abdullah_Gul_0006.jpg"
    assert all(p.first.is_file() and p.second.is_file() for p in pairs)  # PROVENANCE: every image is here
    assert not any(p.same for p in pairs if p.first.parent != p.second.parent)


def test_view2_folds_are_identity_disjoint(lfw):
    pairs = read_pairs(lfw / "pairs_shared_folds.txt", lfw / "images")
    owners: dict[str, set[int]] = {}
    for p in pairs:
        for path in (p.first, p.second):
            owners.setdefault(path.parent.name, set()).add(p.fold)
    assert all(len(folds) == 1 for folds in owners.values())


def test_view1_headerless(lfw):
    pairs = read_pairs(lfw / "pairsDevTest_shared.txt", lfw / "images")
    assert len(pairs) == 637 and sum(p.same for p in pairs) == 344
    assert fold_count(pairs) == 1
    assert all(p.first.is_file() and p.second.is_file() for p in pairs)


def test_select_folds(lfw):
    pairs = read_pairs(lfw / "pairs_shared_folds.txt", lfw / "images", folds=[6, 7])
    assert len(pairs) == 1200 and {p.fold for p in pairs} == {6, 7}
    everything = read_pairs(lfw / "pairs_shared_folds.txt", lfw / "images")
    with pytest.raises(SourceError, match=r"pairs_shared_folds.txt: folds \[8\] requested.*folds 1-7"):
        select_folds(everything, [6, 8], source="pairs_shared_folds.txt")


@pytest.mark.parametrize("text, folds", [("6,8", [6, 8]), ("2-4,7", [2, 3, 4, 7]), (" 3 ", [3])])
def test_parse_folds(text, folds):
    assert parse_folds(text) == folds


def test_parse_folds_rejects_garbage():
    with pytest.raises(ValueError, match="bad fold list"):
        parse_folds("6;8")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


GOOD_VIEW2 = "2\t1\nA\t1\t2\nA\t1\tB\t1\nC 1 3\nC 2 D 4\n"


def test_small_view2_and_paths(tmp_path):
    pairs = read_pairs(_write(tmp_path, GOOD_VIEW2), tmp_path / "img")
    assert [(p.same, p.fold, p.line) for p in pairs] == [(True, 1, 2), (False, 1, 3), (True, 2, 4), (False, 2, 5)]
    assert pairs[3].second == image_path(tmp_path / "img", "D", 4) == tmp_path / "img" / "D" / "D_0004.jpg"


def test_view1_with_count_header(tmp_path):
    pairs = read_pairs(_write(tmp_path, "2\nA 1 2\nB 1 3\nA 1 B 2\nC 1 D 1\n"), tmp_path)
    assert [p.same for p in pairs] == [True, True, False, False] and fold_count(pairs) == 1


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("1\t1\nA 1 2\nA 1 B\n", r"pairs.txt:3: image number must be a positive integer, got 'B'"),
    ("1\t1\nA 1 2\nA 1 B 2 extra\n", r"pairs.txt:3: expected 3 fields \(name i j\) or 4 .* got 5"),
    ("1\t1\nA 1 x\nA 1 B 2\n", r"pairs.txt:2: image number must be a positive integer, got 'x'"),
    ("1\t1\nA 0 2\nA 1 B 2\n", r"pairs.txt:2: image number .* got '0'"),
    ("1\t2\nA 1 2\nA 1 B 2\n", r"header says 1 fold\(s\) x \(2 x 2\) = 4 pairs, but the file holds 2"),
    ("1\t1\nA 1 B 2\nA 1 2\n", r"pairs.txt:2: expected a matched \(3 fields\) pair here \(fold 1"),
    ("0\t300\n", "must give positive counts"),
])
def test_malformed_files_name_file_and_line(tmp_path, text, message):
    with pytest.raises(SourceError, match=message):
        read_pairs(_write(tmp_path, text), tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="cannot read pairs file"):
        read_pairs(tmp_path / "nope.txt", tmp_path)
