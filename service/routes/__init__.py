"""One module per resource: tagging, models, dictionaries, health (and the demo page)."""
