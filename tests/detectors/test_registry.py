"""The one table of detector kinds: every kind ``tandem train --detector`` offers, the spec each
reads from its config section, the members each fuses, and what a bundle of each loads as."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from detectors import bundle
from detectors.cascade import CascadeDetector
from detectors.errors import BundleError, DetectorError
from detectors.fusion import FusionDetector
from detectors.members import load_member
from detectors.registry import KINDS, detector_kind, load_detector
from detectors.spec import DETECTOR_KINDS, CascadeSpec, FusionSpec
from tests.detectors.conftest import Labelled


def test_the_table_holds_every_kind_the_cli_offers_in_its_order() -> None:
    assert tuple(KINDS) == DETECTOR_KINDS
    assert all(KINDS[name].name == name for name in KINDS)
    assert detector_kind("cascade").members == 0 and detector_kind("cascade").section == "train"
    for name in DETECTOR_KINDS[1:]:
        assert detector_kind(name).members == 2 and detector_kind(name).section == "fusion"
    with pytest.raises(DetectorError, match="no detector kind 'lstm'"):
        detector_kind("lstm")


def test_a_kind_reads_its_section_and_fixes_its_own_settings() -> None:
    cascade = CascadeSpec(epochs=7)
    assert detector_kind("cascade").spec(cascade) == cascade
    fusion = FusionSpec(mode="concat", epochs=9, head=(16,))
    late = detector_kind("fusion-late").spec(fusion)
    assert isinstance(late, FusionSpec) and late.mode == "late"
    assert late.epochs == 9 and late.head == (16,)
    with pytest.raises(ValidationError, match="weights and width apply to mode 'weighted'"):
        detector_kind("fusion-concat").spec(FusionSpec(mode="weighted", width=4))


def test_a_kind_builds_its_class_with_its_members(
    labelled: Labelled, member_bundles: dict[str, Path]
) -> None:
    names = labelled.train.feature_names
    cascade = detector_kind("cascade")
    built = cascade.build(CascadeSpec(), names, (), "cpu")
    assert isinstance(built, CascadeDetector) and built.feature_names_in == names
    members = [load_member(name, path, None, names) for name, path in member_bundles.items()]
    kind = detector_kind("fusion-weighted")
    fusion = kind.build(kind.spec(FusionSpec()), names, members, "cpu")
    assert isinstance(fusion, FusionDetector) and fusion.kind == "fusion-weighted"
    with pytest.raises(DetectorError, match="fusion-weighted takes 2 members; 1 given"):
        kind.build(kind.spec(FusionSpec()), names, members[:1], "cpu")
    with pytest.raises(DetectorError, match="cascade takes 0 members; 2 given"):
        cascade.build(CascadeSpec(), names, members, "cpu")


def test_a_bundle_loads_as_the_kind_it_names_or_not_at_all(
    trained: CascadeDetector, tmp_path: Path
) -> None:
    trained.save(tmp_path / "cascade")
    assert isinstance(load_detector(tmp_path / "cascade", device="cpu"), CascadeDetector)
    with pytest.raises(BundleError, match="holds a 'cascade' detector, not a fusion"):
        KINDS["fusion-late"].load(tmp_path / "cascade")
    bundle.write_bundle(tmp_path / "lstm", {}, {"kind": "lstm", "window_length": 3})
    with pytest.raises(BundleError, match="kind 'lstm'; this tandem loads cascade, fusion-concat"):
        load_detector(tmp_path / "lstm")
