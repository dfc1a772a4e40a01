"""seqtag's HTTP service: ``create_app()`` in :mod:`service.app`, ``run()`` in :mod:`service.main`."""
