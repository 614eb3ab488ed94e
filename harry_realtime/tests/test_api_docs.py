"""The API documentation pages load nothing from the internet, and the schema's public text
carries no developer notes."""

import re

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/redoc/", "/api/docs/"])
def test_doc_pages_load_only_local_assets(client, path):
    page = client.get(path).content.decode()
    assert re.findall(r'(?:src|href)="(?:https?:)?//', page) == []
    assert "fonts.googleapis" not in page and "fonts.gstatic" not in page


def test_the_schema_has_no_developer_notes(client):
    schema = client.get("/api/schema/").content.decode()
    assert "paths:" in schema
    for note in ("tenant_transaction", "self.tenant", "Views whose service"):
        assert note not in schema
