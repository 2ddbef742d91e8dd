"""Importing transcriptions made elsewhere (Transkribus' PAGE XML, eScriptorium's and kraken's ALTO)."""
