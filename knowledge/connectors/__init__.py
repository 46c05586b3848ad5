"""Connectors: where a company keeps its documents, synced incrementally into the index.

A source is declared in the sources file (:mod:`knowledge.connectors.config`); its ``kind`` names the module here
that reads it (``folder``, ``git``). Every connector speaks the small :class:`~knowledge.connectors.base.Connector`
protocol — what changed since a cursor, fetch one document, what was deleted — and
:mod:`knowledge.connectors.sync` keeps a local mirror of each source up to date and builds the knowledge base's
next index version from the mirrors of all its sources.
"""
