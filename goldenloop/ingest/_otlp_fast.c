/*
 * goldenloop.ingest._otlp_fast: a hand-written decoder for OTLP/protobuf trace
 * export requests (opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest).
 *
 * decode(body, RawSpan, RawEvent) -> list[RawSpan] | None
 *
 * It reads the wire format directly and builds the same RawSpans as the pure-Python
 * path in goldenloop/ingest/otlp.py (which parses with the protobuf message classes
 * and walks them). It only handles what it can decode exactly: on anything unusual
 * (malformed wire data, invalid UTF-8, a known field with an unexpected wire type, a
 * singular message field that occurs twice and that protobuf would merge, groups,
 * deep nesting) it returns None and the caller decodes the body with the Python path,
 * which produces the error message or the merged result. Unknown fields with a valid
 * wire type are skipped, as protobuf skips them. Strings that the Python path never
 * reads (trace_state, schema_url, ...) are still checked for valid UTF-8 and messages
 * it never reads (links, scope attributes, entity refs) are still walked, because the
 * protobuf parser rejects a body with bad ones.
 *
 * Every parse function returns D_OK, D_BAIL (fall back to Python, no exception set)
 * or D_ERR (a Python exception is set, e.g. MemoryError) and owns nothing on return
 * except what it hands out.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define D_OK 0
#define D_BAIL 1
#define D_ERR (-1)

/* Message nesting (the request is depth 1) beyond which we leave the body to the
 * Python path; protobuf's own limit is 100. Also bounds the C recursion. */
#define MAX_DEPTH 64

#define WT_VARINT 0
#define WT_I64 1
#define WT_LEN 2
#define WT_I32 5

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Buf;

/* Attribute keys repeat in every span: a small direct-mapped cache per decode() call
 * hands out one str object per distinct short ASCII key, already hashed, instead of
 * a new string each time. (Which equal str object a dict holds makes no difference.) */
#define KEY_CACHE_SIZE 256 /* a power of 2 */
#define KEY_CACHE_MAX_LEN 64

typedef struct {
    PyObject *span_cls;
    PyObject *event_cls;
    PyObject *keys[KEY_CACHE_SIZE];
} Ctx;

/* RawSpan(...) is called with its fields in this order, positionally (a keyword call
 * costs a dict per span); the module exports the order as RAW_SPAN_FIELDS so that
 * goldenloop.ingest.otlp checks it against the dataclass before using decode(). */
#define SPAN_NFIELDS 13
static const char *const span_field_names[SPAN_NFIELDS] = {
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "attributes",
    "resource",
    "events",
    "status_code",
    "status_message",
    "otel_kind",
    "scope_name",
};

static const char hex_digits[] = "0123456789abcdef";

/* -- wire primitives ------------------------------------------------------------------ */

static inline int
rd_varint(Buf *b, uint64_t *out)
{
    const uint8_t *p = b->p;
    if (p < b->end && *p < 0x80) {
        *out = *p;
        b->p = p + 1;
        return D_OK;
    }
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= b->end) {
            return D_BAIL;
        }
        uint64_t byte = *p++;
        if (i == 9 && byte > 1) {
            return D_BAIL; /* bits past 64: leave the overflow rules to protobuf */
        }
        value |= (byte & 0x7f) << (7 * i);
        if (byte < 0x80) {
            *out = value;
            b->p = p;
            return D_OK;
        }
    }
    return D_BAIL;
}

/* A tag: at most 5 bytes, at most 32 bits, field number not 0 (as protobuf requires). */
static inline int
rd_tag(Buf *b, uint32_t *field, uint32_t *wire_type)
{
    const uint8_t *start = b->p;
    uint64_t tag;
    if (rd_varint(b, &tag) != D_OK || b->p - start > 5 || tag > UINT32_MAX || (tag >> 3) == 0) {
        return D_BAIL;
    }
    *field = (uint32_t)(tag >> 3);
    *wire_type = (uint32_t)(tag & 7);
    return D_OK;
}

/* A length prefix (at most 5 bytes) and the bytes it covers, which must be there. */
static inline int
rd_len(Buf *b, Buf *sub)
{
    const uint8_t *start = b->p;
    uint64_t n;
    if (rd_varint(b, &n) != D_OK || b->p - start > 5 || n >= INT32_MAX ||
        n > (uint64_t)(b->end - b->p)) {
        return D_BAIL;
    }
    sub->p = b->p;
    sub->end = b->p + n;
    b->p = sub->end;
    return D_OK;
}

static inline int
rd_fixed64(Buf *b, uint64_t *out)
{
    if (b->end - b->p < 8) {
        return D_BAIL;
    }
    const uint8_t *p = b->p;
    *out = (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
    b->p = p + 8;
    return D_OK;
}

static int
skip_field(Buf *b, uint32_t wire_type)
{
    uint64_t ignored;
    Buf sub;
    switch (wire_type) {
    case WT_VARINT:
        return rd_varint(b, &ignored);
    case WT_I64:
        if (b->end - b->p < 8) {
            return D_BAIL;
        }
        b->p += 8;
        return D_OK;
    case WT_LEN:
        return rd_len(b, &sub);
    case WT_I32:
        if (b->end - b->p < 4) {
            return D_BAIL;
        }
        b->p += 4;
        return D_OK;
    default: /* groups (3, 4) and the invalid wire types 6, 7 */
        return D_BAIL;
    }
}

/* A protobuf enum (int32): the low 32 bits of the varint, sign-interpreted. */
static inline long
as_int32(uint64_t v)
{
    uint32_t u = (uint32_t)v;
    return u <= INT32_MAX ? (long)u : (long)(int32_t)(u - 0x80000000u) + INT32_MIN;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), as protobuf
 * checks string fields. */
static int
utf8_valid(const uint8_t *p, const uint8_t *end)
{
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        Py_ssize_t left = end - p;
        if (c >= 0xC2 && c <= 0xDF) {
            if (left < 2 || (p[1] & 0xC0) != 0x80) {
                return 0;
            }
            p += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            uint8_t lo = c == 0xE0 ? 0xA0 : 0x80;
            uint8_t hi = c == 0xED ? 0x9F : 0xBF;
            if (left < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) {
                return 0;
            }
            p += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            uint8_t lo = c == 0xF0 ? 0x90 : 0x80;
            uint8_t hi = c == 0xF4 ? 0x8F : 0xBF;
            if (left < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 ||
                (p[3] & 0xC0) != 0x80) {
                return 0;
            }
            p += 4;
        }
        else {
            return 0;
        }
    }
    return 1;
}

static inline int
check_utf8(const Buf *s)
{
    return utf8_valid(s->p, s->end) ? D_OK : D_BAIL;
}

/* -- Python values -------------------------------------------------------------------- */

/* Replace *dst by the string in s; invalid UTF-8 is a bail, not an error. */
static int
set_str(PyObject **dst, const Buf *s)
{
    PyObject *o = PyUnicode_DecodeUTF8((const char *)s->p, s->end - s->p, NULL);
    if (o == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return D_BAIL;
        }
        return D_ERR;
    }
    Py_XSETREF(*dst, o);
    return D_OK;
}

/* Replace *dst by the key in s, from the cache when it holds it. */
static int
set_key(Ctx *c, PyObject **dst, const Buf *s)
{
    Py_ssize_t n = s->end - s->p;
    if (n == 0 || n > KEY_CACHE_MAX_LEN) {
        return set_str(dst, s);
    }
    uint32_t h = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        h = (h ^ s->p[i]) * 16777619u;
    }
    PyObject **slot = &c->keys[(h ^ (h >> 16)) & (KEY_CACHE_SIZE - 1)];
    PyObject *cached = *slot;
    if (cached != NULL && PyUnicode_GET_LENGTH(cached) == n &&
        memcmp(PyUnicode_1BYTE_DATA(cached), s->p, (size_t)n) == 0) {
        Py_XSETREF(*dst, Py_NewRef(cached));
        return D_OK;
    }
    int rc = set_str(dst, s);
    if (rc == D_OK && PyUnicode_IS_ASCII(*dst)) {
        /* Only ASCII keys are cached: their bytes are their UTF-8, as compared above. */
        Py_XSETREF(*slot, Py_NewRef(*dst));
    }
    return rc;
}

/* Lowercase hex of the bytes in s, like bytes.hex(). */
static PyObject *
hex_str(const Buf *s)
{
    Py_ssize_t n = s->end - s->p;
    if (n > PY_SSIZE_T_MAX / 2) {
        return PyErr_NoMemory();
    }
    PyObject *o = PyUnicode_New(2 * n, 127);
    if (o == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(o);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[2 * i] = (Py_UCS1)hex_digits[s->p[i] >> 4];
        out[2 * i + 1] = (Py_UCS1)hex_digits[s->p[i] & 15];
    }
    return o;
}

/* Store a new reference (NULL means an exception is set) into *dst. */
#define SET_NEW(dst, expr)          \
    do {                            \
        PyObject *new_ = (expr);    \
        if (new_ == NULL) {         \
            rc = D_ERR;             \
            goto done;              \
        }                           \
        Py_XSETREF((dst), new_);    \
    } while (0)

#define CHECK(expr)                 \
    do {                            \
        if ((rc = (expr)) != D_OK) { \
            goto done;              \
        }                           \
    } while (0)

#define EXPECT(wt)                  \
    do {                            \
        if (wire_type != (wt)) {    \
            rc = D_BAIL;            \
            goto done;              \
        }                           \
    } while (0)

/* -- common.v1: KeyValue, AnyValue, ArrayValue, KeyValueList -------------------------- */

static int parse_any(Ctx *c, Buf m, int depth, PyObject **out);

/* KeyValue{key=1, value=2, key_strindex=3}: dict[key] = value, like `out[kv.key] = ...`. */
static int
parse_kv(Ctx *c, Buf m, int depth, PyObject *dict)
{
    PyObject *key = NULL, *value = NULL;
    int rc = D_OK, seen_value = 0;
    uint32_t field, wire_type;
    uint64_t ignored;
    Buf s;
    if (depth > MAX_DEPTH) {
        return D_BAIL;
    }
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(set_key(c, &key, &s));
            break;
        case 2:
            EXPECT(WT_LEN);
            if (seen_value) { /* protobuf would merge the two AnyValues */
                rc = D_BAIL;
                goto done;
            }
            seen_value = 1;
            CHECK(rd_len(&m, &s));
            CHECK(parse_any(c, s, depth + 1, &value));
            break;
        case 3:
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &ignored));
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
    if (key == NULL) {
        key = PyUnicode_New(0, 0);
        if (key == NULL) {
            rc = D_ERR;
            goto done;
        }
    }
    if (PyDict_SetItem(dict, key, value != NULL ? value : Py_None) < 0) {
        rc = D_ERR;
    }
done:
    Py_XDECREF(key);
    Py_XDECREF(value);
    return rc;
}

/* ArrayValue{values=1}: append each AnyValue to list. */
static int
parse_array(Ctx *c, Buf m, int depth, PyObject *list)
{
    int rc = D_OK;
    uint32_t field, wire_type;
    Buf s;
    if (depth > MAX_DEPTH) {
        return D_BAIL;
    }
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        if (field == 1) {
            PyObject *item = NULL;
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(parse_any(c, s, depth + 1, &item));
            int failed = PyList_Append(list, item) < 0;
            Py_DECREF(item);
            if (failed) {
                rc = D_ERR;
                goto done;
            }
        }
        else {
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    return rc;
}

/* KeyValueList{values=1}, or any message whose field 1 is repeated KeyValue. */
static int
parse_kvlist(Ctx *c, Buf m, int depth, PyObject *dict)
{
    int rc = D_OK;
    uint32_t field, wire_type;
    Buf s;
    if (depth > MAX_DEPTH) {
        return D_BAIL;
    }
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        if (field == 1) {
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(parse_kv(c, s, depth + 1, dict));
        }
        else {
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    return rc;
}

/* AnyValue: a oneof, the last member seen wins; unset is None. */
static int
parse_any(Ctx *c, Buf m, int depth, PyObject **out)
{
    PyObject *value = NULL;
    int rc = D_OK, seen_message = 0;
    uint32_t field, wire_type;
    uint64_t v;
    Buf s;
    if (depth > MAX_DEPTH) {
        return D_BAIL;
    }
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1: /* string_value */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(set_str(&value, &s));
            break;
        case 2: /* bool_value */
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &v));
            SET_NEW(value, PyBool_FromLong(v != 0));
            break;
        case 3: /* int_value */
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &v));
            SET_NEW(value, PyLong_FromLongLong((long long)(int64_t)v));
            break;
        case 4: { /* double_value */
            double d;
            EXPECT(WT_I64);
            CHECK(rd_fixed64(&m, &v));
            memcpy(&d, &v, sizeof d);
            SET_NEW(value, PyFloat_FromDouble(d));
            break;
        }
        case 5: /* array_value */
        case 6: /* kvlist_value */
            EXPECT(WT_LEN);
            if (seen_message) { /* merge rules of a repeated sub-message: not ours */
                rc = D_BAIL;
                goto done;
            }
            seen_message = 1;
            CHECK(rd_len(&m, &s));
            if (field == 5) {
                SET_NEW(value, PyList_New(0));
                CHECK(parse_array(c, s, depth + 1, value));
            }
            else {
                SET_NEW(value, PyDict_New());
                CHECK(parse_kvlist(c, s, depth + 1, value));
            }
            break;
        case 7: /* bytes_value */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            SET_NEW(value, hex_str(&s));
            break;
        case 8: /* string_value_strindex: the Python path has no value for it */
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &v));
            Py_CLEAR(value);
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    if (rc != D_OK) {
        Py_XDECREF(value);
        return rc;
    }
    if (value == NULL) {
        value = Py_NewRef(Py_None);
    }
    *out = value;
    return D_OK;
}

/* -- messages the Python path does not read, checked as protobuf checks them ---------- */

/* Walk a repeated KeyValue field into a dict that is thrown away. */
static int
check_kv(Ctx *c, Buf s, int depth, PyObject **scratch)
{
    if (*scratch == NULL && (*scratch = PyDict_New()) == NULL) {
        return D_ERR;
    }
    return parse_kv(c, s, depth, *scratch);
}

/* resource.v1.EntityRef{schema_url=1, type=2, id_keys=3, description_keys=4}. */
static int
check_entity_ref(Buf m)
{
    int rc = D_OK;
    uint32_t field, wire_type;
    Buf s;
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        if (field >= 1 && field <= 4) {
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_utf8(&s));
        }
        else {
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    return rc;
}

/* Span.Link{trace_id=1, span_id=2, trace_state=3, attributes=4, dropped=5, flags=6}. */
static int
check_link(Ctx *c, Buf m, int depth)
{
    PyObject *scratch = NULL;
    int rc = D_OK;
    uint32_t field, wire_type;
    uint64_t ignored;
    Buf s;
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1:
        case 2:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            break;
        case 3:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_utf8(&s));
            break;
        case 4:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_kv(c, s, depth + 1, &scratch));
            break;
        case 5:
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &ignored));
            break;
        case 6:
            EXPECT(WT_I32);
            CHECK(skip_field(&m, WT_I32));
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    Py_XDECREF(scratch);
    return rc;
}

/* -- trace.v1 --------------------------------------------------------------------------- */

/* Status{message=2, code=3}. */
static int
parse_status(Buf m, long *code, PyObject **message)
{
    int rc = D_OK;
    uint32_t field, wire_type;
    uint64_t v;
    Buf s;
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 2:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(set_str(message, &s));
            break;
        case 3:
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &v));
            *code = as_int32(v);
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    return rc;
}

/* Span.Event{time_unix_nano=1, name=2, attributes=3, dropped_attributes_count=4}. */
static int
parse_event(Ctx *c, Buf m, int depth, PyObject *events)
{
    PyObject *name = NULL, *attributes = NULL, *time = NULL, *event = NULL;
    uint64_t time_ns = 0, ignored;
    int rc = D_OK;
    uint32_t field, wire_type;
    Buf s;
    if ((attributes = PyDict_New()) == NULL) {
        return D_ERR;
    }
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1:
            EXPECT(WT_I64);
            CHECK(rd_fixed64(&m, &time_ns));
            break;
        case 2:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(set_str(&name, &s));
            break;
        case 3:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(parse_kv(c, s, depth + 1, attributes));
            break;
        case 4:
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &ignored));
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
    if (name == NULL) {
        SET_NEW(name, PyUnicode_New(0, 0));
    }
    SET_NEW(time, PyLong_FromUnsignedLongLong(time_ns));
    {
        PyObject *args[3] = {name, time, attributes};
        SET_NEW(event, PyObject_Vectorcall(c->event_cls, args, 3, NULL));
    }
    if (PyList_Append(events, event) < 0) {
        rc = D_ERR;
    }
done:
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    Py_XDECREF(time);
    Py_XDECREF(event);
    return rc;
}

/* Span: builds one RawSpan and appends it to spans. */
static int
parse_span(Ctx *c, Buf m, int depth, PyObject *resource, PyObject *scope_name, PyObject *spans)
{
    Buf trace_id = {NULL, NULL}, span_id = {NULL, NULL}, parent = {NULL, NULL}, s;
    PyObject *name = NULL, *attributes = NULL, *events = NULL, *status_message = NULL;
    PyObject *values[SPAN_NFIELDS] = {NULL};
    PyObject *span = NULL;
    uint64_t start = 0, end = 0, ignored;
    long kind = 0, status_code = 0;
    int rc = D_OK, seen_status = 0;
    uint32_t field, wire_type;
    if ((attributes = PyDict_New()) == NULL) {
        return D_ERR;
    }
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1: /* trace_id */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &trace_id));
            break;
        case 2: /* span_id */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &span_id));
            break;
        case 3: /* trace_state */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_utf8(&s));
            break;
        case 4: /* parent_span_id */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &parent));
            break;
        case 5: /* name */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(set_str(&name, &s));
            break;
        case 6: /* kind */
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &ignored));
            kind = as_int32(ignored);
            break;
        case 7: /* start_time_unix_nano */
            EXPECT(WT_I64);
            CHECK(rd_fixed64(&m, &start));
            break;
        case 8: /* end_time_unix_nano */
            EXPECT(WT_I64);
            CHECK(rd_fixed64(&m, &end));
            break;
        case 9: /* attributes */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(parse_kv(c, s, depth + 1, attributes));
            break;
        case 10: /* dropped_attributes_count */
        case 12: /* dropped_events_count */
        case 14: /* dropped_links_count */
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &ignored));
            break;
        case 11: /* events */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            if (events == NULL && (events = PyList_New(0)) == NULL) {
                rc = D_ERR;
                goto done;
            }
            CHECK(parse_event(c, s, depth + 1, events));
            break;
        case 13: /* links */
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_link(c, s, depth + 1));
            break;
        case 15: /* status */
            EXPECT(WT_LEN);
            if (seen_status) { /* protobuf would merge the two */
                rc = D_BAIL;
                goto done;
            }
            seen_status = 1;
            CHECK(rd_len(&m, &s));
            CHECK(parse_status(s, &status_code, &status_message));
            break;
        case 16: /* flags */
            EXPECT(WT_I32);
            CHECK(skip_field(&m, WT_I32));
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
    SET_NEW(values[0], hex_str(&trace_id));
    SET_NEW(values[1], hex_str(&span_id));
    if (parent.p == parent.end) {
        values[2] = Py_NewRef(Py_None);
    }
    else {
        SET_NEW(values[2], hex_str(&parent));
    }
    SET_NEW(values[3], name != NULL ? Py_NewRef(name) : PyUnicode_New(0, 0));
    SET_NEW(values[4], PyLong_FromUnsignedLongLong(start));
    SET_NEW(values[5], PyLong_FromUnsignedLongLong(end));
    values[6] = Py_NewRef(attributes);
    values[7] = Py_NewRef(resource);
    SET_NEW(values[8], events != NULL ? Py_NewRef(events) : PyList_New(0));
    SET_NEW(values[9], PyLong_FromLong(status_code));
    SET_NEW(values[10],
            status_message != NULL ? Py_NewRef(status_message) : PyUnicode_New(0, 0));
    SET_NEW(values[11], PyLong_FromLong(kind));
    values[12] = Py_NewRef(scope_name);
    SET_NEW(span, PyObject_Vectorcall(c->span_cls, values, SPAN_NFIELDS, NULL));
    if (PyList_Append(spans, span) < 0) {
        rc = D_ERR;
    }
done:
    for (int i = 0; i < SPAN_NFIELDS; i++) {
        Py_XDECREF(values[i]);
    }
    Py_XDECREF(span);
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    Py_XDECREF(events);
    Py_XDECREF(status_message);
    return rc;
}

/* InstrumentationScope{name=1, version=2, attributes=3, dropped_attributes_count=4}. */
static int
parse_scope(Ctx *c, Buf m, int depth, PyObject **name)
{
    PyObject *scratch = NULL;
    int rc = D_OK;
    uint32_t field, wire_type;
    uint64_t ignored;
    Buf s;
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(set_str(name, &s));
            break;
        case 2:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_utf8(&s));
            break;
        case 3:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_kv(c, s, depth + 1, &scratch));
            break;
        case 4:
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &ignored));
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    Py_XDECREF(scratch);
    return rc;
}

/* ScopeSpans{scope=1, spans=2, schema_url=3}. The scope may follow the spans on the
 * wire, so a first pass finds it. */
static int
parse_scope_spans(Ctx *c, Buf m, int depth, PyObject *resource, PyObject *spans)
{
    PyObject *scope_name = NULL;
    Buf scan = m, scope = {NULL, NULL}, s;
    int rc = D_OK, scopes = 0;
    uint32_t field, wire_type;
    while (scan.p < scan.end) {
        CHECK(rd_tag(&scan, &field, &wire_type));
        if (field == 1 && wire_type == WT_LEN) {
            scopes++;
            CHECK(rd_len(&scan, &scope));
        }
        else {
            CHECK(skip_field(&scan, wire_type));
        }
    }
    if (scopes > 1) { /* protobuf would merge them */
        return D_BAIL;
    }
    if (scopes == 1) {
        CHECK(parse_scope(c, scope, depth + 1, &scope_name));
    }
    if (scope_name == NULL && (scope_name = PyUnicode_New(0, 0)) == NULL) {
        return D_ERR;
    }
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            break;
        case 2:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(parse_span(c, s, depth + 1, resource, scope_name, spans));
            break;
        case 3:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_utf8(&s));
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    Py_XDECREF(scope_name);
    return rc;
}

/* Resource{attributes=1, dropped_attributes_count=2, entity_refs=3}. */
static int
parse_resource(Ctx *c, Buf m, int depth, PyObject *attributes)
{
    int rc = D_OK;
    uint32_t field, wire_type;
    uint64_t ignored;
    Buf s;
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(parse_kv(c, s, depth + 1, attributes));
            break;
        case 2:
            EXPECT(WT_VARINT);
            CHECK(rd_varint(&m, &ignored));
            break;
        case 3:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_entity_ref(s));
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    return rc;
}

/* ResourceSpans{resource=1, scope_spans=2, schema_url=3}: its spans share one resource
 * dict, filled in place whether the resource comes before or after them. */
static int
parse_resource_spans(Ctx *c, Buf m, int depth, PyObject *spans)
{
    PyObject *resource;
    int rc = D_OK, seen_resource = 0;
    uint32_t field, wire_type;
    Buf s;
    if ((resource = PyDict_New()) == NULL) {
        return D_ERR;
    }
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        switch (field) {
        case 1:
            EXPECT(WT_LEN);
            if (seen_resource) { /* protobuf would merge them */
                rc = D_BAIL;
                goto done;
            }
            seen_resource = 1;
            CHECK(rd_len(&m, &s));
            CHECK(parse_resource(c, s, depth + 1, resource));
            break;
        case 2:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(parse_scope_spans(c, s, depth + 1, resource, spans));
            break;
        case 3:
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(check_utf8(&s));
            break;
        default:
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    Py_DECREF(resource);
    return rc;
}

/* ExportTraceServiceRequest{resource_spans=1}. */
static int
parse_request(Ctx *c, Buf m, PyObject *spans)
{
    int rc = D_OK;
    uint32_t field, wire_type;
    Buf s;
    while (m.p < m.end) {
        CHECK(rd_tag(&m, &field, &wire_type));
        if (field == 1) {
            EXPECT(WT_LEN);
            CHECK(rd_len(&m, &s));
            CHECK(parse_resource_spans(c, s, 2, spans));
        }
        else {
            CHECK(skip_field(&m, wire_type));
        }
    }
done:
    return rc;
}

/* -- module ------------------------------------------------------------------------------ */

static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "decode() takes exactly 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyCallable_Check(args[1]) || !PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "decode(): RawSpan and RawEvent must be callable");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Ctx c = {.span_cls = args[1], .event_cls = args[2]};
    PyObject *spans = PyList_New(0);
    int rc = D_ERR;
    if (spans != NULL) {
        const uint8_t *start = (const uint8_t *)view.buf;
        Buf body = {start, start + view.len};
        rc = parse_request(&c, body, spans);
    }
    PyBuffer_Release(&view);
    for (int i = 0; i < KEY_CACHE_SIZE; i++) {
        Py_XDECREF(c.keys[i]);
    }
    if (rc == D_OK) {
        return spans;
    }
    Py_XDECREF(spans);
    if (rc == D_BAIL) {
        Py_RETURN_NONE;
    }
    return NULL;
}

PyDoc_STRVAR(decode_doc,
"decode(body, raw_span_cls, raw_event_cls, /)\n--\n\n"
"Decode an OTLP/protobuf ExportTraceServiceRequest into a list of RawSpans,\n"
"or return None when the body is unusual (malformed, invalid UTF-8, merged\n"
"sub-messages, deep nesting, ...) and the protobuf-based path must decide.");

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "goldenloop.ingest._otlp_fast",
    .m_doc = "Compiled OTLP/protobuf trace decoder (see goldenloop.ingest.otlp).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__otlp_fast(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    PyObject *names = PyTuple_New(SPAN_NFIELDS);
    if (names == NULL) {
        goto error;
    }
    for (int i = 0; i < SPAN_NFIELDS; i++) {
        PyObject *name = PyUnicode_FromString(span_field_names[i]);
        if (name == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    if (PyModule_AddObject(module, "RAW_SPAN_FIELDS", names) < 0) {
        goto error;
    }
    return module;
error:
    Py_XDECREF(names);
    Py_DECREF(module);
    return NULL;
}
