"""The only package that imports kraken: its API churn (7.x → 8) stays in here."""
