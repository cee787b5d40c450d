/* The protocol engine's hot paths, which pure Python cannot run fast:
 *
 * - apply_mask(): XOR-unmasking (RFC 6455 section 5.3); bytes-at-a-time XOR
 *   in Python tops out at a few hundred MB/s, this runs at memory speed.
 * - single_frame(): a small outgoing message as one frame, header and payload
 *   in one allocation (geventws/protocol/frames.py has the Python version).
 * - FrameReader: the reader of geventws/protocol/reader.py in C (the Python
 *   class PythonFrameReader there is its reference and fallback; read it
 *   first, this mirrors it check for check, in the same order).  In Python
 *   the per-frame work cost about 2.5 us per small message in
 *   bench/engine_micro.py; here it is a fraction of that.
 * - send_frame(): a small outgoing message encoded and written in one
 *   non-blocking send(), no Python between, and recv_nowait(): one
 *   non-blocking read without the socket method's argument parsing and GIL
 *   hand-off (geventws/connection/nonblocking.py holds their Python
 *   versions; the writer and the loop reader call them).
 * - send_each(): one encoded broadcast frame to many non-blocking sockets,
 *   one send() each and no Python per socket (geventws/connection/fanout.py
 *   calls it and holds the Python version).
 *
 * geventws/protocol/masking.py and reader.py, and geventws/connection/fanout.py
 * and nonblocking.py fall back to pure Python when this extension is not
 * built. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define OP_CONTINUATION 0x0
#define OP_TEXT 0x1
#define OP_BINARY 0x2
#define OP_CLOSE 0x8
#define OP_PING 0x9
#define OP_PONG 0xA

/* The longest frame head the reader ever holds between two reads: a control
 * frame's 2-byte header, 4-byte mask and 125-byte payload, or a data frame's
 * header of up to 14 bytes. */
#define MAX_PENDING (2 + 4 + 125)

/* Results of parsing one frame head. */
#define NEED_MORE 0
#define STOPPED (-2) /* a close frame or a failure was appended: parse nothing more */
#define ERROR (-1)   /* a Python exception is set */

/* XOR `n` bytes of `in` with the repeated `key` (already rotated to the
 * position of in[0]) into `out`; `in` and `out` may be the same. */
static void
xor_mask(const unsigned char *in, unsigned char *out, Py_ssize_t n, const unsigned char key[4])
{
    Py_ssize_t i = 0;
    uint64_t key64;
    unsigned char key8[8];
    for (int k = 0; k < 8; k++)
        key8[k] = key[k & 3];
    memcpy(&key64, key8, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);
        chunk ^= key64;
        memcpy(out + i, &chunk, 8);
    }
    for (; i < n; i++)
        out[i] = in[i] ^ key[i & 3];
}

/* Arguments of the METH_FASTCALL functions below: PyArg_ParseTuple cost
 * about 800 instructions a call, two calls per echoed message
 * (bench/quiet.py echo, callgrind). */
static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name, expected, nargs);
    return 0;
}

static int
get_list(const char *name, int position, PyObject *arg, PyObject **list)
{
    if (!PyList_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "%s() argument %d must be list, not %.50s", name, position, Py_TYPE(arg)->tp_name);
        return 0;
    }
    *list = arg;
    return 1;
}

static PyObject *
apply_mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    if (!check_nargs("apply_mask", nargs, 2) || PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (mask.len != 4) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL)
        xor_mask(data.buf, (unsigned char *)PyBytes_AS_STRING(result), data.len, mask.buf);
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

/* ---------------------------------------------------------------- sending */

/* Write the header of an unmasked frame at `out`; returns its length. */
static Py_ssize_t
write_header(unsigned char *out, int first, Py_ssize_t length)
{
    out[0] = (unsigned char)first;
    if (length < 126) {
        out[1] = (unsigned char)length;
        return 2;
    }
    if (length < 65536) {
        out[1] = 126;
        out[2] = (unsigned char)(length >> 8);
        out[3] = (unsigned char)length;
        return 4;
    }
    out[1] = 127;
    for (int k = 0; k < 8; k++)
        out[2 + k] = (unsigned char)((uint64_t)length >> (56 - 8 * k));
    return 10;
}

/* The parts of a whole message's frame: its header written at `head`
 * (returns its length) and its payload in `view`, or 0 when the payload is
 * over `limit` (nothing to send as one frame; nothing held).  `*encoded` is a
 * new reference to the UTF-8 that `view` holds for text that is not ASCII,
 * else NULL.  Returns -1 with an exception set, nothing held. */
static Py_ssize_t
frame_parts(PyObject *data, Py_ssize_t limit, unsigned char head[10], Py_buffer *view, PyObject **encoded)
{
    int first = 0x80 | OP_BINARY;
    *encoded = NULL;
    if (PyUnicode_Check(data)) {
        first = 0x80 | OP_TEXT;
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(data) < 0)
            return -1;
#endif
        if (PyUnicode_GET_LENGTH(data) > limit) /* a character is at least one byte */
            return 0;
        if (PyUnicode_IS_ASCII(data)) { /* its characters are its UTF-8 */
            if (PyBuffer_FillInfo(view, data, PyUnicode_DATA(data), PyUnicode_GET_LENGTH(data), 1, PyBUF_SIMPLE) < 0)
                return -1;
            return write_header(head, first, view->len);
        }
        data = *encoded = PyUnicode_AsUTF8String(data);
        if (data == NULL)
            return -1;
    }
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) < 0) {
        Py_CLEAR(*encoded);
        return -1;
    }
    if (view->len > limit) {
        PyBuffer_Release(view);
        Py_CLEAR(*encoded);
        return 0;
    }
    return write_header(head, first, view->len);
}

/* single_frame(data, limit): see frames.single_frame. */
static PyObject *
single_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("single_frame", nargs, 2))
        return NULL;
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    unsigned char head[10];
    Py_buffer view;
    PyObject *encoded;
    Py_ssize_t head_length = frame_parts(args[0], limit, head, &view, &encoded);
    if (head_length <= 0) {
        if (head_length < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *wire = PyBytes_FromStringAndSize(NULL, head_length + view.len);
    if (wire != NULL) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(wire);
        memcpy(out, head, head_length);
        memcpy(out + head_length, view.buf, view.len);
    }
    PyBuffer_Release(&view);
    Py_XDECREF(encoded);
    return wire;
}

/* _socket.socket.fileno, set at import.  Called as a method descriptor it
 * skips the attribute lookup that PyObject_AsFileDescriptor() makes on the
 * socket: on a subclass of _socket.socket (gevent's raw sockets are) that
 * lookup runs through slot_tp_getattr_hook, about 1,000 instructions a call
 * (bench/quiet.py echo, callgrind). */
static PyObject *socket_fileno = NULL;

/* The descriptor of a socket for the calls below; -1 for a closed one (the
 * call then fails with EBADF, as the socket's own method would), -2 with an
 * exception set.  Anything else with a fileno() works too, at the slower
 * lookup. */
static int
socket_fd(PyObject *sock)
{
    int fd;
    if (socket_fileno != NULL && PyObject_TypeCheck(sock, PyDescr_TYPE(socket_fileno))) {
        PyObject *number = PyObject_CallOneArg(socket_fileno, sock);
        if (number == NULL)
            return -2;
        long value = PyLong_AsLong(number);
        Py_DECREF(number);
        if (value == -1 && PyErr_Occurred())
            return -2;
        return value < -1 || value > INT_MAX ? -1 : (int)value;
    }
    fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return -2;
        PyErr_Clear(); /* fileno() is -1 */
    }
    return fd;
}

/* Frames up to this size are copied into one buffer on the stack and sent
 * with send(); larger ones go out as header and payload with sendmsg(). */
#define STACK_FRAME 2048

/* send_frame(sock, data, limit) -> int | tuple[int, bytes] | None: a whole
 * message (as single_frame() makes it) written with one non-blocking send()
 * on `sock`.  None when its payload is over `limit` (nothing was written);
 * the bytes written when the socket took the whole frame; (written, rest)
 * when it took part or nothing (a full socket), `rest` being what is still
 * to write.  A failed send raises OSError.  The send keeps the GIL, as a
 * non-blocking send() never waits.  Against encode() and the writer's
 * socket.send() in Python, this saves about 6,000 of an echo round trip's
 * 40,800 instructions (bench/quiet.py echo, callgrind). */
static PyObject *
send_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("send_frame", nargs, 3))
        return NULL;
    int fd = socket_fd(args[0]);
    if (fd == -2)
        return NULL;
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    unsigned char stack[STACK_FRAME];
    Py_buffer view;
    PyObject *encoded;
    Py_ssize_t head = frame_parts(args[1], limit, stack, &view, &encoded);
    if (head <= 0) {
        if (head < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t total = head + view.len;
    ssize_t written;
    if (total <= STACK_FRAME) {
        memcpy(stack + head, view.buf, view.len);
        do
            written = send(fd, stack, (size_t)total, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (written < 0 && errno == EINTR);
    }
    else {
        struct iovec parts[2] = {{stack, (size_t)head}, {view.buf, (size_t)view.len}};
        struct msghdr message = {0};
        message.msg_iov = parts;
        message.msg_iovlen = 2;
        do
            written = sendmsg(fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (written < 0 && errno == EINTR);
    }
    PyObject *result = NULL;
    if (written < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    if (written == total) {
        result = PyLong_FromSsize_t(total);
        goto done;
    }
    if (written < 0)
        written = 0;
    PyObject *rest = PyBytes_FromStringAndSize(NULL, total - written);
    if (rest == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(rest);
    if (written < head) { /* part of the header is still to write */
        memcpy(out, stack + written, head - written);
        memcpy(out + head - written, view.buf, view.len);
    }
    else {
        memcpy(out, (const unsigned char *)view.buf + (written - head), total - written);
    }
    result = Py_BuildValue("(nN)", (Py_ssize_t)written, rest);
done:
    PyBuffer_Release(&view);
    Py_XDECREF(encoded);
    return result;
}

/* Reads up to this size are returned as bytes: a small copy costs less than
 * a memoryview's slice of the buffer (about 900 instructions, bench/quiet.py
 * echo, callgrind). */
#define COPY_LIMIT 4096

/* recv_nowait(sock, buffer) -> bytes | memoryview | None: one non-blocking
 * recv() into `buffer`, and what it read: a copy (bytes) for a small read,
 * else a memoryview of `buffer`; b"" at the end of the stream, None when
 * nothing is there.  A failed read raises OSError.  Keeps the GIL, as a
 * non-blocking recv() never waits, and parses no keywords: socket.recv_into()
 * and the slice after it cost about 2,800 instructions a read. */
static PyObject *
recv_nowait(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("recv_nowait", nargs, 2))
        return NULL;
    int fd = socket_fd(args[0]);
    if (fd == -2)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    ssize_t size;
    do
        size = recv(fd, view.buf, (size_t)view.len, MSG_DONTWAIT);
    while (size < 0 && errno == EINTR);
    int error = errno;
    PyObject *result;
    if (size >= 0 && size <= COPY_LIMIT)
        result = PyBytes_FromStringAndSize(view.buf, size);
    else if (size > 0)
        result = PySequence_GetSlice(args[1], 0, size);
    else if (error == EAGAIN || error == EWOULDBLOCK)
        result = Py_NewRef(Py_None);
    else {
        errno = error;
        result = PyErr_SetFromErrno(PyExc_OSError);
    }
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------ events */

/* The NamedTuple classes of events.py and reader.py, set once by reader.py. */
static PyTypeObject *Data_type, *Ping_type, *Pong_type, *Failure_type, *CloseFrame_type, *Compressed_type;

/* A NamedTuple instance made the way tuple.__new__(cls, items) makes it,
 * without the Python-level __new__ of the class; steals the references. */
static PyObject *
new_event(PyTypeObject *type, Py_ssize_t n, PyObject *a, PyObject *b, PyObject *c, PyObject *d)
{
    PyObject *items[4] = {a, b, c, d};
    PyObject *event = type->tp_alloc(type, n);
    if (event == NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(items[i]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(event, i, items[i]);
    return event;
}

static PyObject *
py_bool(int value)
{
    return Py_NewRef(value ? Py_True : Py_False);
}

/* Append `event` (a new reference, or NULL on error) to `events`. */
static int
append(PyObject *events, PyObject *event)
{
    if (event == NULL)
        return ERROR;
    int result = PyList_Append(events, event);
    Py_DECREF(event);
    return result < 0 ? ERROR : 0;
}

static int
check_event_type(PyObject *type, Py_ssize_t fields)
{
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "event types must be NamedTuple classes");
        return -1;
    }
    PyObject *names = PyObject_GetAttrString(type, "_fields");
    if (names == NULL)
        return -1;
    Py_ssize_t count = PyObject_Length(names);
    Py_DECREF(names);
    if (count != fields) {
        if (count >= 0)
            PyErr_Format(PyExc_TypeError, "%R must have %zd fields", type, fields);
        return -1;
    }
    return 0;
}

static PyObject *
set_event_types(PyObject *self, PyObject *args)
{
    PyObject *types[6];
    static const Py_ssize_t fields[6] = {4, 1, 1, 2, 1, 4};
    if (!PyArg_ParseTuple(args, "OOOOOO:set_event_types", &types[0], &types[1], &types[2], &types[3], &types[4],
                          &types[5]))
        return NULL;
    for (int i = 0; i < 6; i++)
        if (check_event_type(types[i], fields[i]) < 0)
            return NULL;
    PyTypeObject **slots[6] = {&Data_type, &Ping_type, &Pong_type, &Failure_type, &CloseFrame_type, &Compressed_type};
    for (int i = 0; i < 6; i++) {
        Py_INCREF(types[i]);
        Py_XSETREF(*slots[i], (PyTypeObject *)types[i]);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ reader */

typedef struct {
    PyObject_HEAD
    /* Limits; the objects for the failure reasons, the values for comparisons
     * (a negative value exceeds everything, like in Python). */
    PyObject *frame_limit_obj, *message_limit_obj;
    long long frame_limit, message_limit, whole_limit;
    /* An incomplete frame head, kept between reads (allocated only then: an
     * idle connection keeps none). */
    unsigned char *pending;
    Py_ssize_t pending_len;
    /* The data frame whose payload is arriving. */
    uint64_t remaining;
    PyObject *whole; /* a frame delivered whole: bytes of `whole_size`, the first `whole_filled` unmasked */
    Py_ssize_t whole_filled, whole_size, whole_length;
    unsigned char mask[4]; /* rotated: mask[0] applies to the next payload byte */
    /* The message those frames belong to. */
    uint64_t size;
    int opcode; /* 0 between messages */
    unsigned char carry[4]; /* the start of a character split across frames or reads */
    unsigned char carry_len;
    char compressed;
    char fin;
    char assembling; /* the frame is delivered whole, in `whole` */
    char text_only, compression;
    char stopped; /* a close frame or a failure: nothing more is parsed */
} FrameReader;

static long long
limit_value(PyObject *limit)
{
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(limit, &overflow);
    if (overflow)
        return overflow > 0 ? LLONG_MAX : -1;
    return value;
}

static int
exceeds(uint64_t value, long long limit)
{
    return limit < 0 || value > (uint64_t)limit;
}

static int
FrameReader_init(FrameReader *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"frame_size_limit", "message_size_limit", "text_only", "compression",
                               "whole_frame_limit", NULL};
    PyObject *frame_limit, *message_limit, *whole_limit = NULL;
    int text_only, compression;
    if (Data_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_event_types() was not called");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!pp|O!:FrameReader", keywords, &PyLong_Type, &frame_limit,
                                     &PyLong_Type, &message_limit, &text_only, &compression, &PyLong_Type,
                                     &whole_limit))
        return -1;
    Py_INCREF(frame_limit);
    Py_XSETREF(self->frame_limit_obj, frame_limit);
    Py_INCREF(message_limit);
    Py_XSETREF(self->message_limit_obj, message_limit);
    self->frame_limit = limit_value(frame_limit);
    self->message_limit = limit_value(message_limit);
    self->whole_limit = whole_limit ? limit_value(whole_limit) : 1024 * 1024;
    if (PyErr_Occurred())
        return -1;
    self->text_only = (char)text_only;
    self->compression = (char)compression;
    return 0;
}

static void
FrameReader_dealloc(FrameReader *self)
{
    Py_XDECREF(self->frame_limit_obj);
    Py_XDECREF(self->message_limit_obj);
    Py_XDECREF(self->whole);
    PyMem_Free(self->pending);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
FrameReader_pending(FrameReader *self, void *closure)
{
    return PyBytes_FromStringAndSize((const char *)self->pending, self->pending_len);
}

/* Append the failure that stops the reader; `reason` is a new reference. */
static int
fail(FrameReader *self, PyObject *events, int code, PyObject *reason)
{
    if (reason == NULL)
        return ERROR;
    PyObject *number = PyLong_FromLong(code);
    if (number == NULL) {
        Py_DECREF(reason);
        return ERROR;
    }
    self->stopped = 1;
    if (append(events, new_event(Failure_type, 2, number, reason, NULL, NULL)) < 0)
        return ERROR;
    return STOPPED;
}

static int
fail_with(FrameReader *self, PyObject *events, int code, const char *reason)
{
    return fail(self, events, code, PyUnicode_FromString(reason));
}

static void
rotate_mask(FrameReader *self, Py_ssize_t count)
{
    int shift = (int)(count & 3);
    if (shift) {
        unsigned char old[4];
        memcpy(old, self->mask, 4);
        for (int k = 0; k < 4; k++)
            self->mask[k] = old[(k + shift) & 3];
    }
}

/* The end of a message's last chunk. */
static void
message_finished(FrameReader *self)
{
    self->opcode = 0;
    self->carry_len = 0;
}

/* Deliver a chunk of binary or compressed payload (`chunk`, a new reference). */
static int
deliver_bytes(FrameReader *self, PyObject *chunk, int frame_finished, PyObject *events, int *attention)
{
    int finished = frame_finished && self->fin;
    PyObject *event;
    if (self->compressed) {
        *attention = 1;
        event = new_event(Compressed_type, 4, chunk, py_bool(self->opcode == OP_BINARY), py_bool(frame_finished),
                          py_bool(finished));
    }
    else {
        event = new_event(Data_type, 4, chunk, Py_NewRef(Py_True), py_bool(frame_finished), py_bool(finished));
    }
    if (append(events, event) < 0)
        return ERROR;
    if (finished)
        message_finished(self);
    return 0;
}

/* Unmask and decode `n` bytes of text (strict UTF-8; a character may continue
 * in the next chunk until the message is finished), and deliver them. */
static int
deliver_text(FrameReader *self, const unsigned char *masked, Py_ssize_t n, int frame_finished, PyObject *events)
{
    int finished = frame_finished && self->fin;
    unsigned char small[512];
    Py_ssize_t total = self->carry_len + n;
    unsigned char *buffer = small;
    if (total > (Py_ssize_t)sizeof(small)) {
        buffer = PyMem_Malloc(total);
        if (buffer == NULL) {
            PyErr_NoMemory();
            return ERROR;
        }
    }
    memcpy(buffer, self->carry, self->carry_len);
    xor_mask(masked, buffer + self->carry_len, n, self->mask);
    PyObject *text;
    Py_ssize_t consumed = total;
    if (finished)
        text = PyUnicode_DecodeUTF8((const char *)buffer, total, NULL);
    else
        text = PyUnicode_DecodeUTF8Stateful((const char *)buffer, total, NULL, &consumed);
    if (text != NULL && total - consumed > (Py_ssize_t)sizeof(self->carry)) {
        Py_CLEAR(text); /* cannot happen: an incomplete character is at most 3 bytes */
        PyErr_SetString(PyExc_SystemError, "incomplete UTF-8 character over 4 bytes");
    }
    if (text != NULL) {
        self->carry_len = (unsigned char)(total - consumed);
        memcpy(self->carry, buffer + consumed, self->carry_len);
    }
    if (buffer != small)
        PyMem_Free(buffer);
    if (text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return ERROR;
        PyErr_Clear();
        return fail_with(self, events, 1007, "Text message is not valid UTF-8");
    }
    if (append(events,
               new_event(Data_type, 4, text, Py_NewRef(Py_False), py_bool(frame_finished), py_bool(finished))) < 0)
        return ERROR;
    if (finished)
        message_finished(self);
    return 0;
}

/* Unmask `n` payload bytes at `masked` into new bytes and deliver them. */
static int
deliver(FrameReader *self, const unsigned char *masked, Py_ssize_t n, int frame_finished, PyObject *events,
        int *attention)
{
    if (self->opcode == OP_TEXT && !self->compressed)
        return deliver_text(self, masked, n, frame_finished, events);
    PyObject *chunk = PyBytes_FromStringAndSize(NULL, n);
    if (chunk == NULL)
        return ERROR;
    xor_mask(masked, (unsigned char *)PyBytes_AS_STRING(chunk), n, self->mask);
    return deliver_bytes(self, chunk, frame_finished, events, attention);
}

/* Refuse a data frame by its header alone, before any of its payload is kept. */
static int
check_size(FrameReader *self, int opcode, uint64_t length, int rsv1, PyObject *events)
{
    if (opcode == OP_BINARY && self->text_only)
        return fail_with(self, events, 1003, "Binary messages are not accepted");
    if (exceeds(length, self->frame_limit))
        return fail(self, events, 1009,
                    PyUnicode_FromFormat("Frame of %llu bytes exceeds the limit of %S bytes (frame_size_limit)", (unsigned long long)length,
                                         self->frame_limit_obj));
    int compressed = opcode != OP_CONTINUATION ? rsv1 : self->compressed;
    if (!compressed) { /* compressed sizes are counted as they inflate */
        uint64_t size = (opcode == OP_CONTINUATION ? self->size : 0) + length;
        if (size < length)
            size = UINT64_MAX;
        if (exceeds(size, self->message_limit))
            return fail(self, events, 1009,
                        PyUnicode_FromFormat("Message of %llu+ bytes exceeds the limit of %S bytes (message_size_limit)",
                                             (unsigned long long)size, self->message_limit_obj));
    }
    return 0;
}

static int
start_data_frame(FrameReader *self, int opcode, int fin, uint64_t length, int compressed, PyObject *events)
{
    if (opcode == OP_CONTINUATION) {
        if (!self->opcode)
            return fail_with(self, events, 1002, "Continuation frame without a message to continue");
    }
    else {
        if (self->opcode)
            return fail_with(self, events, 1002, "New message before the previous one finished");
        self->opcode = opcode;
        self->size = 0;
        self->compressed = (char)compressed;
    }
    if (!self->compressed) {
        self->size += length;
        if (self->size < length)
            self->size = UINT64_MAX;
    }
    self->remaining = length;
    self->fin = (char)fin;
    return 0;
}

static int
control_frame(FrameReader *self, int opcode, const unsigned char *payload, Py_ssize_t length, PyObject *events,
              int *attention)
{
    PyObject *data = PyBytes_FromStringAndSize(NULL, length);
    if (data == NULL)
        return ERROR;
    xor_mask(payload, (unsigned char *)PyBytes_AS_STRING(data), length, payload - 4);
    PyTypeObject *type = opcode == OP_PING ? Ping_type : opcode == OP_PONG ? Pong_type : CloseFrame_type;
    if (append(events, new_event(type, 1, data, NULL, NULL, NULL)) < 0)
        return ERROR;
    if (opcode != OP_PONG)
        *attention = 1;
    if (opcode == OP_CLOSE) {
        self->stopped = 1;
        return STOPPED;
    }
    return 0;
}

/* Parse the frame head at `p` (`avail` bytes): a control frame whole, or a
 * data frame's header.  Returns the bytes consumed (setting `*data_header`
 * for a data frame), NEED_MORE, STOPPED or ERROR. */
static Py_ssize_t
parse_head(FrameReader *self, const unsigned char *p, Py_ssize_t avail, PyObject *events, int *attention,
           int *data_header)
{
    if (avail < 2)
        return NEED_MORE;
    int first = p[0], second = p[1];
    int opcode = first & 0x0F;
    /* Checks run in wsproto's order, so that both engines answer the same
     * bytes with the same close code (tests/test_framing.py). */
    if (opcode >= OP_CLOSE) {
        if (opcode > OP_PONG)
            return fail(self, events, 1002, PyUnicode_FromFormat("Reserved opcode 0x%x", opcode));
        if (!(first & 0x80))
            return fail_with(self, events, 1002, "Fragmented control frame");
        if ((second & 0x7F) > 125)
            return fail_with(self, events, 1002, "Control frame payload over 125 bytes");
    }
    else if (opcode > OP_BINARY) {
        return fail(self, events, 1002, PyUnicode_FromFormat("Reserved opcode 0x%x", opcode));
    }
    uint64_t length = second & 0x7F;
    Py_ssize_t header = 6;
    if (length == 126) {
        if (avail < 4)
            return NEED_MORE;
        length = ((uint64_t)p[2] << 8) | p[3];
        header = 8;
        if (length < 126)
            return fail_with(self, events, 1002, "Payload length not minimally encoded");
    }
    else if (length == 127) {
        if (avail < 10)
            return NEED_MORE;
        length = 0;
        for (int k = 2; k < 10; k++)
            length = (length << 8) | p[k];
        header = 14;
        if (length >> 63)
            return fail_with(self, events, 1002, "Payload length with the most significant bit set");
        if (length < 65536)
            return fail_with(self, events, 1002, "Payload length not minimally encoded");
    }
    int status;
    if (opcode < OP_CLOSE && (status = check_size(self, opcode, length, (first & 0x40) != 0, events)) < 0)
        return status;
    if ((first & 0x70) && !((first & 0x70) == 0x40 && self->compression && opcode >= 1 && opcode <= 2))
        /* With permessage-deflate RSV1 marks a compressed message on its first frame only. */
        return fail_with(self, events, 1002, "Reserved bits set without a negotiated extension");
    if (!(second & 0x80))
        return fail_with(self, events, 1002, "Client frames must be masked");
    if (opcode >= OP_CLOSE) {
        if (avail < header + (Py_ssize_t)length)
            return NEED_MORE;
        status = control_frame(self, opcode, p + header, (Py_ssize_t)length, events, attention);
        return status < 0 ? status : header + (Py_ssize_t)length;
    }
    if (avail < header)
        return NEED_MORE;
    if ((status = start_data_frame(self, opcode, (first & 0x80) != 0, length, (first & 0x40) != 0, events)) < 0)
        return status;
    memcpy(self->mask, p + header - 4, 4);
    *data_header = 1;
    return header;
}

/* After a data frame's header: deliver an empty frame at once, or decide to
 * deliver the frame whole when its payload is not all here (`avail`). */
static int
begin_payload(FrameReader *self, Py_ssize_t avail, PyObject *events, int *attention)
{
    if (!self->remaining)
        return deliver(self, NULL, 0, 1, events, attention);
    if ((uint64_t)avail < self->remaining && !exceeds(self->remaining, self->whole_limit) &&
        self->opcode == OP_BINARY && !self->compressed) {
        self->assembling = 1;
        self->whole_filled = 0;
        self->whole_size = 0;
        self->whole_length = (Py_ssize_t)self->remaining;
    }
    return 0;
}

/* Unmask `n` payload bytes of a frame delivered whole into its buffer, which
 * grows with what arrives, never past four times what was received: growing
 * by two, the reallocations copied about the frame's size once more (a sixth
 * of the server's user time in the 1 MiB echo, perf). */
static int
assemble(FrameReader *self, const unsigned char *masked, Py_ssize_t n, PyObject *events, int *attention)
{
    Py_ssize_t needed = self->whole_filled + n;
    if (needed > self->whole_size) {
        Py_ssize_t size = needed <= self->whole_length / 4 ? 4 * needed : self->whole_length;
        if (self->whole == NULL) {
            self->whole = PyBytes_FromStringAndSize(NULL, size);
            if (self->whole == NULL)
                return ERROR;
        }
        else if (_PyBytes_Resize(&self->whole, size) < 0) {
            return ERROR; /* self->whole is NULL now */
        }
        self->whole_size = size;
    }
    xor_mask(masked, (unsigned char *)PyBytes_AS_STRING(self->whole) + self->whole_filled, n, self->mask);
    self->whole_filled = needed;
    if (needed < self->whole_length)
        return 0;
    PyObject *chunk = self->whole;
    self->whole = NULL;
    self->assembling = 0;
    return deliver_bytes(self, chunk, 1, events, attention);
}

/* Keep the incomplete frame head `head` until the next read. */
static int
keep(FrameReader *self, const unsigned char *head, Py_ssize_t length)
{
    self->pending = PyMem_Malloc(MAX_PENDING);
    if (self->pending == NULL) {
        PyErr_NoMemory();
        return ERROR;
    }
    memcpy(self->pending, head, length);
    self->pending_len = length;
    return 0;
}

static PyObject *
FrameReader_feed(FrameReader *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    PyObject *events;
    if (!check_nargs("feed", nargs, 2) || !get_list("feed", 2, args[1], &events)
        || PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t end = view.len, pos = 0;
    int attention = 0, data_header = 0;
    Py_ssize_t status = 0;
    if (self->stopped)
        goto done;
    if (self->pending_len) {
        /* Complete the head kept from the last read with the first bytes of this one. */
        unsigned char head[2 * MAX_PENDING];
        Py_ssize_t kept = self->pending_len;
        Py_ssize_t added = end < MAX_PENDING ? end : MAX_PENDING;
        memcpy(head, self->pending, kept);
        memcpy(head + kept, data, added);
        self->pending_len = 0;
        PyMem_Free(self->pending);
        self->pending = NULL;
        status = parse_head(self, head, kept + added, events, &attention, &data_header);
        if (status == NEED_MORE) { /* `head` holds any head whole: this read ended first */
            if (kept + added > MAX_PENDING) {
                PyErr_SetString(PyExc_SystemError, "frame head longer than the longest head");
                status = ERROR;
                goto done;
            }
            status = keep(self, head, kept + added);
            goto done;
        }
        if (status < 0)
            goto done;
        pos = status - kept;
        if (data_header && (status = begin_payload(self, end - pos, events, &attention)) < 0)
            goto done;
    }
    while (pos < end) {
        if (self->remaining) { /* payload of the current data frame, as much as is here */
            Py_ssize_t take = (uint64_t)(end - pos) < self->remaining ? end - pos : (Py_ssize_t)self->remaining;
            self->remaining -= take;
            if (self->assembling)
                status = assemble(self, data + pos, take, events, &attention);
            else
                status = deliver(self, data + pos, take, !self->remaining, events, &attention);
            if (status < 0)
                goto done;
            rotate_mask(self, take);
            pos += take;
            continue;
        }
        data_header = 0;
        status = parse_head(self, data + pos, end - pos, events, &attention, &data_header);
        if (status == NEED_MORE)
            break;
        if (status < 0)
            goto done;
        pos += status;
        if (data_header && (status = begin_payload(self, end - pos, events, &attention)) < 0)
            goto done;
    }
    if (pos < end) {
        if (end - pos > MAX_PENDING) { /* cannot happen: a head that does not fit is parsed or refused */
            PyErr_SetString(PyExc_SystemError, "frame head longer than the longest head");
            status = ERROR;
            goto done;
        }
        if (keep(self, data + pos, end - pos) < 0) {
            status = ERROR;
            goto done;
        }
    }
    status = 0;
done:
    PyBuffer_Release(&view);
    if (status == ERROR) {
        self->stopped = 1; /* out of memory, say: the state may be half updated, parse nothing more */
        return NULL;
    }
    if (status == STOPPED)
        attention = 1;
    return PyBool_FromLong(attention);
}

static PyMethodDef FrameReader_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))FrameReader_feed, METH_FASTCALL,
     "feed(data, events) -> bool: append the events of every frame data completes (see reader.Reader)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef FrameReader_getset[] = {
    {"pending", (getter)FrameReader_pending, NULL, "The incomplete frame head kept from the last read.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FrameReader_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "geventws.protocol._speedups.FrameReader",
    .tp_basicsize = sizeof(FrameReader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FrameReader(frame_size_limit, message_size_limit, text_only, compression, whole_frame_limit=1 MiB)\n"
              "--\n\nThe reader of geventws.protocol.reader in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FrameReader_init,
    .tp_dealloc = (destructor)FrameReader_dealloc,
    .tp_methods = FrameReader_methods,
    .tp_getset = FrameReader_getset,
};

/* ------------------------------------------------------------------ fan-out */

/* send_each(data, sockets) -> None | list[int]: send `data` once to each
 * socket without blocking.  None when every socket took all of it (the
 * common case: nothing is allocated); otherwise what each one took: the
 * bytes written (a short write included), 0 for a full socket, -errno for a
 * failed send.  A closed socket (fileno() -1) counts as -EBADF.  The sends
 * run without the GIL: no Python object is touched between them. */
static PyObject *
send_each(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    PyObject *sockets;
    if (!check_nargs("send_each", nargs, 2) || !get_list("send_each", 2, args[1], &sockets)
        || PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(sockets);
    PyObject *result = NULL;
    int *fds = PyMem_Malloc(n ? n * sizeof(int) : 1);
    Py_ssize_t *sent = PyMem_Malloc(n ? n * sizeof(Py_ssize_t) : 1);
    if (fds == NULL || sent == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        fds[i] = socket_fd(PyList_GET_ITEM(sockets, i));
        if (fds[i] == -2)
            goto done; /* not a socket at all */
    }
    int whole = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        ssize_t r;
        if (fds[i] < 0) {
            r = -EBADF;
        } else {
            do
                r = send(fds[i], data.buf, (size_t)data.len, MSG_DONTWAIT | MSG_NOSIGNAL);
            while (r < 0 && errno == EINTR);
            if (r < 0)
                r = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
        }
        sent[i] = r;
        whole &= r == data.len;
    }
    Py_END_ALLOW_THREADS
    if (whole) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = PyList_New(n);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PyLong_FromSsize_t(sent[i]);
        if (value == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, value);
    }
done:
    PyMem_Free(fds);
    PyMem_Free(sent);
    PyBuffer_Release(&data);
    return result;
}

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, "XOR data with a repeated 4-byte mask; returns new bytes."},
    {"single_frame", (PyCFunction)(void (*)(void))single_frame, METH_FASTCALL,
     "single_frame(data, limit) -> bytes | None: a whole message as one server frame, if its payload fits."},
    {"set_event_types", set_event_types, METH_VARARGS,
     "set_event_types(Data, Ping, Pong, ProtocolFailure, CloseFrame, CompressedChunk): the classes FrameReader makes."},
    {"send_frame", (PyCFunction)(void (*)(void))send_frame, METH_FASTCALL,
     "send_frame(sock, data, limit) -> int | tuple[int, bytes] | None: a whole message as one frame in one "
     "non-blocking send; None if its payload is over limit, else the bytes written, or (written, rest) for a "
     "short write."},
    {"recv_nowait", (PyCFunction)(void (*)(void))recv_nowait, METH_FASTCALL,
     "recv_nowait(sock, buffer) -> bytes | memoryview | None: one non-blocking recv into buffer and what it "
     "read; b'' at the end of the stream, None when nothing is there."},
    {"send_each", (PyCFunction)(void (*)(void))send_each, METH_FASTCALL,
     "send_each(data, sockets) -> None | list[int]: one non-blocking send of data to each socket; None when all "
     "took all, else per socket the bytes written, 0 when full, -errno on failure."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "geventws.protocol._speedups", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&FrameReader_type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *sockets = PyImport_ImportModule("_socket");
    if (sockets != NULL) {
        PyObject *type = PyObject_GetAttrString(sockets, "socket");
        if (type != NULL) {
            socket_fileno = PyObject_GetAttrString(type, "fileno");
            Py_DECREF(type);
        }
        Py_DECREF(sockets);
    }
    if (socket_fileno != NULL && !Py_IS_TYPE(socket_fileno, &PyMethodDescr_Type))
        Py_CLEAR(socket_fileno);
    if (socket_fileno == NULL && PyErr_Occurred()) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&FrameReader_type);
    if (PyModule_AddObject(m, "FrameReader", (PyObject *)&FrameReader_type) < 0) {
        Py_DECREF(&FrameReader_type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
