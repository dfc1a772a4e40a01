from seqtag.cli import entry

entry()
