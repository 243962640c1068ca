import pytest

from embedline.errors import BadName
from embedline.names import check_name, space_name


@pytest.mark.parametrize("good", ["debian", "docs_v2", "a", "x1"])
def test_good_names(good):
    assert check_name(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "Debian", "1abc", "a-b", "../x", "a b", "x;drop table t", "a__b", "_a", "quarantine", "a" * 64],
)
def test_bad_names_are_refused(bad):
    with pytest.raises(BadName):
        check_name(bad, "corpus name")


def test_space_name_joins_checked_names():
    assert space_name("debian", "minilm") == "debian__minilm"
    with pytest.raises(BadName):
        space_name("debian", "../minilm")

