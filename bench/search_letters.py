"""Generated German family letters for the search benchmark (bench_search.py): text, OCR errors, the query mix.

Everything is drawn from one seed, so the same ``--lines`` and ``--seed`` give the same archive
and the same queries. A letter is a heading, a greeting, sentences from templates (names,
places, months, farm and family life, feasts, war), a closing and a signature, wrapped into
handwriting-long lines of 38–62 characters, 18–26 lines a page, 1–4 pages (more often 3–4).
What a search must cope with is put in on purpose:

- **spelling of the time and of the writer**: before 1902 some words in the old spelling
  (``Thür``, ``Brod``, ``Theil``); a writer of six writes ``ss`` for ``ß`` throughout, one
  in twenty letters (a typewriter) has ``ae/oe/ue`` for the umlauts;
- **OCR errors**: ``--noise`` of the words in ``ocr_text`` misread as HTR misreads
  (``c``/``e``, ``n``/``u``, ``rn``/``m``, ``ß``/``B``, ``s``/``ſ``-as-``f``, …);
- **corrections**: ``--corrected`` of the lines have a person's text (the clean line),
  their ``ocr_text`` keeps the misreadings;
- **hyphenation**: a long word that does not fit is often broken at a syllable
  (``Weih-`` at the end of one line, ``nachten`` at the start of the next), also across pages.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.db import Database  # noqa: E402
from backend.documents.models import DatePrecision, Document, DocumentStatus, Line, Page, Writer  # noqa: E402
from bench.backend_process import continue_sequences, flush_rows  # noqa: E402
from bench.bench_api import _line_geometry  # noqa: E402

CHUNK = 5000
WRITERS = 8

FIRST_NAMES = (
    "Anna Berta Clara Dora Elise Emma Frieda Gertrud Hedwig Helene Ida Johanna Käthe Lina Luise Margarete "
    "Martha Minna Paula Rosa Sophie Wilhelmine August Bernhard Emil Ernst Franz Friedrich Fritz Georg Gustav "
    "Hans Heinrich Hermann Johann Josef Karl Kurt Ludwig Max Otto Paul Richard Rudolf Walter Wilhelm"
).split()
SURNAMES = (
    "Adam Albrecht Bäcker Barthel Baumgart Brandt Buchholz Dietrich Ebert Fiedler Fleischer Förster Franke "
    "Gebauer Görlich Großmann Hahn Hartmann Heinze Hoffmann Jäger Jahnke Kaiser Kerner Klose Köhler Kowalski "
    "Krause Kretschmer Kühn Lange Lehmann Lorenz Marquardt Meißner Möller Neumann Nowak Oswald Pietsch "
    "Pohl Preuß Rademacher Reimann Richter Rößler Sauer Schimmelpfennig Scholz Schröter Schulze Seidel "
    "Sommerfeld Stolle Thiele Tietze Ullrich Vogt Wagner Weiß Wendt Winkler Wittke Wolff Zander Zimmermann"
).split()
PLACES = (
    "Allenstein Bautzen Breslau Bückeburg Danzig Dresden Elbing Frankfurt Glatz Görlitz Gumbinnen Hamburg "
    "Hannover Insterburg Kassel Kiel Köln Königsberg Leipzig Liegnitz Lübeck Magdeburg Marienburg Memel "
    "München Münster Neisse Nürnberg Oppeln Osnabrück Posen Rostock Schweidnitz Stettin Stolp Thorn Tilsit "
    "Waldenburg Würzburg Zittau"
).split()
MONTHS = "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split()
RELATIVES = "Mutter Vater Großmutter Großvater Tante Onkel Schwester Bruder Schwägerin Schwager Cousine".split()
FEASTS = "Weihnachten Ostern Pfingsten Neujahr Kirmes Erntedankfest Silvester".split()
FOODS = "Butter Speck Wurst Mehl Zucker Kaffee Eier Honig Schmalz Brot".split()
ANIMALS = "Kuh Pferd Schwein Ziege Katze Hund Gans".split()
CROPS = "Kartoffeln Rüben Roggen Weizen Hafer Gerste Äpfel Pflaumen".split()
WEEKDAYS = "Montag Dienstag Mittwoch Donnerstag Freitag Sonnabend Sonntag".split()
# Rare words: a compound of these two lists turns up a few times per 100 000 lines.
RARE_HEADS = (
    "Apfel Birnen Kirsch Pflaumen Kartoffel Rüben Weizen Roggen Hafer Gersten Eichen Buchen Tannen Linden "
    "Holunder Stachelbeer Johannisbeer Erdbeer Himbeer Walnuss"
).split()
RARE_TAILS = "kuchen baum ernte feld garten saft marmelade kompott korb schnaps".split()
RARE_WORDS = tuple(head + tail for head in RARE_HEADS for tail in RARE_TAILS)

SENTENCES = (
    "Deinen lieben Brief vom {day}. {month} haben wir mit großer Freude erhalten.",
    "Wir sind alle gesund und hoffen dasselbe auch von Dir.",
    "Das Wetter ist hier seit Wochen schlecht, es regnet fast jeden Tag.",
    "Die {crop} sind in diesem Jahr gut geraten, Vater ist sehr zufrieden.",
    "Am {weekday} waren wir in {place} bei {relative} {name} zu Besuch.",
    "{name} läßt Dich herzlich grüßen, sie ist wieder ganz gesund.",
    "Zu {feast} kommen alle Kinder nach Hause, das wird eine Freude.",
    "Das Paket mit {food} und {food} ist gut angekommen, vielen Dank dafür.",
    "Hier ist alles beim Alten, nur die {animal} ist seit ein paar Tagen krank.",
    "Vater arbeitet jeden Tag auf dem Hof und im Feld, er wird nicht jünger.",
    "Schreibe bald wieder, wir warten jeden Tag auf Nachricht von Dir.",
    "Der Krieg nimmt kein Ende, wir beten jeden Abend für Dich und die Kameraden.",
    "Weißt Du schon, daß {name} {surname} aus {place} sich verlobt hat?",
    "Die Hochzeit soll im {month} sein, wir sind alle eingeladen.",
    "Mutter hat einen großen {rare} gemacht, Du hättest ihn sehen sollen.",
    "Bei Familie {surname} ist ein kleiner Junge angekommen, er heißt {name}.",
    "Im Garten blühen schon die Bäume, und der {rare} steht auch wieder gut.",
    "Die Schule fängt nach {feast} wieder an, {name} freut sich schon darauf.",
    "Mit der Bahn sind wir nach {place} gefahren, die Fahrt dauerte den ganzen Tag.",
    "Geld ist knapp, aber wir kommen zurecht, mach Dir keine Sorgen um uns.",
    "Onkel {name} hat geschrieben, es geht ihm in {place} recht gut.",
    "Die Kirche war am Sonntag ganz voll, der Herr Pfarrer hat schön gepredigt.",
    "Mit herzlichen Grüßen und Küssen an Dich und die Kinder.",
    "Grüße auch Deine liebe Frau und die Schwiegereltern von uns allen.",
    "Die Ernte ist eingebracht, nun wird gedroschen, es ist viel Arbeit.",
    "Im Winter lag der Schnee so hoch, daß wir kaum zur Thür hinaus konnten.",
    "Das Brod ist teuer geworden, und Butter giebt es kaum noch.",
    "Dein Bruder ist bei den Soldaten in {place}, er schreibt selten.",
    "Wir haben im {month} den {rare} verkauft, der Händler aus {place} war zufrieden.",
    "Zum Geburtstag wünschen wir Dir alles Gute, Gesundheit und Gottes Segen.",
    "Die Großmutter ist sehr schwach geworden, sie liegt meistens im Bett.",
    "Am {day}. {month} ist der alte {surname} gestorben, die Beerdigung war am {weekday}.",
    "Schicke uns doch bitte ein Bild von den Kindern, wir möchten sie so gern sehen.",
    "Auf dem Markt in {place} haben wir eine neue {animal} gekauft.",
    "Die Straße nach {place} ist endlich gepflastert, das war eine große Arbeit.",
    "Wir denken oft an Dich und an die schöne Zeit, als wir alle zusammen waren.",
    "Der Lehrer sagt, {name} ist fleißig und soll auf das Gymnasium gehen.",
    "Im {month} war die Kirmes, es wurde bis in die Nacht getanzt.",
    "Ein Theil der Wiese stand unter Wasser, das Heu ist verdorben.",
    "Herzliche Grüße an alle in {place}, besonders an {relative} {name}.",
)
OPENINGS = ("Liebe {relative}!", "Lieber {relative}!", "Meine liebe {name}!", "Mein lieber {name}!", "Liebe Kinder!")
CLOSINGS = ("Herzliche Grüße", "Viele herzliche Grüße", "Es grüßt Dich herzlich", "Mit vielen Grüßen und Küssen")
SIGNATURES = ("Deine {relative}", "Dein {relative}", "Deine {name}", "Dein treuer {name}", "Deine Eltern")

# Pre-1902 spellings (the Orthographische Konferenz) a letter of that time uses now and then.
OLD_SPELLINGS = {"Tür": "Thür", "Brot": "Brod", "Teil": "Theil", "gibt": "giebt", "Not": "Noth", "Mut": "Muth"}
# Misreadings typical of handwriting recognition: (what is written, what the OCR reads).
MISREADINGS = (
    ("ch", "eh"),
    ("c", "e"),
    ("e", "c"),
    ("n", "u"),
    ("u", "n"),
    ("m", "rn"),
    ("rn", "m"),
    ("h", "b"),
    ("i", "l"),
    ("l", "I"),
    ("ü", "ii"),
    ("ä", "a"),
    ("ö", "o"),
    ("ß", "B"),
    ("s", "f"),
    ("a", "o"),
    ("t", "f"),
    ("d", "cl"),
)
UMLAUT_SPELLING = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
VOWELS = set("aeiouäöüyAEIOUÄÖÜ")
WORD = re.compile(r"\w+")


def misread(word: str, rng: random.Random) -> str:
    """``word`` as an HTR model might misread it: one typical confusion at one place."""
    choices = [(written, read) for written, read in MISREADINGS if written in word]
    if not choices:
        return word
    written, read = rng.choice(choices)
    starts = [m.start() for m in re.finditer(re.escape(written), word)]
    at = rng.choice(starts)
    return word[:at] + read + word[at + len(written) :]


def _break_at(word: str) -> int | None:
    """Where a hyphen may go: before a consonant that begins a syllable (``Weih-nachten``), not inside ``ch``."""
    core = word.rstrip(",.!?;:")
    places = [
        i
        for i in range(3, len(core) - 3)
        if core[i] not in VOWELS
        and core[i + 1] in VOWELS
        and core[i - 1] != "c"
        and not (core[i] == "c" and core[i - 1] == "s")
        and core[i].isalpha()
        and core[i - 1].isalpha()
        and any(c in VOWELS for c in core[:i])
    ]
    return places[len(places) // 2] if places else None


@dataclass
class Letter:
    """One document: its title, writer (index or None), year, and its pages' lines (clean text)."""

    title: str
    writer: int | None
    year: int
    pages: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Author:
    name: str
    slug: str
    # This writer writes "ss" where "ß" belongs (a habit, or a Swiss schooling).
    writes_ss: bool


def writers(count: int) -> list[Author]:
    rng = random.Random(7)
    made: list[Author] = []
    for n in range(count):
        first, last = FIRST_NAMES[(n * 7) % len(FIRST_NAMES)], SURNAMES[(n * 11) % len(SURNAMES)]
        name = f"{first} {last}"
        slug = name.lower().translate(UMLAUT_SPELLING).replace("ß", "ss").replace(" ", "-")
        made.append(Author(name, slug, writes_ss=n % 6 == 5 or rng.random() < 0.05))
    return made


class LetterWriter:
    """Letters, page by page, until a number of lines is reached (the last letter cut short)."""

    def __init__(self, rng: random.Random, writer_list: list[Author]) -> None:
        self.rng = rng
        self.writers = writer_list

    def _fill(self, template: str) -> str:
        rng = self.rng
        slots = {
            "name": lambda: rng.choice(FIRST_NAMES),
            "surname": lambda: rng.choice(SURNAMES),
            "place": lambda: rng.choice(PLACES),
            "month": lambda: rng.choice(MONTHS),
            "day": lambda: str(rng.randint(1, 28)),
            "relative": lambda: rng.choice(RELATIVES),
            "feast": lambda: rng.choice(FEASTS),
            "food": lambda: rng.choice(FOODS),
            "animal": lambda: rng.choice(ANIMALS),
            "crop": lambda: rng.choice(CROPS),
            "weekday": lambda: rng.choice(WEEKDAYS),
            "rare": lambda: rng.choice(RARE_WORDS),
        }
        return re.sub(r"\{(\w+)\}", lambda m: slots[m.group(1)](), template)

    def _spell(self, text: str, year: int, writer: Author | None, typewriter: bool) -> str:
        if year < 1902:
            text = WORD.sub(lambda m: OLD_SPELLINGS.get(m.group(0), m.group(0)), text)
        if writer is not None and writer.writes_ss:
            text = text.replace("ß", "ss")
        if typewriter:
            text = text.translate(UMLAUT_SPELLING)
        return text

    def _wrap(self, words: list[str], width: int) -> list[str]:
        lines: list[str] = []
        current = ""
        for word in words:
            while True:
                if not current:
                    current = word
                    break
                if len(current) + 1 + len(word) <= width:
                    current += " " + word
                    break
                at = _break_at(word) if len(word) >= 8 and self.rng.random() < 0.6 else None
                if at is not None and len(current) + 2 + at <= width + 2:
                    lines.append(f"{current} {word[:at]}-")
                    current, word = "", word[at:]
                    continue
                lines.append(current)
                current = ""
        if current:
            lines.append(current)
        return lines

    def letter(self, year: int) -> Letter:
        rng = self.rng
        writer_index = rng.randrange(len(self.writers)) if rng.random() < 0.9 else None
        writer = self.writers[writer_index] if writer_index is not None else None
        typewriter = rng.random() < 0.05
        pages = rng.choices((1, 2, 3, 4), weights=(1, 2, 3, 4))[0]
        per_page = [rng.randint(18, 26) for _ in range(pages)]
        width = rng.randint(38, 62)
        place = rng.choice(PLACES)
        head = [f"{place}, den {rng.randint(1, 28)}. {rng.choice(MONTHS)} {year}", self._fill(rng.choice(OPENINGS))]
        tail = [self._fill(rng.choice(CLOSINGS)), self._fill(rng.choice(SIGNATURES))]
        body: list[str] = []
        while len(head) + len(body) + len(tail) < sum(per_page):
            sentences = " ".join(self._fill(rng.choice(SENTENCES)) for _ in range(6))
            body.extend(self._wrap(sentences.split(), width))
        body = body[: sum(per_page) - len(head) - len(tail)]
        # The body may end in a broken word; then the closing line carries nothing of it, as in a letter.
        if body and body[-1].endswith("-"):
            body[-1] = body[-1][:-1]
        lines = [self._spell(line, year, writer, typewriter) for line in head + body + tail]
        recipient = rng.choice(RELATIVES)
        who = writer.name if writer is not None else "unbekannt"
        letter = Letter(f"Brief von {who} an {recipient}, {place} {year}", writer_index, year)
        at = 0
        for count in per_page:
            letter.pages.append(lines[at : at + count])
            at += count
        return letter

    def letters(self, total_lines: int) -> Iterator[Letter]:
        made = 0
        while made < total_lines:
            letter = self.letter(self.rng.randint(1890, 1960))
            room = total_lines - made
            kept: list[list[str]] = []
            for page in letter.pages:
                if room <= 0:
                    break
                kept.append(page[:room])
                room -= len(kept[-1])
            letter.pages = kept
            made += sum(len(page) for page in kept)
            yield letter


def generate(
    database: Database, lines: int, seed: int, owner: int, *, noise: float, corrected: float
) -> dict[str, int]:
    """``lines`` lines of letters, ids from 1, in bulk; what was made (counts)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    writer_list = writers(WRITERS)
    counts = dict.fromkeys(("documents", "pages", "lines", "corrected", "hyphenated", "trashed"), 0)
    document_rows: list[dict[str, Any]] = []
    page_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    with database.engine.begin() as connection:
        connection.execute(
            insert(Writer),
            [{"id": n + 1, "name": w.name, "slug": w.slug, "created_at": now} for n, w in enumerate(writer_list)],
        )
        for letter in LetterWriter(rng, writer_list).letters(lines):
            counts["documents"] += 1
            d = counts["documents"]
            trashed = rng.random() < 0.01
            counts["trashed"] += trashed
            precision = rng.choices((DatePrecision.DAY, DatePrecision.MONTH, DatePrecision.YEAR), (8, 1, 1))[0]
            day = date(letter.year, rng.randint(1, 12), rng.randint(1, 28))
            if precision is not DatePrecision.DAY:
                day = day.replace(day=1, month=day.month if precision is DatePrecision.MONTH else 1)
            document_rows.append(
                {
                    "id": d,
                    "title": letter.title,
                    "title_folded": letter.title.casefold(),
                    "writer_id": None if letter.writer is None else letter.writer + 1,
                    "date": day,
                    "date_precision": precision,
                    "original_filename": f"brief-{d}.pdf",
                    "media_type": "application/pdf",
                    "storage_key": f"originals/{d:032x}",
                    "sha256": hashlib.sha256(f"bench search {d}".encode()).hexdigest(),
                    "size_bytes": 1_000_000,
                    "page_count": len(letter.pages),
                    "status": DocumentStatus.DONE if rng.random() < 0.95 else DocumentStatus.PARTIAL,
                    "created_by": owner,
                    "created_at": now - timedelta(seconds=lines - d),
                    "deleted_at": now if trashed else None,
                    "deleted_by": owner if trashed else None,
                }
            )
            for number, page in enumerate(letter.pages, start=1):
                counts["pages"] += 1
                page_rows.append(
                    {
                        "id": counts["pages"],
                        "document_id": d,
                        "number": number,
                        "width": 1240,
                        "height": 1754,
                        "ocr_model": "default",
                        "ocr_at": now,
                    }
                )
                for index, clean in enumerate(page):
                    counts["lines"] += 1
                    counts["hyphenated"] += clean.endswith("-")
                    read = " ".join(misread(word, rng) if rng.random() < noise else word for word in clean.split(" "))
                    is_corrected = rng.random() < corrected
                    counts["corrected"] += is_corrected
                    baseline, polygon = _line_geometry(rng, index)
                    line_rows.append(
                        {
                            "id": counts["lines"],
                            "page_id": counts["pages"],
                            "order_index": index,
                            "baseline": baseline,
                            "polygon": polygon,
                            "ocr_text": read,
                            "ocr_confidence": rng.uniform(0.6, 1.0),
                            "text": clean if is_corrected else None,
                            "corrected_by": owner if is_corrected else None,
                            "corrected_at": now if is_corrected else None,
                            "model_name": "default",
                            "version": 2 if is_corrected else 1,
                        }
                    )
                    if len(line_rows) >= CHUNK:
                        flush_rows(connection, Document, document_rows)
                        flush_rows(connection, Page, page_rows)
                        flush_rows(connection, Line, line_rows)
        flush_rows(connection, Document, document_rows)
        flush_rows(connection, Page, page_rows)
        flush_rows(connection, Line, line_rows)
        continue_sequences(connection)
    return counts


# ---- the query mix ------------------------------------------------------------------------

COMMON_WORDS = (
    "Brief Mutter Vater Sonntag Wetter Hof gesund Kinder Grüße herzlich Freude Arbeit Garten Kirche Tag "
    "Paket Nachricht Schule Ernte Hochzeit Geburtstag Bahn Markt"
).split()
PHRASES = (
    "liebe Mutter",
    "herzlichen Grüßen",
    "auf dem Hof",
    "jeden Tag",
    "Gottes Segen",
    "vielen Dank",
    "beim Alten",
    "gut angekommen",
    "nach Hause",
    "herzlich grüßen",
    "unter Wasser",
    "der Herr Pfarrer",
)
FOLDED = (
    ("Grüße", ("Gruesse", "Grüsse", "Grusse", "GRÜSSE")),
    ("Straße", ("Strasse", "STRASSE", "strasse")),
    ("Bäume", ("Baeume", "baume")),
    ("Großmutter", ("Grossmutter", "Grossmutter", "grossmutter")),
    ("Thür", ("Tür", "Thuer")),
    ("Brod", ("Brot",)),
    ("Küssen", ("Kuessen", "Kussen")),
    ("fängt", ("faengt",)),
    ("läßt", ("lässt", "laesst", "lasst")),
    ("daß", ("dass",)),
    ("Köln", ("Koeln", "koln")),
    ("Müller", ("Mueller",)),
    ("Würzburg", ("Wuerzburg",)),
)
FUZZY_WORDS = tuple(w for w in (*COMMON_WORDS, *FEASTS, *CROPS, *PLACES, *RELATIVES) if len(w) >= 6)
EXCLUDED = ("Krieg", "Kirmes", "Hochzeit", "Schnee", "Geld", "Soldaten")
KINDS = ("common", "rare", "name", "fuzzy", "folded", "phrase", "exclusion")
KIND_WEIGHTS = (20, 15, 15, 15, 10, 15, 10)


@dataclass(frozen=True)
class Query:
    kind: str
    params: dict[str, str]


def queries(rng: random.Random, writer_list: list[Author], count: int) -> list[Query]:
    """``count`` searches of every kind (weighted), a third of them with a filter, a tenth asking for page 2."""
    made: list[Query] = []
    for kind in rng.choices(KINDS, weights=KIND_WEIGHTS, k=count):
        if kind == "common":
            q = rng.choice(COMMON_WORDS)
        elif kind == "rare":
            q = rng.choice(RARE_WORDS) if rng.random() < 0.7 else rng.choice(SURNAMES)
        elif kind == "name":
            q = rng.choice(FIRST_NAMES) if rng.random() < 0.5 else rng.choice(PLACES)
        elif kind == "fuzzy":
            q = misread(rng.choice(FUZZY_WORDS), rng)
        elif kind == "folded":
            q = rng.choice(rng.choice(FOLDED)[1])
        elif kind == "phrase":
            q = f'"{rng.choice(PHRASES)}"'
        else:
            q = f"{rng.choice(COMMON_WORDS + FEASTS)} -{rng.choice(EXCLUDED)}"
        params = {"q": q.lower() if rng.random() < 0.3 else q}
        roll = rng.random()
        if roll < 0.12:
            params["writer"] = rng.choice(writer_list).slug
        elif roll < 0.24:
            start = rng.randint(1890, 1950)
            params |= {"dateFrom": f"{start}-01-01", "dateTo": f"{start + rng.randint(1, 10)}-12-31"}
        elif roll < 0.3:
            params["status"] = "DONE"
        if rng.random() < 0.1:
            params["page"] = "2"
        made.append(Query(kind, params))
    return made
