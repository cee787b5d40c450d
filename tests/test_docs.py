"""The API reference names every public name; ``make docs`` checks that the rest resolves."""

import re
from pathlib import Path

import geventws

REFERENCE = Path(__file__).parent.parent / "docs" / "reference"


def test_every_public_name_is_in_the_api_reference():
    text = "\n".join(page.read_text() for page in REFERENCE.glob("*.rst"))
    documented = set(re.findall(r"^\.\. auto(?:class|function|exception|data):: (?:geventws\.)?(\w+)\s*$", text, re.M))
    assert sorted(set(geventws.__all__) - documented) == []
