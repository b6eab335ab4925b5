"""A loopback fake of Pinecone's data-plane REST API, for running the real `pinecone` SDK in tests.

It implements the endpoints storage.md §2 lists, with the JSON shapes the SDK (10.x) sends and decodes:
`POST /vectors/upsert`, `POST /query`, `GET /vectors/fetch`, `POST /vectors/fetch_by_metadata`,
`POST /vectors/delete`, `POST /describe_index_stats`. One server holds many indexes: an index's host is
`http://127.0.0.1:<port>/<index name>` (the SDK appends the endpoint path to the host). Search is a float64
brute force over a per-namespace matrix cached until the next write.

Assumptions, where Pinecone's behaviour is not observable here (no Pinecone Local: it needs Docker):
* vectors are stored as float32 and scores are float32; `euclidean` scores are squared distances (lower is nearer),
  `cosine` and `dotproduct` scores are similarities;
* metadata numbers are stored as 64-bit floats, so they come back as floats (3 -> 3.0); lists hold strings only;
* filters are evaluated with qstore's `compile_filter`, which implements Pinecone's documented operators
  (`$eq $ne $gt $gte $lt $lte $in $nin $exists $and $or`); an invalid filter is a 400;
* a namespace exists while it holds vectors; writes are visible at once (real Pinecone is eventually consistent);
* `readUnits` are arbitrary; at most 1000 vectors per upsert and top_k <= 10,000, as Pinecone documents.

    with PineconeFake() as fake:
        host = fake.create_index('demo', dimension=8, metric='cosine')
        index = pinecone.Pinecone(api_key=fake.api_key).Index(host=host)
"""
import secrets
import socket
import threading
import time

import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from qstore.storage.vectors import compile_filter

METRICS = ('cosine', 'dotproduct', 'euclidean')
MAX_UPSERT, MAX_TOP_K, PAGE = 1000, 10_000, 100


class FakeIndex:
    "One index: a fixed dimension and metric, and namespaces of id -> (float32 vector, metadata)."
    def __init__(self, dimension, metric):
        assert metric in METRICS, metric
        self.dimension, self.metric, self.namespaces, self._views = dimension, metric, {}, {}

    def rows(self, namespace):
        return self.namespaces.get(namespace, {})

    def changed(self, namespace):
        self._views.pop(namespace, None)

    def view(self, namespace):
        "(ids, float64 matrix, squared norms, metadata list, filter-mask cache) of a namespace, rebuilt after writes."
        if namespace not in self._views:
            rows = self.rows(namespace)
            ids = list(rows)
            M = np.array([rows[i][0] for i in ids], np.float64).reshape(len(ids), self.dimension)
            self._views[namespace] = (ids, M, np.einsum('ij,ij->i', M, M), [rows[i][1] for i in ids], {})
        return self._views[namespace]

    def mask(self, namespace, filter):
        "Boolean mask of the rows matching a filter (None: all)."
        ids, _, _, metas, masks = self.view(namespace)
        if not filter: return np.ones(len(ids), bool)
        key = orjson.dumps(filter, option=orjson.OPT_SORT_KEYS)
        if key not in masks:
            test = compile_filter(filter)
            masks[key] = np.fromiter((test(m) for m in metas), bool, len(metas))
        return masks[key]


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def _json(payload, status=200):
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type='application/json')


def _check_metadata(md):
    if md is None: return {}
    if not isinstance(md, dict): raise ApiError(400, 'metadata must be an object')
    out = {}
    for k, v in md.items():
        if isinstance(v, bool) or isinstance(v, str): out[k] = v
        elif isinstance(v, (int, float)): out[k] = float(v)
        elif isinstance(v, list) and all(isinstance(x, str) for x in v): out[k] = list(v)
        else: raise ApiError(400, f"Metadata value for field {k!r} must be a string, number, boolean or list of "
                                  "strings")
    return out


class PineconeFake:
    "Serve the fake on 127.0.0.1 (a free port) in a background thread; `create_index` returns an index host."
    def __init__(self):
        self.api_key = 'fake-' + secrets.token_hex(8)
        self.indexes: dict[str, FakeIndex] = {}
        self.lock = threading.Lock()
        self.requests, self.handler_seconds = 0, 0.0  # requests served; time inside the endpoint handlers
        routes = [Route('/{path:path}', self.dispatch, methods=['GET', 'POST'])]
        self.app = Starlette(routes=routes)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it: no 40 ms stalls
        self.sock.bind(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level='warning', lifespan='off'))
        self.thread = threading.Thread(target=self.server.run, kwargs={'sockets': [self.sock]}, daemon=True)

    def start(self):
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive(): raise RuntimeError('the Pinecone fake did not start')
            threading.Event().wait(0.01)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self): return self.start()
    def __exit__(self, *exc): self.stop()

    def create_index(self, name, dimension, metric='cosine') -> str:
        "Create an empty index (qstore's 'dot' is Pinecone's 'dotproduct') and return its host URL."
        with self.lock:
            self.indexes[name] = FakeIndex(dimension, 'dotproduct' if metric == 'dot' else metric)
        return f"http://127.0.0.1:{self.port}/{name}"

    async def dispatch(self, request):
        self.requests += 1
        if request.headers.get('api-key') != self.api_key:
            return _json({'error': {'code': 'UNAUTHENTICATED', 'message': 'Invalid API Key'}, 'status': 401}, 401)
        name, _, endpoint = request.path_params['path'].partition('/')
        handler = ENDPOINTS.get((request.method, endpoint))
        if handler is None or name not in self.indexes:
            return _json({'code': 5, 'message': f"Not Found: {request.url.path}"}, 404)
        body = orjson.loads(await request.body() or b'{}') if request.method == 'POST' else request.query_params
        try:
            with self.lock:
                t = time.perf_counter()
                try: return _json(handler(self.indexes[name], body))
                finally: self.handler_seconds += time.perf_counter() - t
        except ApiError as e: return _json({'code': 3, 'message': e.message, 'details': []}, e.status)
        except (ValueError, TypeError) as e: return _json({'code': 3, 'message': str(e), 'details': []}, 400)


def _upsert(index, body):
    vectors, ns = body.get('vectors') or [], body.get('namespace', '')
    if len(vectors) > MAX_UPSERT: raise ApiError(400, f"upsert takes at most {MAX_UPSERT} vectors per request")
    rows = {}
    for v in vectors:
        values = np.asarray(v.get('values', []), np.float32)
        if values.shape != (index.dimension,):
            raise ApiError(400, f"Vector dimension {values.size} does not match the dimension of the index "
                                f"{index.dimension}")
        rows[v['id']] = (values, _check_metadata(v.get('metadata')))
    index.namespaces.setdefault(ns, {}).update(rows)  # all or nothing: checked before writing
    index.changed(ns)
    return {'upsertedCount': len(rows)}


def _scores(index, view, q):
    "float32 scores of every row (computed in float64 from the float32 values)."
    _, M, sq, _, _ = view
    q = q.astype(np.float64)
    s = M @ q
    if index.metric == 'cosine': s /= np.sqrt(sq) * np.linalg.norm(q)
    elif index.metric == 'euclidean': s = sq - 2 * s + q @ q
    return s.astype(np.float32)


def _query(index, body):
    top_k, ns = body.get('topK'), body.get('namespace', '')
    if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K: raise ApiError(400, f"topK must be in 1..{MAX_TOP_K}")
    rows = index.rows(ns)
    if 'id' in body: q = rows[body['id']][0] if body['id'] in rows else None
    else: q = np.asarray(body.get('vector', []), np.float32)
    if q is not None and q.shape != (index.dimension,):
        raise ApiError(400, f"Query vector dimension {q.size} does not match the dimension of the index "
                            f"{index.dimension}")
    view = index.view(ns)
    cols = np.flatnonzero(index.mask(ns, body.get('filter')))
    matches = []
    if cols.size and q is not None:
        scores = _scores(index, view, q)[cols]
        for j in np.argsort(scores if index.metric == 'euclidean' else -scores, kind='stable')[:top_k]:
            i = view[0][cols[j]]
            m = {'id': i, 'score': float(scores[j])}
            if body.get('includeValues'): m['values'] = rows[i][0].tolist()
            if body.get('includeMetadata') and rows[i][1]: m['metadata'] = rows[i][1]
            matches.append(m)
    return {'matches': matches, 'namespace': ns, 'usage': {'readUnits': 5}}


def _record(i, values, md):
    return {'id': i, 'values': values.tolist(), **({'metadata': md} if md else {})}


def _fetch(index, params):
    ns = params.get('namespace', '')
    rows = index.rows(ns)
    vectors = {i: _record(i, *rows[i]) for i in params.getlist('ids') if i in rows}
    return {'vectors': vectors, 'namespace': ns, 'usage': {'readUnits': 1}}


def _fetch_by_metadata(index, body):
    ns, limit = body.get('namespace', ''), body.get('limit') or PAGE
    if not body.get('filter'): raise ApiError(400, 'filter must not be empty')
    view_ids = index.view(ns)[0]
    ids = sorted(view_ids[j] for j in np.flatnonzero(index.mask(ns, body['filter'])))
    start = int(body.get('paginationToken') or 0)
    page = ids[start:start + limit]
    out = {'vectors': {i: _record(i, *index.rows(ns)[i]) for i in page}, 'namespace': ns, 'usage': {'readUnits': 1}}
    if start + limit < len(ids): out['pagination'] = {'next': str(start + limit)}
    return out


def _delete(index, body):
    ns = body.get('namespace', '')
    rows = index.rows(ns)
    if body.get('deleteAll'): doomed = list(rows)
    elif body.get('ids') is not None: doomed = [i for i in body['ids'] if i in rows]
    elif body.get('filter'):
        doomed = [index.view(ns)[0][j] for j in np.flatnonzero(index.mask(ns, body['filter']))]
    else: raise ApiError(400, 'delete needs ids, deleteAll or filter')
    for i in doomed: del rows[i]
    index.changed(ns)
    if not rows: index.namespaces.pop(ns, None)  # an empty namespace disappears
    return {}


def _stats(index, body):
    namespaces = {ns or '__default__': {'vectorCount': len(rows)} for ns, rows in index.namespaces.items() if rows}
    return {'namespaces': namespaces, 'dimension': index.dimension, 'indexFullness': 0.0,
            'totalVectorCount': sum(len(r) for r in index.namespaces.values()), 'metric': index.metric,
            'vectorType': 'dense'}


ENDPOINTS = {('POST', 'vectors/upsert'): _upsert, ('POST', 'query'): _query, ('GET', 'vectors/fetch'): _fetch,
             ('POST', 'vectors/fetch_by_metadata'): _fetch_by_metadata, ('POST', 'vectors/delete'): _delete,
             ('POST', 'describe_index_stats'): _stats}
