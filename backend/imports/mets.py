"""The page order a METS file gives (Transkribus exports one, ``mets.xml``, beside the pages).

Its PHYSICAL structMap lists the pages in order (each ``div`` by its ORDER, else as written);
each page's ``fptr``/``area`` names files of the fileSec, whose ``FLocat`` hrefs are the page's
image and PAGE XML. Only the file names count (the hrefs' folders are the exporter's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from untrusted.archive import name_key

METS_NS = "http://www.loc.gov/METS/"
XLINK_NS = "http://www.w3.org/1999/xlink"


@dataclass(frozen=True)
class MetsOrder:
    """Each file name's page index (keys as :func:`untrusted.archive.name_key` makes them)."""

    places: dict[str, int]

    def place(self, *names: str) -> int | None:
        for name in names:
            found = self.places.get(name_key(_last_part(name)))
            if found is not None:
                return found
        return None


def _last_part(href: str) -> str:
    return re.split(r"[\\/]", href)[-1]


def is_mets(root: etree._Element) -> bool:
    name = etree.QName(root)
    return name.namespace == METS_NS and name.localname == "mets"


def mets_order(root: etree._Element) -> MetsOrder:
    hrefs: dict[str, list[str]] = {}
    for file in root.iter(f"{{{METS_NS}}}file"):
        hrefs[file.get("ID") or ""] = [
            location.get(f"{{{XLINK_NS}}}href") or "" for location in file.iter(f"{{{METS_NS}}}FLocat")
        ]
    maps = root.findall(f"{{{METS_NS}}}structMap")
    physical = next((m for m in maps if (m.get("TYPE") or "").upper() == "PHYSICAL"), maps[0] if maps else None)
    if physical is None:
        return MetsOrder({})
    pages = [div for div in physical.iter(f"{{{METS_NS}}}div") if div.find(f"{{{METS_NS}}}fptr") is not None]
    if all((div.get("ORDER") or "").isdigit() for div in pages):
        pages.sort(key=lambda div: int(div.get("ORDER") or 0))
    places: dict[str, int] = {}
    for index, div in enumerate(pages):
        for pointer in div.iter(f"{{{METS_NS}}}fptr", f"{{{METS_NS}}}area"):
            for href in hrefs.get(pointer.get("FILEID") or "", []):
                places.setdefault(name_key(_last_part(href)), index)
    return MetsOrder(places)
