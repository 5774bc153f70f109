"""Concept folder numbering (plain code-point sort), generated names, and names from a user's metadata.

The project ships no concept lists. The sorted-order logic is tested on generated inputs that always run,
and against the real THINGS / ThingsEEG2 lists in ``../shared/data`` when present (``shared_data`` fixture).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from hmavd.data import concepts as sim_concepts
from hmavd.data.concepts import number_folders
from hmavd.data.thingseeg2 import ImageMetadata, concept_name, save_image_metadata
from hmavd.errors import UserError
from hmavd.simulate import make_image_metadata, select_concepts
from hmavd.simulate_io import SimulateConfig, simulate_dataset


def test_numbering_is_plain_code_point_order_not_table_or_case_insensitive_order():
    # the kinds of names where THINGS order, natural order and case-insensitive order all differ from sorted()
    table_order = [
        "camera",
        "camera_lens",
        "camera1",
        "camera2",
        "hotdog",
        "hot_tub",
        "hot-air_balloon",
        "Zebra",
        "ant",
    ]
    folders = number_folders(table_order)
    assert folders == (
        "00001_Zebra",  # 'Z' (90) < 'a' (97)
        "00002_ant",
        "00003_camera",
        "00004_camera1",  # '1' (49) < '_' (95)
        "00005_camera2",
        "00006_camera_lens",
        "00007_hot-air_balloon",  # '-' (45) < '_' (95) < 'd'
        "00008_hot_tub",
        "00009_hotdog",
    )
    assert [f[6:] for f in folders] != sorted(table_order, key=str.lower)  # the pitfall: not casefolded
    # ImageMetadata orders concepts the same way, whatever order the images come in
    rng = np.random.default_rng(0)
    shuffled = [folders[i] for i in rng.permutation(len(folders))]
    meta = ImageMetadata(tuple(shuffled), tuple(f"{concept_name(f)}_01b.jpg" for f in shuffled), (), ())
    assert meta.train_concepts == folders
    with pytest.raises(ValueError, match="unique"):
        number_folders(["a", "b", "a"])


def test_generated_lists_have_thingseeg2_sizes_and_are_disjoint():
    tr, te = sim_concepts.train_concepts(), sim_concepts.test_concepts()
    assert (len(tr), len(te)) == (1654, 200)
    assert tr == number_folders(c[6:] for c in tr) and te == number_folders(c[6:] for c in te)
    assert not {c[6:] for c in tr} & {c[6:] for c in te}


def _user_metadata(tmp_path, train_names, test_names, n_img=3):
    train = number_folders(train_names)
    test = number_folders(test_names)
    tr_c = [c for c in train for _ in range(n_img)]
    tr_f = [f"{concept_name(c).replace(' ', '_')}_{j:02d}b.jpg" for c in train for j in range(1, n_img + 1)]
    te_f = [f"{concept_name(c).replace(' ', '_')}_07s.jpg" for c in test]
    meta = ImageMetadata(tuple(tr_c), tuple(tr_f), test, tuple(te_f))
    return save_image_metadata(tmp_path / "image_metadata.npy", meta), meta


def test_concepts_from_user_metadata_names_the_simulated_subject(tmp_path):
    path, meta = _user_metadata(tmp_path, ["zebra", "hot_tub", "hotdog", "camera1"], ["wok", "anvil", "kite"])
    tr, te = select_concepts(3, 2, meta)
    assert tr == ("00001_camera1", "00002_hot_tub", "00003_hotdog") and te == ("00001_anvil", "00002_kite")
    m = make_image_metadata(tr, 2, te, meta)
    assert m.train_img_files[:2] == ("camera1_01b.jpg", "camera1_02b.jpg") and m.test_img_files[0] == "anvil_07s.jpg"
    with pytest.raises(UserError, match="n_train_images_per_concept: 4 .* lower it to 3"):
        make_image_metadata(tr, 4, te, meta)
    with pytest.raises(UserError, match="n_test_concepts: 4 must be in 2..3"):
        select_concepts(3, 4, meta)
    cfg = SimulateConfig(n_train_concepts=4, n_train_images_per_concept=2, n_test_concepts=3, n_sessions=1,
                         test_reps_per_session=2, n_sources=4, concepts_from=str(path), write_raw=False,
                         write_replay=False, progress=False)  # fmt: skip
    summary = simulate_dataset(cfg, tmp_path / "sim")
    from hmavd.data.thingseeg2 import load_image_metadata

    written = load_image_metadata(tmp_path / "sim" / "image_set" / "image_metadata.npy")
    assert written.test_concepts == meta.test_concepts and written.train_concepts == meta.train_concepts
    assert summary["n_test_images"] == 3


def test_concepts_from_missing_file_is_one_line_exit_2(tmp_path, capsys):
    from hmavd.cli.simulate import main

    rc = main(["--out", str(tmp_path / "o"), f"concepts_from={tmp_path / 'nope.npy'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "concepts_from" in err and "nope.npy" in err and "image_metadata.npy" in err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- real lists (../shared/data)


def test_real_training_list_is_things_minus_test_in_code_point_order(shared_data):
    with open(shared_data / "things_concepts_1854.tsv", newline="") as fh:
        things = [row["uniqueID"] for row in csv.DictReader(fh, delimiter="\t")]
    with open(shared_data / "thingseeg2_test_concepts_200.csv", newline="") as fh:
        test_rows = list(csv.DictReader(fh))
    real_test = tuple(r["raw_concept"] for r in test_rows)
    real_train = tuple((shared_data / "thingseeg2_train_concepts_1654.txt").read_text().split())
    assert len(things) == 1854 and len(real_test) == 200 and len(real_train) == 1654
    held = {c[6:] for c in real_test}
    remaining = [u for u in things if u not in held]  # THINGS table order
    assert number_folders(remaining) == real_train
    assert "00709_hot_tub" in real_train  # the position that confirms ThingsEEG2 uses sorted order
    assert number_folders(held) == real_test
    # the pitfall: numbering in THINGS table order would misplace some names (17 in this list)
    table_numbered = tuple(f"{i:05d}_{n}" for i, n in enumerate(remaining, start=1))
    moved = sum(a != b for a, b in zip(table_numbered, real_train))
    assert 0 < moved < 100


def test_real_test_metadata_as_concepts_from(shared_data, tmp_path):
    with open(shared_data / "thingseeg2_test_concepts_200.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train = tuple((shared_data / "thingseeg2_train_concepts_1654.txt").read_text().split())
    tr_c = [c for c in train[:5] for _ in range(2)]
    tr_f = [f"{c[6:]}_{j:02d}b.jpg" for c in train[:5] for j in (1, 2)]
    meta = ImageMetadata(tuple(tr_c), tuple(tr_f), tuple(r["raw_concept"] for r in rows),
                         tuple(r["test_img_file"] for r in rows))  # fmt: skip
    tr, te = select_concepts(5, 200, meta)
    assert te[0] == "00001_aircraft_carrier" and te[-1] == "00200_wok" and tr[0] == "00001_aardvark"
    assert make_image_metadata(tr, 2, te, meta).test_img_files[0] == "aircraft_carrier_06s.jpg"
