// greenprobe._core.Mark: the mark context manager in the CPython C API, so that one enter+exit
// costs little more than the two clock reads it needs (pybind11's call overhead would dominate).
//
//   Mark(label, /, *, sync=None, **attrs)
//   with Mark("infer"): ...     appends (label, start_ns, end_ns, thread_id, attrs|None, ok) to the sink
//   Mark("infer")(fn)           a decorator (delegated to greenprobe.marks._decorate)
//
// The sink is any object with append (a list; a MarkBuffer or a MarkRing: fast paths) set by
// _set_mark_sink; with no sink,
// greenprobe.marks._no_sink() is called: it finds the daemon of $GREENPROBE_DAEMON set after import
// (the mark goes there, as every later one) or warns once.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <ctime>
#include <vector>

int greenprobe_ring_sink_push(PyObject* sink, PyObject* label, PyObject* attrs, long long start, long long end,
                              unsigned long tid, bool ok, PyObject** fallback);  // mark_ring_sink.cpp

namespace {

PyObject* g_sink = nullptr;  // strong reference or nullptr

// A growable C array of marks: the fast sink. Records become Python tuples only when taken.
struct Record {
    PyObject* label;  // strong
    PyObject* attrs;  // strong or nullptr
    long long start_ns, end_ns;
    unsigned long thread_id;
    bool ok;
};

struct BufferObject {
    PyObject_HEAD
    std::vector<Record>* records;
};

PyTypeObject BufferType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* record_tuple(const Record& r) {
    return Py_BuildValue("(OLLkOO)", r.label, r.start_ns, r.end_ns, r.thread_id, r.attrs ? r.attrs : Py_None,
                         r.ok ? Py_True : Py_False);
}

PyObject* buffer_new(PyTypeObject* type, PyObject*, PyObject*) {
    auto* self = reinterpret_cast<BufferObject*>(type->tp_alloc(type, 0));
    if (!self) return nullptr;
    self->records = new std::vector<Record>();
    self->records->reserve(1024);
    return reinterpret_cast<PyObject*>(self);
}

void buffer_clear_records(std::vector<Record>& v) {
    for (auto& r : v) {
        Py_DECREF(r.label);
        Py_XDECREF(r.attrs);
    }
    v.clear();
}

void buffer_dealloc(BufferObject* self) {
    if (self->records) {
        buffer_clear_records(*self->records);
        delete self->records;
    }
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

Py_ssize_t buffer_len(BufferObject* self) { return static_cast<Py_ssize_t>(self->records->size()); }

// snapshot(start=0): the records from index `start` on, as a list of tuples (the buffer keeps them).
PyObject* buffer_snapshot(BufferObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t start = 0;
    if (nargs >= 1) {
        start = PyLong_AsSsize_t(args[0]);
        if (start == -1 && PyErr_Occurred()) return nullptr;
    }
    const auto& v = *self->records;
    if (start < 0) start = 0;
    const Py_ssize_t n = static_cast<Py_ssize_t>(v.size());
    PyObject* out = PyList_New(n > start ? n - start : 0);
    if (!out) return nullptr;
    for (Py_ssize_t i = start; i < n; ++i) {
        PyObject* t = record_tuple(v[static_cast<std::size_t>(i)]);
        if (!t) {
            Py_DECREF(out);
            return nullptr;
        }
        PyList_SET_ITEM(out, i - start, t);
    }
    return out;
}

PyObject* buffer_append(BufferObject* self, PyObject* rec) {
    // Generic path (tuples from elsewhere, e.g. a daemon client): (label, start, end, tid, attrs, ok)
    PyObject *label, *attrs, *ok;
    long long start, end;
    unsigned long tid;
    if (!PyArg_ParseTuple(rec, "OLLkOO", &label, &start, &end, &tid, &attrs, &ok)) return nullptr;
    Py_INCREF(label);
    if (attrs == Py_None) attrs = nullptr;
    Py_XINCREF(attrs);
    self->records->push_back(Record{label, attrs, start, end, tid, PyObject_IsTrue(ok) == 1});
    Py_RETURN_NONE;
}

PyMethodDef buffer_methods[] = {
    {"snapshot", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(buffer_snapshot)), METH_FASTCALL,
     "snapshot(start=0) -> list of (label, start_ns, end_ns, thread_id, attrs, ok)"},
    {"append", reinterpret_cast<PyCFunction>(buffer_append), METH_O, "append one record tuple"},
    {nullptr, nullptr, 0, nullptr}};

PySequenceMethods buffer_sequence = {};

inline long long mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

struct MarkObject {
    PyObject_HEAD
    PyObject* label;
    PyObject* attrs;  // dict or nullptr
    PyObject* sync;   // callable or nullptr
    long long start_ns;
};

PyObject* mark_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    if (PyTuple_GET_SIZE(args) != 1) {
        PyErr_SetString(PyExc_TypeError, "mark() takes exactly one positional argument: the label");
        return nullptr;
    }
    PyObject* label = PyTuple_GET_ITEM(args, 0);
    if (!PyUnicode_Check(label) || PyUnicode_GET_LENGTH(label) == 0) {
        PyErr_SetString(PyExc_TypeError, "mark label must be a non-empty string");
        return nullptr;
    }
    auto* self = reinterpret_cast<MarkObject*>(type->tp_alloc(type, 0));
    if (!self) return nullptr;
    Py_INCREF(label);
    self->label = label;
    self->attrs = nullptr;
    self->sync = nullptr;
    self->start_ns = 0;
    if (kwargs && PyDict_GET_SIZE(kwargs) > 0) {
        PyObject* sync = PyDict_GetItemString(kwargs, "sync");  // borrowed
        Py_ssize_t n = PyDict_GET_SIZE(kwargs);
        if (sync) {
            if (sync != Py_None) {
                if (!PyCallable_Check(sync)) {
                    Py_DECREF(self);
                    PyErr_SetString(PyExc_TypeError, "mark(sync=...) must be callable (e.g. torch.cuda.synchronize)");
                    return nullptr;
                }
                Py_INCREF(sync);
                self->sync = sync;
            }
            --n;
        }
        if (n > 0 && !sync) {
            // CPython builds a fresh dict for every call's keywords: keep it rather than copy it.
            Py_INCREF(kwargs);
            self->attrs = kwargs;
        } else if (n > 0) {
            self->attrs = PyDict_Copy(kwargs);
            if (!self->attrs || (sync && PyDict_DelItemString(self->attrs, "sync") < 0)) {
                Py_DECREF(self);
                return nullptr;
            }
        }
    }
    return reinterpret_cast<PyObject*>(self);
}

void mark_dealloc(MarkObject* self) {
    Py_XDECREF(self->label);
    Py_XDECREF(self->attrs);
    Py_XDECREF(self->sync);
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

PyObject* mark_enter(MarkObject* self, PyObject*) {
    if (self->sync) {
        PyObject* r = PyObject_CallNoArgs(self->sync);
        if (!r) return nullptr;
        Py_DECREF(r);
    }
    self->start_ns = mono_ns();
    Py_INCREF(self);
    return reinterpret_cast<PyObject*>(self);
}

PyObject* call_marks_helper(const char* name, PyObject* arg) {
    PyObject* mod = PyImport_ImportModule("greenprobe.marks");
    if (!mod) return nullptr;
    PyObject* fn = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    if (!fn) return nullptr;
    PyObject* r = arg ? PyObject_CallOneArg(fn, arg) : PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    return r;
}

PyObject* mark_exit(MarkObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (self->sync) {
        PyObject* r = PyObject_CallNoArgs(self->sync);
        if (!r) return nullptr;
        Py_DECREF(r);
    }
    const long long end = mono_ns();
    PyObject* sink = g_sink;
    if (!sink) {
        PyObject* r = call_marks_helper("_no_sink", nullptr);
        if (!r) return nullptr;
        Py_DECREF(r);
        sink = g_sink;  // $GREENPROBE_DAEMON set after import: _no_sink found the daemon, this mark included
        if (!sink) Py_RETURN_FALSE;
    }
    const bool ok = nargs < 1 || args[0] == Py_None;
    if (Py_TYPE(sink) == &BufferType) {  // fast path: no Python objects made per mark
        Py_INCREF(self->label);
        Py_XINCREF(self->attrs);
        reinterpret_cast<BufferObject*>(sink)->records->push_back(
            Record{self->label, self->attrs, self->start_ns, end, PyThread_get_thread_ident(), ok});
        Py_RETURN_FALSE;
    }
    PyObject* instead = nullptr;  // a MarkRing's fallback, when the ring cannot take the mark
    if (greenprobe_ring_sink_push(sink, self->label, self->attrs, self->start_ns, end, PyThread_get_thread_ident(), ok,
                                  &instead)) {
        Py_RETURN_FALSE;  // into the daemon's shared-memory ring
    }
    if (instead) sink = instead;
    PyObject* rec = PyTuple_New(6);
    if (!rec) return nullptr;
    Py_INCREF(self->label);
    PyTuple_SET_ITEM(rec, 0, self->label);
    PyTuple_SET_ITEM(rec, 1, PyLong_FromLongLong(self->start_ns));
    PyTuple_SET_ITEM(rec, 2, PyLong_FromLongLong(end));
    PyTuple_SET_ITEM(rec, 3, PyLong_FromUnsignedLong(PyThread_get_thread_ident()));
    PyObject* attrs = self->attrs ? self->attrs : Py_None;
    Py_INCREF(attrs);
    PyTuple_SET_ITEM(rec, 4, attrs);
    PyObject* okobj = ok ? Py_True : Py_False;
    Py_INCREF(okobj);
    PyTuple_SET_ITEM(rec, 5, okobj);
    int rc;
    Py_INCREF(sink);  // the sink may be replaced while append runs Python code
    if (PyList_CheckExact(sink)) {
        rc = PyList_Append(sink, rec);
    } else {
        PyObject* r = PyObject_CallMethod(sink, "append", "(O)", rec);  // "(O)": rec is a tuple
        rc = r ? 0 : -1;
        Py_XDECREF(r);
    }
    Py_DECREF(sink);
    Py_DECREF(rec);
    if (rc < 0) return nullptr;
    Py_RETURN_FALSE;  // never swallow the block's exception
}

PyObject* mark_call(MarkObject* self, PyObject* args, PyObject* kwargs) {
    if (PyTuple_GET_SIZE(args) != 1 || (kwargs && PyDict_GET_SIZE(kwargs) > 0) ||
        !PyCallable_Check(PyTuple_GET_ITEM(args, 0))) {
        PyErr_SetString(PyExc_TypeError, "a mark used as a decorator takes the function to wrap");
        return nullptr;
    }
    PyObject* mod = PyImport_ImportModule("greenprobe.marks");
    if (!mod) return nullptr;
    PyObject* fn = PyObject_GetAttrString(mod, "_decorate");
    Py_DECREF(mod);
    if (!fn) return nullptr;
    PyObject* r = PyObject_CallFunctionObjArgs(fn, reinterpret_cast<PyObject*>(self), PyTuple_GET_ITEM(args, 0), nullptr);
    Py_DECREF(fn);
    return r;
}

PyObject* mark_get_label(MarkObject* self, void*) {
    Py_INCREF(self->label);
    return self->label;
}
PyObject* mark_get_attrs(MarkObject* self, void*) {
    if (!self->attrs) return PyDict_New();
    return PyDict_Copy(self->attrs);
}
PyObject* mark_get_sync(MarkObject* self, void*) {
    PyObject* s = self->sync ? self->sync : Py_None;
    Py_INCREF(s);
    return s;
}
PyObject* mark_get_start(MarkObject* self, void*) { return PyLong_FromLongLong(self->start_ns); }

PyMethodDef mark_methods[] = {
    {"__enter__", reinterpret_cast<PyCFunction>(mark_enter), METH_NOARGS, "Takes the start time (after sync())."},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(mark_exit)), METH_FASTCALL,
     "Takes the end time (after sync()) and records the interval."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef mark_getset[] = {
    {"label", reinterpret_cast<getter>(mark_get_label), nullptr, "the label", nullptr},
    {"attrs", reinterpret_cast<getter>(mark_get_attrs), nullptr, "the attributes (a copy)", nullptr},
    {"sync", reinterpret_cast<getter>(mark_get_sync), nullptr, "the sync callable or None", nullptr},
    {"start_ns", reinterpret_cast<getter>(mark_get_start), nullptr, "start time of the last entry", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyTypeObject MarkType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* set_mark_sink(PyObject*, PyObject* sink) {
    PyObject* old = g_sink;
    if (sink == Py_None) {
        g_sink = nullptr;
    } else {
        Py_INCREF(sink);
        g_sink = sink;
    }
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

PyMethodDef module_functions[] = {
    {"_set_mark_sink", set_mark_sink, METH_O, "Where marks go: an object with append (a list), or None."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

int greenprobe_add_mark_type(PyObject* module) {
    MarkType.tp_name = "greenprobe.mark";
    MarkType.tp_basicsize = sizeof(MarkObject);
    MarkType.tp_flags = Py_TPFLAGS_DEFAULT;
    MarkType.tp_doc =
        "mark(label, /, *, sync=None, **attrs): stamps an interval on the sampler's clock.\n\n"
        "Use as a context manager (with greenprobe.mark('infer'): ...) or a decorator "
        "(@greenprobe.mark('infer')). sync, e.g. torch.cuda.synchronize, is called before each timestamp "
        "so that asynchronous GPU work is inside the interval. Attributes become columns.";
    MarkType.tp_new = mark_new;
    MarkType.tp_dealloc = reinterpret_cast<destructor>(mark_dealloc);
    MarkType.tp_call = reinterpret_cast<ternaryfunc>(mark_call);
    MarkType.tp_methods = mark_methods;
    MarkType.tp_getset = mark_getset;
    if (PyType_Ready(&MarkType) < 0) return -1;
    Py_INCREF(&MarkType);
    if (PyModule_AddObject(module, "Mark", reinterpret_cast<PyObject*>(&MarkType)) < 0) {
        Py_DECREF(&MarkType);
        return -1;
    }
    BufferType.tp_name = "greenprobe._core.MarkBuffer";
    BufferType.tp_basicsize = sizeof(BufferObject);
    BufferType.tp_flags = Py_TPFLAGS_DEFAULT;
    BufferType.tp_doc = "The marks of one probe, kept in a C array until snapshot() turns them into tuples.";
    BufferType.tp_new = buffer_new;
    BufferType.tp_dealloc = reinterpret_cast<destructor>(buffer_dealloc);
    BufferType.tp_methods = buffer_methods;
    buffer_sequence.sq_length = reinterpret_cast<lenfunc>(buffer_len);
    BufferType.tp_as_sequence = &buffer_sequence;
    if (PyType_Ready(&BufferType) < 0) return -1;
    Py_INCREF(&BufferType);
    if (PyModule_AddObject(module, "MarkBuffer", reinterpret_cast<PyObject*>(&BufferType)) < 0) {
        Py_DECREF(&BufferType);
        return -1;
    }
    for (PyMethodDef* def = module_functions; def->ml_name; ++def) {
        PyObject* f = PyCFunction_New(def, nullptr);
        if (!f || PyModule_AddObject(module, def->ml_name, f) < 0) return -1;
    }
    return 0;
}
