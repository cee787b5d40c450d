/* XOR-unmasking of client frames (RFC 6455 section 5.3), the one loop that
 * pure Python cannot run fast: bytes-at-a-time XOR tops out at a few hundred
 * MB/s, this runs at memory speed.  geventws/protocol/masking.py falls back to a pure
 * Python version when this extension is not built. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask))
        return NULL;
    if (mask.len != 4) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        const unsigned char *in = (const unsigned char *)data.buf;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        const unsigned char *key = (const unsigned char *)mask.buf;
        Py_ssize_t i = 0, n = data.len;
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
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS, "XOR data with a repeated 4-byte mask; returns new bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "geventws.protocol._speedups", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
