"""PostgreSQL's ``search_lines.tsv`` made from the row's own columns, in a given revision's format,
and the facts' triggers of revision 0008 (made by 0008, made again by 0010's way down).

Migration 0006 fills the index with the code of the day (backend/search/index.py), which writes
the newest format; the revisions between must still find theirs, and a downgrade must write the
older one again. Both formats are made here from ``own``, ``joined`` and ``bridge`` alone, so a
revision's rows never depend on what the code writes later.
"""

from __future__ import annotations

# Each statement rewrites every row.

# 0006–0009: the line's own words at their positions with weight A, the joined word after them
# (A), the next line's words after that (B). The facts (weight C) are added by each revision.
REWRITE_WEIGHTED = """UPDATE search_lines SET tsv = (
    SELECT coalesce(string_agg(
        '''' || replace(replace(word, '\\', '\\\\'), '''', '''''') || ''':' || place || weight, ' '), '')
    FROM (
        SELECT word, place, 'A' AS weight FROM unnest(string_to_array(own, ' ')) WITH ORDINALITY AS o(word, place)
        UNION ALL
        SELECT joined, cardinality(string_to_array(own, ' ')) + 1, 'A' WHERE joined <> ''
        UNION ALL
        SELECT word, place + cardinality(string_to_array(own, ' ')) + (joined <> '')::int, 'B'
        FROM unnest(string_to_array(bridge, ' ')) WITH ORDINALITY AS b(word, place)
    ) AS lexemes WHERE word <> '')::tsvector"""

# 0010 on: no positions nor weights; the own and the joined words as they are, the next line's
# others marked ``>`` (backend/search/index.py, BRIDGE_MARK). The facts (marked ``#``) are added
# by the revision's trigger.
REWRITE_MARKED = """UPDATE search_lines SET tsv = array_to_tsvector(ARRAY(
    SELECT DISTINCT word FROM unnest(
        string_to_array(own, ' ')
        || CASE WHEN joined <> '' THEN ARRAY[joined] ELSE '{}'::text[] END
        || ARRAY(SELECT '>' || next FROM unnest(string_to_array(bridge, ' ')) AS next
                 WHERE next <> '' AND NOT next = ANY(string_to_array(own, ' ') || ARRAY[joined]))
    ) AS word WHERE word <> ''))"""

# 0008: the facts with weight C, put in by a BEFORE trigger (whatever Python wrote with weight C is
# replaced), and renewed when a document's writer or year changes.
FACTS_FUNCTION_0008 = """CREATE OR REPLACE FUNCTION search_lines_facts() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        facts text;
    BEGIN
        SELECT concat_ws(' ',
            CASE WHEN new.corrected THEN 'c:1C' END,
            'w' || d.writer_id || ':1C',
            'y' || extract(year FROM d.date)::int || ':1C')
        INTO facts
        FROM (SELECT 1) AS one LEFT JOIN documents d ON d.id = new.document_id;
        new.tsv := ts_filter(new.tsv, '{a,b}') || facts::tsvector;
        RETURN new;
    END $$"""

DOCUMENT_TRIGGER_0008 = """CREATE TRIGGER documents_search_facts AFTER UPDATE OF writer_id, date ON documents
        FOR EACH ROW WHEN (old.writer_id IS DISTINCT FROM new.writer_id
            OR extract(year FROM old.date) IS DISTINCT FROM extract(year FROM new.date))
        EXECUTE FUNCTION documents_search_facts()"""
