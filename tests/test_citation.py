"""CITATION.cff: valid Citation File Format 1.2.0, and in step with pyproject.toml and book/references.bib.

cffconvert, the format's own validator, cannot be installed beside the book (its 2.0.0 needs
jsonschema < 4; jupyter-events needs >= 4.18), so the file is checked against the part of the
CFF 1.2.0 schema it uses: the required keys, the allowed keys at the top level and in a reference,
the person and entity shapes, the enumerations.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import jsonschema  # installed with nbformat (the book's notebooks)
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# From the CFF 1.2.0 schema (schema.json of citation-file-format 1.2.0): names and required keys.
PERSON = {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {k: {"type": "string"} for k in (
    "family-names", "given-names", "name-particle", "name-suffix", "affiliation", "email", "orcid", "alias",
    "website", "address", "city", "country", "post-code", "region", "tel", "fax")}}
ENTITY = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {k: {"type": "string"} for k in (
    "name", "address", "alias", "city", "country", "email", "fax", "location", "orcid", "post-code", "region",
    "tel", "website", "date-start", "date-end")}}
AUTHORS = {"type": "array", "minItems": 1, "items": {"oneOf": [PERSON, ENTITY]}}
IDENTIFIERS = {"type": "array", "minItems": 1, "items": {
    "type": "object", "additionalProperties": False, "required": ["type", "value"],
    "properties": {"type": {"enum": ["doi", "url", "swh", "other"]}, "value": {"type": "string"},
                   "description": {"type": "string"}}}}
REFERENCE_KEYS = (
    "abbreviation abstract authors collection-doi collection-title collection-type commit conference contact "
    "copyright data-type database database-provider date-accessed date-downloaded date-published date-released "
    "department doi edition editors editors-series end entry filename format identifiers institution isbn issn "
    "issue issue-date issue-title journal keywords languages license license-url loc-end loc-start location medium "
    "month nihmsid notes number number-volumes pages patent-states pmcid publisher recipients repository "
    "repository-artifact repository-code scope section senders start status term thesis-type title translators "
    "type url version volume volume-title year year-original").split()
REFERENCE_TYPES = (
    "art article audiovisual bill blog book catalogue conference conference-paper data database dictionary "
    "edited-work encyclopedia film-broadcast generic government-document grant hearing historical-work "
    "legal-case legal-rule magazine-article manual map multimedia music newspaper-article pamphlet patent "
    "personal-communication proceedings report serial slides software software-code software-container "
    "software-executable software-virtual-machine sound-recording standard statute thesis unpublished video "
    "website").split()
REFERENCE = {
    "type": "object", "additionalProperties": False, "required": ["authors", "title", "type"],
    "properties": {**{k: {} for k in REFERENCE_KEYS}, "authors": AUTHORS, "title": {"type": "string", "minLength": 1},
                   "type": {"enum": REFERENCE_TYPES}, "identifiers": IDENTIFIERS, "publisher": ENTITY,
                   "year": {"type": "integer"}, "volume": {"type": ["integer", "string"]},
                   "start": {"type": ["integer", "string"]}, "end": {"type": ["integer", "string"]}},
}
CFF_1_2_0 = {
    "type": "object", "additionalProperties": False, "required": ["authors", "cff-version", "message", "title"],
    "properties": {
        "cff-version": {"const": "1.2.0"}, "message": {"type": "string", "minLength": 1},
        "title": {"type": "string", "minLength": 1}, "authors": AUTHORS, "type": {"enum": ["dataset", "software"]},
        "abstract": {"type": "string"}, "version": {"type": ["string", "number"]}, "license": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}}, "preferred-citation": REFERENCE,
        "references": {"type": "array", "items": REFERENCE}, "identifiers": IDENTIFIERS,
        **{k: {"type": "string"} for k in ("commit", "date-released", "doi", "license-url", "repository",
                                            "repository-artifact", "repository-code", "url")},
        "contact": AUTHORS,
    },
}


@pytest.fixture(scope="module")
def cff() -> dict:
    return yaml.safe_load((REPO / "CITATION.cff").read_text())


def test_citation_file_is_valid_cff_1_2_0(cff):
    jsonschema.validate(cff, CFF_1_2_0)
    # the checker checks: a typo in a key and a missing required key are both errors
    for broken in ({**cff, "authros": cff["authors"]}, {k: v for k, v in cff.items() if k != "message"},
                   {**cff, "preferred-citation": {**cff["preferred-citation"], "type": "paper"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, CFF_1_2_0)


def test_citation_names_this_version_and_the_paper_as_the_bibliography_does(cff):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert str(cff["version"]) == project["version"]
    assert cff["license"] == project["license"]["text"]
    from pybtex.database import parse_file  # sphinxcontrib-bibtex's parser

    paper = parse_file(str(REPO / "book" / "references.bib")).entries["defard2021padim"]
    cited = cff["preferred-citation"]
    assert cited["title"] == paper.fields["title"].replace("{", "").replace("}", "")
    assert [(a["family-names"], a["given-names"]) for a in cited["authors"]] == [
        (" ".join(p.last_names), " ".join(p.first_names)) for p in paper.persons["author"]]
    assert cited["year"] == int(paper.fields["year"]) and str(cited["volume"]) == paper.fields["volume"]
    assert f"{cited['start']}--{cited['end']}" == paper.fields["pages"]
