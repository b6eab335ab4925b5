"""Factories for the Qdrant and Pinecone entries of the contract suite (tests/test_store_contract.py).

Each skips when its extra is missing. The Pinecone factory runs the real SDK against the loopback fake
(`pinecone_fake.py`), started once per test session; every store gets a fresh index of dimension 8 (the suite's D)
with the asked metric. The key goes through an environment variable, so spawned writer processes find it too.
"""
import atexit
import itertools
import os

import pytest

FAKE_KEY_ENV = 'QSTORE_TEST_PINECONE_KEY'
_fake = []
_index_names = itertools.count()


def qdrant_store(tmp_path, metric):
    "A QdrantStore in local mode on a directory (qdrant-client's embedded engine)."
    pytest.importorskip('qdrant_client')
    from qstore.storage.qdrant import QdrantStore
    return QdrantStore(tmp_path / 'qdrant', metric=metric)


def pinecone_fake():
    "The session's Pinecone fake, started on first use."
    if not _fake:
        from pinecone_fake import PineconeFake
        _fake.append(PineconeFake().start())
        atexit.register(_fake[0].stop)
        os.environ[FAKE_KEY_ENV] = _fake[0].api_key
    return _fake[0]


def pinecone_store(tmp_path, metric, dimension=8):
    "A PineconeStore (real SDK) on a fresh index of the loopback fake."
    pytest.importorskip('pinecone')
    from qstore.storage.pinecone import PineconeStore
    host = pinecone_fake().create_index(f"index-{next(_index_names)}", dimension, metric)
    return PineconeStore(host, api_key_env=FAKE_KEY_ENV)
