// greenprobe._core.MarkRing: a mark sink that writes each mark into the shared-memory ring the
// daemon drains (greenprobe/mark_ring.hpp), so that a local client's mark costs a few hundred
// nanoseconds. A mark the ring cannot take goes to `fallback.append(record)` (the gRPC sender):
// while the ring is not attached to a daemon, when it is full, and when the mark holds a value the
// ring does not encode (anything but str, int within 64 bits, float, bool, None; the sender keeps
// those as text) or exceeds a limit (the daemon then refuses it with the reason).
//
//   MarkRing(capacity_bytes, fallback)
//   .fd, .attached (settable), .pushed, .fell_back, .pending_bytes, .drained, .refused, .refused_why
//   .append(record)   (label, start_ns, end_ns, thread_id, attrs|None, ok), as greenprobe.mark makes
//   .renew()          after fork: a new ring of the child's own, detached (the parent keeps its ring)
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <atomic>
#include <memory>
#include <new>
#include <string_view>

#include "greenprobe/mark_ring.hpp"

using greenprobe::markring::MarkEncoder;
using greenprobe::markring::RingWriter;

namespace {

struct RingObject {
    PyObject_HEAD
    RingWriter* writer;
    PyObject* fallback;  // strong
    std::size_t capacity;
    std::atomic<bool> attached;
    std::atomic<unsigned long long> fell_back;
};

PyTypeObject RingType = {PyVarObject_HEAD_INIT(nullptr, 0)};

bool utf8_of(PyObject* s, std::string_view& out) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(s, &n);
    if (!p) {  // a lone surrogate: not UTF-8; the sender will say so
        PyErr_Clear();
        return false;
    }
    out = std::string_view(p, static_cast<std::size_t>(n));
    return true;
}

bool encode_attrs(MarkEncoder& e, PyObject* attrs) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        std::string_view name;
        if (!PyUnicode_CheckExact(key) || !utf8_of(key, name)) return false;
        bool ok;
        if (value == Py_None) {
            ok = e.attr_none(name);
        } else if (PyBool_Check(value)) {
            ok = e.attr_bool(name, value == Py_True);
        } else if (PyLong_CheckExact(value)) {
            int overflow = 0;
            const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow || (v == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                return false;
            }
            ok = e.attr_int(name, v);
        } else if (PyFloat_CheckExact(value)) {
            ok = e.attr_float(name, PyFloat_AS_DOUBLE(value));
        } else if (PyUnicode_CheckExact(value)) {
            std::string_view text;
            ok = utf8_of(value, text) && e.attr_str(name, text);
        } else {
            return false;
        }
        if (!ok) return false;
    }
    return true;
}

bool push(RingObject* self, PyObject* label, PyObject* attrs, long long start, long long end, unsigned long tid,
          bool ok) {
    if (!self->attached.load(std::memory_order_acquire)) return false;
#ifdef Py_GIL_DISABLED
    thread_local MarkEncoder enc;
#else
    static MarkEncoder enc;  // the GIL is held: one encoder serves every thread, without a TLS lookup
#endif
    std::string_view name;
    if (!PyUnicode_Check(label) || !utf8_of(label, name)) return false;
    if (!enc.begin(start, end, tid, ok, name)) return false;
    if (attrs && attrs != Py_None && (!PyDict_Check(attrs) || !encode_attrs(enc, attrs))) return false;
    return self->writer->push(enc.bytes());
}

PyObject* ring_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kw[] = {"capacity", "fallback", nullptr};
    Py_ssize_t capacity;
    PyObject* fallback;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nO", const_cast<char**>(kw), &capacity, &fallback)) {
        return nullptr;
    }
    auto* self = reinterpret_cast<RingObject*>(type->tp_alloc(type, 0));
    if (!self) return nullptr;
    new (&self->attached) std::atomic<bool>(false);
    new (&self->fell_back) std::atomic<unsigned long long>(0);
    self->capacity = static_cast<std::size_t>(capacity);
    Py_INCREF(fallback);
    self->fallback = fallback;
    try {
        self->writer = new RingWriter(self->capacity);
    } catch (const std::exception& ex) {
        self->writer = nullptr;
        Py_DECREF(self);
        PyErr_SetString(PyExc_OSError, ex.what());
        return nullptr;
    }
    return reinterpret_cast<PyObject*>(self);
}

void ring_dealloc(RingObject* self) {
    delete self->writer;
    Py_XDECREF(self->fallback);
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

PyObject* ring_append(RingObject* self, PyObject* rec) {
    PyObject *label, *attrs, *ok;
    long long start, end;
    unsigned long tid;
    if (!PyTuple_Check(rec) || !PyArg_ParseTuple(rec, "OLLkOO", &label, &start, &end, &tid, &attrs, &ok)) {
        PyErr_Clear();  // not a record the ring takes: the sender says what is wrong with it
    } else if (push(self, label, attrs, start, end, tid, PyObject_IsTrue(ok) == 1)) {
        Py_RETURN_NONE;
    }
    self->fell_back.fetch_add(1, std::memory_order_relaxed);
    return PyObject_CallMethod(self->fallback, "append", "(O)", rec);
}

PyObject* ring_renew(RingObject* self, PyObject*) {
    self->attached.store(false, std::memory_order_release);
    // After fork the old writer's mutex may be held by a thread that no longer exists: it is left
    // as it is (its mapping is the parent's ring, which the parent goes on writing).
    try {
        self->writer = new RingWriter(self->capacity);
    } catch (const std::exception& ex) {
        PyErr_SetString(PyExc_OSError, ex.what());
        return nullptr;
    }
    Py_RETURN_NONE;
}

// encode_frames(records) -> (bytes, [indices]): the records as ring frames (a gRPC batch's
// `frames`), and the indices of those the frames cannot hold (sent as columns instead).
PyObject* encode_frames(PyObject*, PyObject* records) {
    if (!PyList_Check(records)) {
        PyErr_SetString(PyExc_TypeError, "encode_frames takes a list of mark records");
        return nullptr;
    }
    MarkEncoder enc;
    std::string out;
    PyObject* odd = PyList_New(0);
    if (!odd) return nullptr;
    const Py_ssize_t n = PyList_GET_SIZE(records);
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* rec = PyList_GET_ITEM(records, i);
        PyObject *label, *attrs, *ok;
        long long start, end;
        unsigned long long tid;
        std::string_view name;
        const bool parsed = PyTuple_Check(rec) && PyTuple_GET_SIZE(rec) == 6 &&
                            PyArg_ParseTuple(rec, "OLLKOO", &label, &start, &end, &tid, &attrs, &ok);
        if (!parsed) PyErr_Clear();
        const bool encoded = parsed && PyUnicode_Check(label) && utf8_of(label, name) &&
                             enc.begin(start, end, tid, PyObject_IsTrue(ok) == 1, name) &&
                             (attrs == Py_None || (PyDict_Check(attrs) && encode_attrs(enc, attrs)));
        if (!encoded) {
            PyObject* index = PyLong_FromSsize_t(i);
            if (!index || PyList_Append(odd, index) < 0) {
                Py_XDECREF(index);
                Py_DECREF(odd);
                return nullptr;
            }
            Py_DECREF(index);
            continue;
        }
        const std::string& payload = enc.bytes();
        const std::size_t size = (8 + payload.size() + 7) & ~std::size_t{7};
        const std::uint32_t head[2] = {static_cast<std::uint32_t>(size), greenprobe::markring::kMarkFrame};
        out.append(reinterpret_cast<const char*>(head), sizeof head);
        out.append(payload);
        out.append(size - 8 - payload.size(), '\0');
    }
    PyObject* bytes = PyBytes_FromStringAndSize(out.data(), static_cast<Py_ssize_t>(out.size()));
    if (!bytes) {
        Py_DECREF(odd);
        return nullptr;
    }
    return Py_BuildValue("(NN)", bytes, odd);
}

PyMethodDef module_functions[] = {
    {"encode_frames", encode_frames, METH_O,
     "encode_frames(records) -> (bytes, [indices]): mark records as the ring's frames, and the indices "
     "of those the frames cannot hold."},
    {nullptr, nullptr, 0, nullptr}};

PyObject* get_fd(RingObject* self, void*) { return PyLong_FromLong(self->writer->fd()); }
PyObject* get_attached(RingObject* self, void*) { return PyBool_FromLong(self->attached.load()); }
int set_attached(RingObject* self, PyObject* value, void*) {
    if (!value) {
        PyErr_SetString(PyExc_TypeError, "attached cannot be deleted");
        return -1;
    }
    self->attached.store(PyObject_IsTrue(value) == 1, std::memory_order_release);
    return 0;
}
PyObject* get_pushed(RingObject* self, void*) { return PyLong_FromUnsignedLongLong(self->writer->pushed()); }
PyObject* get_fell_back(RingObject* self, void*) { return PyLong_FromUnsignedLongLong(self->fell_back.load()); }
PyObject* get_pending(RingObject* self, void*) { return PyLong_FromUnsignedLongLong(self->writer->pending_bytes()); }
PyObject* get_drained(RingObject* self, void*) { return PyLong_FromUnsignedLongLong(self->writer->drained()); }
PyObject* get_refused(RingObject* self, void*) { return PyLong_FromUnsignedLongLong(self->writer->refused()); }
PyObject* get_why(RingObject* self, void*) {
    const std::string why = self->writer->refused_why();
    return PyUnicode_DecodeUTF8(why.data(), static_cast<Py_ssize_t>(why.size()), "replace");
}
PyObject* get_fallback(RingObject* self, void*) {
    Py_INCREF(self->fallback);
    return self->fallback;
}

PyMethodDef ring_methods[] = {
    {"append", reinterpret_cast<PyCFunction>(ring_append), METH_O,
     "append(record): into the ring, or to the fallback when the ring cannot take it"},
    {"renew", reinterpret_cast<PyCFunction>(ring_renew), METH_NOARGS,
     "a new ring of this process's own, detached (after fork)"},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef ring_getset[] = {
    {"fd", reinterpret_cast<getter>(get_fd), nullptr, "the memfd to send to the daemon", nullptr},
    {"attached", reinterpret_cast<getter>(get_attached), reinterpret_cast<setter>(set_attached),
     "whether a daemon drains the ring (else marks go to the fallback)", nullptr},
    {"pushed", reinterpret_cast<getter>(get_pushed), nullptr, "marks written into the ring", nullptr},
    {"fell_back", reinterpret_cast<getter>(get_fell_back), nullptr, "marks handed to the fallback", nullptr},
    {"pending_bytes", reinterpret_cast<getter>(get_pending), nullptr, "bytes written, not yet drained", nullptr},
    {"drained", reinterpret_cast<getter>(get_drained), nullptr, "marks the daemon took (held or refused)", nullptr},
    {"refused", reinterpret_cast<getter>(get_refused), nullptr, "marks the daemon refused", nullptr},
    {"refused_why", reinterpret_cast<getter>(get_why), nullptr, "why, the last time", nullptr},
    {"fallback", reinterpret_cast<getter>(get_fallback), nullptr, "where marks go that the ring cannot take",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

}  // namespace

// For mark_type.cpp: 1 when `sink` is a MarkRing that took the mark; 0 otherwise, and then
// *fallback (borrowed) is where the mark goes instead (or nullptr when `sink` is not a MarkRing).
int greenprobe_ring_sink_push(PyObject* sink, PyObject* label, PyObject* attrs, long long start, long long end,
                              unsigned long tid, bool ok, PyObject** fallback) {
    *fallback = nullptr;
    if (Py_TYPE(sink) != &RingType) return 0;
    auto* ring = reinterpret_cast<RingObject*>(sink);
    if (push(ring, label, attrs, start, end, tid, ok)) return 1;
    ring->fell_back.fetch_add(1, std::memory_order_relaxed);
    *fallback = ring->fallback;
    return 0;
}

int greenprobe_add_ring_sink_type(PyObject* module) {
    RingType.tp_name = "greenprobe._core.MarkRing";
    RingType.tp_basicsize = sizeof(RingObject);
    RingType.tp_flags = Py_TPFLAGS_DEFAULT;
    RingType.tp_doc = "MarkRing(capacity, fallback): marks into a shared-memory ring a daemon drains.";
    RingType.tp_new = ring_new;
    RingType.tp_dealloc = reinterpret_cast<destructor>(ring_dealloc);
    RingType.tp_methods = ring_methods;
    RingType.tp_getset = ring_getset;
    if (PyType_Ready(&RingType) < 0) return -1;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(module, "MarkRing", reinterpret_cast<PyObject*>(&RingType)) < 0) {
        Py_DECREF(&RingType);
        return -1;
    }
    return PyModule_AddFunctions(module, module_functions);
}
