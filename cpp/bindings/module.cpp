// greenprobe._core: glue only. Sensors are opened here one by one (so Python can decide what a
// failure means), then handed to a Sampler; drain() returns numpy columns.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cctype>
#include <cstring>

#include "greenprobe/clock.hpp"
#include "greenprobe/gpu_usage.hpp"
#include "greenprobe/mark_ring.hpp"
#include "greenprobe/rapl_domains.hpp"
#include "greenprobe/registry.hpp"
#include "greenprobe/sampler.hpp"

namespace py = pybind11;
using namespace greenprobe;

int greenprobe_add_mark_type(PyObject* module);        // mark_type.cpp
int greenprobe_add_ring_sink_type(PyObject* module);  // mark_ring_sink.cpp

namespace {

const char* quantity_name(Quantity q) { return q == Quantity::Power ? "power" : "energy"; }

// ChannelInfo's fields to and from Python, one converter per type: the field list does the rest.
py::object to_py(Quantity q) { return py::str(quantity_name(q)); }
template <typename T>
py::object to_py(const T& v) { return py::cast(v); }
void from_py(py::handle h, Quantity& q) { q = h.cast<std::string>() == "power" ? Quantity::Power : Quantity::EnergyCounter; }
template <typename T>
void from_py(py::handle h, T& v) { v = h.cast<T>(); }

py::dict channel_dict(const ChannelInfo& c) {
    py::dict d;
#define GREENPROBE_TO_DICT(name) d[#name] = to_py(c.name);
    GREENPROBE_CHANNEL_INFO_FIELDS(GREENPROBE_TO_DICT)
#undef GREENPROBE_TO_DICT
    return d;
}

// A ChannelInfo from a dict with its fields: a field missing or None keeps its default (a recording
// made before sensors stated it).
ChannelInfo channel_from_dict(const py::dict& d) {
    ChannelInfo c;
#define GREENPROBE_FROM_DICT(name) \
    if (d.contains(#name) && !d[#name].is_none()) from_py(d[#name], c.name);
    GREENPROBE_CHANNEL_INFO_FIELDS(GREENPROBE_FROM_DICT)
#undef GREENPROBE_FROM_DICT
    return c;
}

template <typename T>
py::array_t<T> column(const std::vector<Sample>& s, T Sample::*field) {
    py::array_t<T> a(static_cast<py::ssize_t>(s.size()));
    auto m = a.template mutable_unchecked<1>();
    for (std::size_t i = 0; i < s.size(); ++i) m(static_cast<py::ssize_t>(i)) = s[i].*field;
    return a;
}

template <typename T>
py::array_t<T> array_of(const std::vector<T>& v) {
    py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
    return a;
}

// A C++ call made without the GIL (it may wait on a driver), its items then turned into dicts by `row`.
template <typename Call, typename Row>
py::list dicts_without_gil(Call&& call, Row&& row) {
    decltype(call()) got;
    {
        py::gil_scoped_release release;
        got = call();
    }
    py::list out;
    for (const auto& item : got) out.append(row(item));
    return out;
}

py::dict mark_columns_dict(const markring::MarkColumns& c) {
    py::dict d;
    d["labels"] = c.labels;
    d["label_index"] = array_of(c.label_index);
    d["start_ns"] = array_of(c.start_ns);
    d["end_ns"] = array_of(c.end_ns);
    d["thread_id"] = array_of(c.thread_id);
    d["ok"] = array_of(c.ok).attr("astype")("bool");
    d["attrs_data"] = py::bytes(c.attrs_data);
    d["attrs_offsets"] = array_of(c.attrs_offsets);
    d["attr_names"] = c.attr_names;
    d["refused"] = c.refused;
    d["refused_why"] = c.refused_why;
    d["end_position"] = c.end_position;
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "greenprobe native sampler (private; use the greenprobe package)";

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const SensorError& e) {
            py::object errors = py::module_::import("greenprobe.errors");
            py::object exc = errors.attr("from_core")(category_name(e.category()), e.what(), e.fix());
            PyErr_SetObject(py::type::handle_of(exc).ptr(), exc.ptr());
        }
    });

    if (greenprobe_add_mark_type(m.ptr()) < 0 || greenprobe_add_ring_sink_type(m.ptr()) < 0) {
        throw py::error_already_set();
    }

    py::register_exception<markring::RingCorrupt>(m, "RingCorrupt", PyExc_ValueError);
    py::class_<markring::RingReader>(m, "MarkRingReader",
                                     "The daemon's side of a client's shared-memory mark ring (mark_ring.hpp).")
        .def(py::init<int>(), py::arg("fd"),
             "Takes the memfd a client sent (closed with the reader); RingCorrupt when it is not a sealed "
             "mark ring of this version.")
        .def_property_readonly("capacity", &markring::RingReader::capacity)
        .def_property_readonly("pending_bytes", &markring::RingReader::pending_bytes)
        .def("drain",
             [](markring::RingReader& r, std::int64_t pid, std::size_t max_bytes) {
                 markring::MarkColumns c;
                 {
                     py::gil_scoped_release release;
                     c = r.drain(pid, max_bytes);
                 }
                 return mark_columns_dict(c);
             },
             py::arg("pid"), py::arg("max_bytes") = SIZE_MAX,
             "The marks written since the last drain, whole frames up to max_bytes of ring (one at least), "
             "as columns (labels, label_index, start_ns, end_ns, "
             "thread_id, ok, attrs_data + attrs_offsets: JSON text with pid put in, attr_names, refused, "
             "refused_why). RingCorrupt: the framing is broken; the ring is of no further use.")
        .def_property_readonly("ring_id", &markring::RingReader::ring_id,
                               "The ring's name, random, set by its client: the same across daemons.")
        .def_property_readonly("position", &markring::RingReader::position, "Bytes drained, ever.")
        .def_property_readonly("released", &markring::RingReader::released,
                               "Bytes handed back to the client, ever (their marks are durable).")
        .def("release", &markring::RingReader::release, py::arg("position"),
             "Hands the ring's bytes up to `position` (a drain's end_position) back to the client once their "
             "marks are durable; False for a position outside what was drained.")
        .def("skip_to", &markring::RingReader::skip_to, py::arg("position"),
             "On a fresh reader: skips, releases and commits the marks up to `position`, which a previous daemon "
             "made durable before it died without releasing them; the marks skipped, or -1 (nothing done) for a "
             "position outside what was written or off a frame's start.")
        .def("commit", &markring::RingReader::commit, py::arg("marks"),
             "Tells the client that `marks` of a drain are held (its flush waits for this).")
        .def("refuse", &markring::RingReader::refuse, py::arg("marks"), py::arg("why"),
             "Tells the client that `marks` it wrote were refused, and why.");

    m.def(
        "decode_frames",
        [](py::bytes frames, std::int64_t pid) {
            markring::MarkColumns c;
            c.attrs_offsets.push_back(0);
            std::string_view view = frames;
            {
                py::gil_scoped_release release;
                markring::decode_frames(reinterpret_cast<const unsigned char*>(view.data()), view.size(), pid, c);
            }
            return mark_columns_dict(c);
        },
        py::arg("frames"), py::arg("pid"),
        "A gRPC batch's frames (MarkColumns.frames) as MarkRingReader.drain returns a ring's; RingCorrupt "
        "when the framing is broken.");

    m.def("now_ns", &now_ns, "CLOCK_MONOTONIC in nanoseconds: the clock of every sample and mark.");
    m.def("wall_ns", &wall_ns, "CLOCK_REALTIME in nanoseconds (only for the wall-clock anchor).");

    m.def("sensor_kinds", [] {
        static const char* roles[] = {"none", "device", "cpu", "estimate"};
        py::list out;
        for (const auto& k : sensor_kinds()) {
            py::dict d;
            d["name"] = k.name;
            d["description"] = k.description;
            d["auto_role"] = roles[static_cast<int>(k.auto_role)];
            d["auto_order"] = k.auto_order;
            d["domains"] = k.domains;
            py::list options;
            for (const auto& o : k.options) options.append(py::make_tuple(o.key, o.env, o.help));
            d["options"] = options;
            d["hwmon_chips"] = k.hwmon_chips;
            d["gpu_usage"] = k.open_usage != nullptr;
            out.append(d);
        }
        return out;
    }, "Every native sensor kind's registry row, as dicts.");

    m.def(
        "rapl_parent",
        [](const std::string& domain, const py::iterable& domains) {
            std::vector<std::string> names;
            for (py::handle d : domains) names.push_back(d.cast<std::string>());
            return rapl::parent_by_name(domain, names);
        },
        py::arg("domain"), py::arg("domains"),
        "The RAPL domain whose energy includes `domain`'s, among `domains` (the names one RAPL sensor "
        "read; `domain` need not be one of them), by the names alone: the rule the RAPL sensors state as "
        "parent_domain (rapl_domains.hpp). '' at the top.");

    py::class_<Sensor, std::shared_ptr<Sensor>>(m, "Sensor")
        .def_property_readonly("kind", &Sensor::kind)
        .def("channel_infos", &Sensor::channels, "The channels as read-only ChannelInfo records.")
        .def("channels", [](const Sensor& s) {
            py::list out;
            for (const auto& c : s.channels()) out.append(channel_dict(c));
            return out;
        })
        .def("info", &Sensor::info)
        .def_property_readonly("min_period_ns", &Sensor::min_period_ns);

    m.def(
        "open_sensor",
        [](const std::string& kind, const std::map<std::string, std::string>& options) -> std::shared_ptr<Sensor> {
            return open_sensor(kind, Options(options));
        },
        py::arg("kind"), py::arg("options") = std::map<std::string, std::string>{});

    m.def(
        "open_replay",
        [](const py::list& tracks, const std::string& source) -> std::shared_ptr<Sensor> {
            std::vector<ReplayTrack> ts;
            for (const auto& item : tracks) {
                py::dict d = item.cast<py::dict>();
                ReplayTrack t;
                t.info = channel_from_dict(d);
                t.offset_ns = d["offset_ns"].cast<std::vector<int64_t>>();
                t.energy_j_or_power_w = d["energy_j_or_power_w"].cast<std::vector<double>>();
                ts.push_back(std::move(t));
            }
            return open_replay(std::move(ts), source);
        },
        py::arg("tracks"), py::arg("source_sensor"));

    py::class_<Sampler>(m, "Sampler")
        .def(py::init([](std::vector<std::shared_ptr<Sensor>> sensors, int64_t period_ns, std::size_t ring_capacity,
                         int64_t keepalive_ns, bool record_all, bool adaptive, int64_t guard_ns) {
                 SamplerConfig c;
                 c.period_ns = period_ns;
                 c.ring_capacity = ring_capacity;
                 c.keepalive_ns = keepalive_ns;
                 c.record_all = record_all;
                 c.adaptive = adaptive;
                 c.guard_ns = guard_ns;
                 return std::make_unique<Sampler>(std::move(sensors), c);
             }),
             py::arg("sensors"), py::arg("period_ns") = kDefaultPeriodNs, py::arg("ring_capacity") = kDefaultRingCapacity,
             py::arg("keepalive_ns") = kDefaultKeepaliveNs, py::arg("record_all") = false, py::arg("adaptive") = false,
             py::arg("guard_ns") = 0)
        .def("start", &Sampler::start)
        .def("stop", &Sampler::stop, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("running", &Sampler::running)
        .def("poll_at", &Sampler::poll_at, py::arg("t_ns"), py::arg("final") = false,
             "A virtual clock: polls every sensor once, dated t_ns, through the threads' own steps; returns "
             "when the schedule would poll next. A sampler so driven is never started.")
        .def("drain",
             [](Sampler& s) {
                 std::vector<Sample> buf;
                 {
                     py::gil_scoped_release release;
                     s.drain(buf);
                 }
                 return py::make_tuple(column(buf, &Sample::t_ns), column(buf, &Sample::prev_t_ns),
                                       column(buf, &Sample::energy_j_or_power_w), column(buf, &Sample::channel),
                                       column(buf, &Sample::flags));
             },
             "Pops every pending sample: (t_ns, prev_t_ns, energy_j_or_power_w, channel, flags) numpy columns.")
        .def("channels",
             [](const Sampler& s) {
                 py::list out;
                 for (const auto& c : s.channels()) {
                     py::dict d = channel_dict(c.info);
                     d["channel"] = c.id;
                     d["sensor"] = c.sensor;
                     d["sensor_index"] = c.sensor_index;
                     out.append(d);
                 }
                 return out;
             })
        .def("stats", [](const Sampler& s) {
            py::list out;
            for (const auto& st : s.stats()) {
                py::dict d;
                d["sensor"] = st.sensor;
                d["period_ns"] = st.period_ns;
                d["polls"] = st.polls;
                d["late_polls"] = st.late_polls;
                d["skipped_polls"] = st.skipped_polls;
                d["max_lag_ns"] = st.max_lag_ns;
                d["mean_lag_ns"] = st.polls ? static_cast<double>(st.sum_lag_ns) / static_cast<double>(st.polls) : 0.0;
                d["drops"] = st.drops;
                d["pushed"] = st.pushed;
                d["retries"] = st.retries;
                d["glitches"] = st.glitches;
                d["state"] = st.state;
                d["last_error"] = st.last_error;
                d["learned_update_periods_ns"] = st.learned_update_periods_ns;  // per channel, 0: not learned
                d["edge_windows"] = st.edge_windows;
                d["edge_misses"] = st.edge_misses;
                out.append(d);
            }
            return out;
        });

    m.def(
        "open_gpu_usage",
        [](const std::string& kind, const std::map<std::string, std::string>& options) -> std::shared_ptr<GpuUsageReader> {
            return open_gpu_usage(kind, Options(options));
        },
        py::arg("kind"), py::arg("options") = std::map<std::string, std::string>{},
        "The usage reader of a GPU kind, for the GPUs its sensor would measure with these options.");

    py::class_<GpuUsageReader, std::shared_ptr<GpuUsageReader>>(
        m, "GpuUsage", "GPU utilisation and memory of the GPUs a GPU sensor kind measures (open_gpu_usage).")
        .def_property_readonly("kind", &GpuUsageReader::kind)
        .def("names", &GpuUsageReader::names)
        .def_property_readonly("selection", &GpuUsageReader::selection)
        .def("processes",
             [](const GpuUsageReader& u, uint64_t since_us, int64_t at_ns) {
                 return dicts_without_gil([&] { return u.processes(since_us, at_ns); }, [](const GpuProcessSample& g) {
                     py::dict d;
                     d["index"] = g.index;
                     d["pid"] = g.pid;
                     d["t_us"] = g.t_us;
                     d["sm_util_pct"] = g.sm_util_pct;
                     d["memory_util_pct"] = g.memory_util_pct;
                     d["t_ns"] = g.t_ns;
                     d["gfx_busy_ns"] =
                         g.gfx_busy_ns < 0 ? py::object(py::none()) : py::object(py::int_(g.gfx_busy_ns));
                     d["gpu_instance"] = g.gpu_instance < 0 ? py::object(py::none()) : py::object(py::int_(g.gpu_instance));
                     d["count_since_ns"] = g.count_since_ns;
                     return d;
                 });
             },
             py::arg("since_us"), py::arg("at_ns") = 0,
             "Per-process samples of every chosen GPU: index, pid, t_us, sm_util_pct, memory_util_pct (NVML's "
             "nvmlDeviceGetProcessUtilization after since_us, the driver's µs timestamps), t_ns (when read: at_ns, "
             "else CLOCK_MONOTONIC), gfx_busy_ns (AMD SMI's cumulative GFX engine ns per process; a MIG instance's "
             "busy ns from GPM, at its latest sample, counted since count_since_ns; None for NVML's shares) and "
             "gpu_instance (the MIG GPU instance id, or None). at_ns: this read's instant on the sampler's clock (a virtual clock).")
        .def_property_readonly("process_support", &GpuUsageReader::process_support,
                               "Why per-process use cannot be read ('' when it can).")
        .def("process_errors",
             [](const GpuUsageReader& u) {
                 return dicts_without_gil([&] { return u.process_errors(); }, [](const GpuProcessError& e) {
                     py::dict d;
                     d["index"] = e.index;
                     d["error"] = e.error;
                     return d;
                 });
             },
             "The GPUs that answered an error at the latest processes() call (index, error): their "
             "processes' use is unknown, not nil.")
        .def("read", [](const GpuUsageReader& u) {
            return dicts_without_gil([&] { return u.read(); }, [](const GpuUsageReading& r) {
                py::dict d;
                d["index"] = r.index;
                d["uuid"] = r.uuid;
                d["t_ns"] = r.t_ns;
                d["gpu_util_pct"] = r.gpu_util_pct < 0 ? py::object(py::none()) : py::object(py::int_(r.gpu_util_pct));
                d["memory_util_pct"] =
                    r.memory_util_pct < 0 ? py::object(py::none()) : py::object(py::int_(r.memory_util_pct));
                d["memory_used_bytes"] =
                    r.memory_used_bytes < 0 ? py::object(py::none()) : py::object(py::int_(r.memory_used_bytes));
                d["memory_total_bytes"] =
                    r.memory_total_bytes < 0 ? py::object(py::none()) : py::object(py::int_(r.memory_total_bytes));
                d["error"] = r.error;
                return d;
            });
        });

    // The sample flags, from their one definition (sample.hpp): SAMPLE_FLAGS maps each name to its
    // bit, and FLAG_<NAME> holds each bit.
    py::dict flags;
    for (const auto& f : kSampleFlagNames) {
        flags[f.name] = f.bit;
        std::string attr = std::string("FLAG_") + f.name;
        for (auto& ch : attr) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        m.attr(attr.c_str()) = f.bit;
    }
    m.attr("SAMPLE_FLAGS") = flags;

    // ChannelInfo, read-only, and the names of its fields in order (sensor.hpp's one list).
    py::class_<ChannelInfo> info(m, "ChannelInfo", "What a sensor says of one channel (sensor.hpp); read-only.");
    py::list names;
#define GREENPROBE_BIND_FIELD(name)                                                                  \
    info.def_property_readonly(#name, [](const ChannelInfo& c) { return to_py(c.name); });          \
    names.append(#name);
    GREENPROBE_CHANNEL_INFO_FIELDS(GREENPROBE_BIND_FIELD)
#undef GREENPROBE_BIND_FIELD
    info.def("as_dict", &channel_dict, "The fields by name.");
    info.def("__repr__", [](const ChannelInfo& c) { return "<ChannelInfo " + c.domain + ">"; });
    m.attr("CHANNEL_INFO_FIELDS") = py::tuple(names);

    py::dict defaults;  // sampler.hpp's one definition
    defaults["period_ns"] = kDefaultPeriodNs;
    defaults["min_period_ns"] = kMinPeriodNs;
    defaults["keepalive_ns"] = kDefaultKeepaliveNs;
    defaults["ring_capacity"] = kDefaultRingCapacity;
    defaults["min_ring_capacity"] = kMinRingCapacity;
    m.attr("SAMPLER_DEFAULTS") = defaults;

    py::dict mark_limits;  // mark_ring.hpp's one definition: the ring's reader and the gRPC intake apply them
    mark_limits["label_bytes"] = markring::kMaxLabelBytes;
    mark_limits["attrs"] = markring::kMaxAttrs;
    mark_limits["attr_name_bytes"] = markring::kMaxAttrNameBytes;
    mark_limits["attr_value_bytes"] = markring::kMaxAttrValueBytes;
    mark_limits["attrs_json_bytes"] = markring::kMaxAttrsJsonBytes;
    m.attr("MARK_LIMITS") = mark_limits;
}
