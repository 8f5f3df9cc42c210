"""Submission files: writing, validation against sample_submission.csv, scoring with public/private parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fstag.ensemble.submission import (
    SubmissionError,
    read_test_labels,
    score_submission,
    top3_labels,
    validate_submission,
    write_submission,
)

LABELS = ["Bark", "Cello", "Flute", "Gong", "Oboe"]
FNAMES = ["c.wav", "a.wav", "b.wav"]


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample_submission.csv"
    pd.DataFrame({"fname": FNAMES, "label": "Bark Cello Flute"}).to_csv(path, index=False)
    return path


def write_rows(path, rows, header="fname,label"):
    path.write_text(header + "\n" + "".join(f"{f},{labels}\n" for f, labels in rows))
    return path


def test_write_submission_top3_in_sample_order(tmp_path, sample):
    probs = np.array([[0.1, 0.2, 0.3, 0.4, 0.0], [0.5, 0.0, 0.0, 0.2, 0.3], [0.2, 0.2, 0.2, 0.2, 0.2]])
    path = write_submission(tmp_path / "sub" / "s.csv", FNAMES, probs, LABELS)
    assert path.read_text() == (
        "fname,label\n"
        "c.wav,Gong Flute Cello\n"
        "a.wav,Bark Oboe Gong\n"
        "b.wav,Bark Cello Flute\n"  # ties go to the lower class index
    )
    df = validate_submission(path, sample, LABELS)
    assert df["fname"].tolist() == FNAMES
    assert not list((tmp_path / "sub").glob(".*tmp"))  # atomic write leaves no temporary file


def test_top3_labels_is_deterministic_on_ties():
    assert top3_labels(np.full((2, 5), 0.2), LABELS) == ["Bark Cello Flute"] * 2


OK = "Bark Cello Flute"


@pytest.mark.parametrize(
    "rows, header, message",
    [
        ([("c.wav", OK), ("a.wav", OK)], "fname,label", r"1 fname\(s\) missing, e.g. \['b.wav'\]"),
        ([("a.wav", OK), ("c.wav", OK), ("b.wav", OK)], "fname,label", "row 2: fname 'a.wav', expected 'c.wav'"),
        ([("c.wav", OK), ("c.wav", OK), ("b.wav", OK)], "fname,label", r"repeated, e.g. \['c.wav'\]"),
        ([("c.wav", "Bark Cello"), ("a.wav", OK), ("b.wav", OK)], "fname,label", "row 2: label 'Bark Cello' must be"),
        ([("c.wav", OK), ("a.wav", "Bark Cello Tuba"), ("b.wav", OK)], "fname,label", "row 3: label 'Bark Cello Tuba'"),
        ([("c.wav", "Bark Bark Flute"), ("a.wav", OK), ("b.wav", OK)], "fname,label", "three distinct"),
        ([("c.wav", OK), ("a.wav", OK), ("b.wav", OK)], "fname,labels", "header must be fname,label"),
    ],
)
def test_validate_submission_errors(tmp_path, sample, rows, header, message):
    path = write_rows(tmp_path / "s.csv", rows, header)
    with pytest.raises(SubmissionError, match=message):
        validate_submission(path, sample, LABELS)


def test_score_submission_public_private_by_hand(tmp_path):
    sub = write_rows(
        tmp_path / "s.csv",
        [
            ("p1.wav", "Bark Cello Flute"),  # truth Bark: rank 1 -> 1
            ("p2.wav", "Bark Cello Flute"),  # truth Cello: rank 2 -> 1/2
            ("p3.wav", "Bark Cello Flute"),  # truth Oboe: absent -> 0
            ("q1.wav", "Gong Oboe Flute"),  # truth Flute: rank 3 -> 1/3
            ("q2.wav", "Oboe Gong Bark"),  # truth Oboe: rank 1 -> 1
            ("pad.wav", "Bark Cello Flute"),  # Ignored
        ],
    )
    truth = tmp_path / "test_post_competition.csv"
    pd.DataFrame(
        {
            "fname": ["p1.wav", "p2.wav", "p3.wav", "q1.wav", "q2.wav", "pad.wav"],
            "label": ["Bark", "Cello", "Oboe", "Flute", "Oboe", "None"],
            "usage": ["Public", "Public", "Public", "Private", "private", "Ignored"],
        }
    ).to_csv(truth, index=False)
    s = score_submission(sub, truth, LABELS)
    assert s["map3_public"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert s["map3_private"] == pytest.approx((1 / 3 + 1) / 2)
    assert s["map3"] == pytest.approx((1 + 1 / 2 + 0 + 1 / 3 + 1) / 5)
    assert s["acc1"] == pytest.approx(2 / 5)
    assert (s["n_scored"], s["n_public"], s["n_private"]) == (5, 3, 2)

    # without a usage column every row is scored and no parts are reported
    pd.read_csv(truth).iloc[:5, :2].to_csv(tmp_path / "test_labels.csv", index=False)
    s = score_submission(sub, tmp_path / "test_labels.csv", LABELS)
    assert s["map3"] == pytest.approx(17 / 30) and "map3_public" not in s


def test_score_submission_errors(tmp_path):
    sub = write_rows(tmp_path / "s.csv", [("a.wav", "Bark Cello Flute")])
    truth = tmp_path / "t.csv"
    truth.write_text("fname,label,usage\na.wav,Bark,Public\nb.wav,Gong,Private\n")
    with pytest.raises(SubmissionError, match=r"no row for 1 scored clip\(s\) .*'b.wav'"):
        score_submission(sub, truth, LABELS)
    truth.write_text("fname,label,usage\na.wav,Tuba,Public\n")
    with pytest.raises(SubmissionError, match=r"label\(s\) \['Tuba'\] are not among"):
        score_submission(sub, truth, LABELS)
    truth.write_text("fname,label,usage\na.wav,Bark,Secret\n")
    with pytest.raises(SubmissionError, match="column 'usage' has value 'Secret'"):
        read_test_labels(truth)
