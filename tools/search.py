"""Full-text search over operator-uploaded Documents, for the built-in `search` tool.

PostgreSQL: its own full-text search (to_tsvector / plainto_tsquery, ts_rank,
ts_headline for the snippet), computed over the table, so nothing needs keeping
in step. SQLite: the FTS5 index migration 0002 creates and triggers keep current
(bm25 rank, snippet()). Both match documents containing any of the query's words
(ranked: more of them, and rarer ones, first), and only documents of the caller's
team or shared ones (team empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import reduce
from operator import or_

from django.db import connection
from django.db.models import F, Q

from tools.models import Document

MAX_WORDS = 20
SNIPPET_WORDS = 24
WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Hit:
    id: int
    title: str
    snippet: str
    rank: float


def query_words(text: str) -> list[str]:
    """The query's words, deduplicated, lower case: never the query's syntax (a
    model's quotes, dashes or operators are not a way into the search engine's)."""
    return list(dict.fromkeys(word.lower() for word in WORD.findall(text)))[:MAX_WORDS]


def visible_documents(team_id: int):
    return Document.objects.filter(Q(team_id=team_id) | Q(team__isnull=True))


def documents_search(*, team_id: int, text: str, limit: int = 5) -> list[Hit]:
    words = query_words(text)
    if not words:
        return []
    if connection.vendor == "postgresql":
        return _postgres(team_id, words, limit)
    if connection.vendor == "sqlite":
        return _sqlite(team_id, words, limit)
    return _contains(team_id, words, limit)


def _postgres(team_id: int, words: list[str], limit: int) -> list[Hit]:
    from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank, SearchVector

    query = reduce(or_, (SearchQuery(word, config="english") for word in words))
    vector = SearchVector("title", weight="A", config="english") + SearchVector("content", weight="B",
                                                                                  config="english")
    rows = (visible_documents(team_id).annotate(rank=SearchRank(vector, query))
            .filter(rank__gt=0)
            .annotate(snippet=SearchHeadline("content", query, config="english", start_sel="[", stop_sel="]",
                                             max_words=SNIPPET_WORDS, min_words=8, max_fragments=2,
                                             fragment_delimiter=" … "))
            .order_by(F("rank").desc(), "id")[:limit])
    return [Hit(d.id, d.title, d.snippet, float(d.rank)) for d in rows]


def _sqlite(team_id: int, words: list[str], limit: int) -> list[Hit]:
    # Each word quoted: a string, never FTS5 syntax. OR: any word matches; bm25 ranks
    # (lower is better in SQLite, so it is negated), a title match weighing 5 times.
    match = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
    sql = ("SELECT d.id, d.title, snippet(tools_document_fts, 1, '[', ']', ' … ', %s), "
           "-bm25(tools_document_fts, 5.0, 1.0) FROM tools_document_fts "
           "JOIN tools_document d ON d.id = tools_document_fts.rowid "
           "WHERE tools_document_fts MATCH %s AND (d.team_id = %s OR d.team_id IS NULL) "
           "ORDER BY bm25(tools_document_fts, 5.0, 1.0), d.id LIMIT %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [SNIPPET_WORDS, match, team_id, limit])
        return [Hit(row[0], row[1], row[2], float(row[3])) for row in cursor.fetchall()]


def _contains(team_id: int, words: list[str], limit: int) -> list[Hit]:
    """Any other database: documents containing the words, most words first (no stemming)."""
    hits = []
    for document in visible_documents(team_id).filter(reduce(or_, (Q(content__icontains=w) | Q(title__icontains=w)
                                                                   for w in words))):
        text = f"{document.title}\n{document.content}".lower()
        hits.append(Hit(document.id, document.title, _window(document.content, words),
                        float(sum(text.count(w) for w in words))))
    return sorted(hits, key=lambda h: (-h.rank, h.id))[:limit]


def _window(content: str, words: list[str]) -> str:
    lower = content.lower()
    at = min((i for i in (lower.find(w) for w in words) if i >= 0), default=0)
    return content[max(0, at - 80):at + 160]
