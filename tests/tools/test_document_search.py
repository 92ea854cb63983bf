"""search and get_document: full-text search over uploaded documents, per team."""

from __future__ import annotations

import pytest

from accounts.models import Team
from tools.models import Document

from .builtin_support import call, data, granted_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def library(transactional_db):
    red, blue = Team.objects.create(name="red"), Team.objects.create(name="blue")
    docs = {
        "deploy": Document.objects.create(team=red, title="Deploying the gateway",
                                          content="To deploy, run the migrations, then restart the workers. "
                                                  "Deployments happen on Tuesdays."),
        "style": Document.objects.create(team=None, title="Code style",
                                         content="Small functions. A deploy script is code too."),
        "secret": Document.objects.create(team=blue, title="Blue's deploy notes",
                                          content="Blue deploys with its own pipeline."),
        "other": Document.objects.create(team=red, title="Lunch", content="Pizza on Fridays."),
    }
    return red, blue, docs


async def test_it_finds_the_teams_and_shared_documents_best_first_with_snippets(library):
    red, _, docs = library
    results = data(await call(await granted_key(red), "search", {"query": "deploying"}))["results"]
    assert [r["id"] for r in results] == [docs["deploy"].id, docs["style"].id]  # the title match first
    assert "[" in results[0]["snippet"] and "]" in results[0]["snippet"]
    assert results[0]["rank"] > results[1]["rank"]


async def test_another_teams_document_is_never_found_or_read(library):
    red, blue, docs = library
    key = await granted_key(red)
    found = data(await call(key, "search", {"query": "pipeline blue"}))["results"]
    assert docs["secret"].id not in [r["id"] for r in found]
    refused = await call(key, "get_document", {"id": docs["secret"].id})
    assert refused.error_code == "not_found" and refused.content == f"There is no document {docs['secret'].id}."
    assert data(await call(await granted_key(blue), "get_document", {"id": docs["secret"].id}))["title"]


async def test_query_syntax_is_only_words(library):
    red, _, docs = library
    key = await granted_key(red)
    for query in ('"deploy', "deploy AND NOT", "title:deploy*", "deploy) OR (", "NEAR(deploy"):
        result = await call(key, "search", {"query": query})
        assert not result.is_error, result.content
        assert docs["deploy"].id in [r["id"] for r in data(result)["results"]]
    assert data(await call(key, "search", {"query": "!!! ???"}))["results"] == []


async def test_the_index_follows_edits_and_deletions(library):
    red, _, docs = library
    key = await granted_key(red)
    docs["other"].content = "Kubernetes rollout checklist"
    await docs["other"].asave()
    assert [r["id"] for r in data(await call(key, "search", {"query": "kubernetes"}))["results"]] == [
        docs["other"].id]
    await docs["other"].adelete()
    assert data(await call(key, "search", {"query": "kubernetes"}))["results"] == []


async def test_get_document_reads_in_parts(library):
    red, _, docs = library
    key = await granted_key(red)
    first = data(await call(key, "get_document", {"id": docs["deploy"].id, "max_chars": 10}))
    assert first["text"] == docs["deploy"].content[:10] and first["next_offset"] == 10
    rest = data(await call(key, "get_document", {"id": docs["deploy"].id, "offset": 10, "max_chars": 50_000}))
    assert first["text"] + rest["text"] == docs["deploy"].content and rest["next_offset"] is None


async def test_a_document_at_the_size_cap_made_of_unique_words_is_still_searchable(library):
    import random
    import string

    from tools.services import MAX_DOCUMENT_BYTES

    red, _, docs = library
    rng = random.Random(7)
    words, size = [], 0
    while size < MAX_DOCUMENT_BYTES - 20:
        word = "".join(rng.choices(string.ascii_lowercase, k=6))
        words.append(word)
        size += 7
    content = " ".join(words) + " zebracorn"
    assert len(content.encode()) <= MAX_DOCUMENT_BYTES
    big = await Document.objects.acreate(team=red, title="Noise", content=content)
    key = await granted_key(red)
    results = data(await call(key, "search", {"query": "zebracorn deploying"}))["results"]
    assert big.id in [r["id"] for r in results] and docs["deploy"].id in [r["id"] for r in results]
