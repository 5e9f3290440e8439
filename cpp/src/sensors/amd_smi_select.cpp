#include "amd_smi_select.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>

#include "text.hpp"

namespace greenprobe::amdsmi {
namespace {

using text::lower;
using text::parse_integer;
using text::split;
using text::trim;


const char* kListFix =
    "list GPUs as `amd-smi list` shows them (its GPU index or UUID), or pass gpus=all "
    "(sensors=['amd-gpu:gpus=all']) to measure every GPU AMD SMI sees";

bool looks_like_uuid(const std::string& s) {
    if (s.empty()) return false;
    return std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == '-'; });
}

std::string known_list(const std::vector<KnownGpu>& known, const std::vector<unsigned>& among) {
    std::string s;
    for (unsigned pos = 0; pos < among.size(); ++pos) {
        const KnownGpu& g = known[among[pos]];
        s += (s.empty() ? "" : ", ") + std::to_string(pos) + (g.uuid.empty() ? "" : " " + g.uuid);
    }
    return std::to_string(among.size()) + " GPU" + (among.size() == 1 ? "" : "s") + (among.empty() ? "" : ": " + s);
}

// Resolves the entries of one list against `among` (AMD SMI indices the list can reach; an index
// entry is a position in it). Sets by_index when some entry was an index.
struct Resolved {
    std::vector<unsigned> gpus;
    bool by_index = false;
    std::string note;
};

Resolved resolve_list(const std::vector<KnownGpu>& known, const std::vector<unsigned>& among, const std::string& value,
                      const std::string& where, const std::string& whose, bool stop_at_invalid) {
    Resolved r;
    const auto entries = split(value);
    // In the list's order: ROCr numbers the GPUs it leaves visible in that order, and HIP's indices
    // count in it (ROCR_VISIBLE_DEVICES=2,0 makes GPU 2 HIP's device 0). Repeats count once.
    std::vector<unsigned> chosen;
    auto choose = [&chosen](unsigned g) {
        if (std::find(chosen.begin(), chosen.end(), g) == chosen.end()) chosen.push_back(g);
    };
    for (std::size_t k = 0; k < entries.size(); ++k) {
        const std::string& e = entries[k];
        long long i = 0;
        if (e.empty() || (parse_integer(e, i) && i < 0)) {
            if (!stop_at_invalid) {
                throw SensorError(ErrorCategory::Config, where + " has an empty or negative entry",
                                  "use gpus=all, or indices and UUIDs separated by commas (gpus=0,2)");
            }
            if (k + 1 < entries.size() || !e.empty()) {
                r.note = "entries from '" + e + "' (entry " + std::to_string(k) + ") on are ignored, as ROCm ignores them";
            }
            break;
        }
        if (parse_integer(e, i)) {
            if (static_cast<unsigned long long>(i) >= among.size()) {
                throw SensorError(ErrorCategory::NotFound,
                                  where + " lists GPU " + e + ", which " + whose + " does not have (" + whose + ": " +
                                      known_list(known, among) + ")",
                                  kListFix);
            }
            choose(among[static_cast<std::size_t>(i)]);
            r.by_index = true;
            continue;
        }
        std::string uuid = e;
        if (lower(uuid.substr(0, 4)) == "gpu-") uuid = uuid.substr(4);
        if (!looks_like_uuid(uuid)) {
            throw SensorError(ErrorCategory::Config, where + ": '" + e + "' is neither a GPU index nor a UUID", kListFix);
        }
        std::vector<unsigned> hits;
        for (unsigned g : among) {
            if (!known[g].uuid.empty() && lower(known[g].uuid).rfind(lower(uuid), 0) == 0) hits.push_back(g);
        }
        if (hits.size() > 1) {
            std::string which;
            for (unsigned g : hits) which += (which.empty() ? "" : ", ") + known[g].uuid;
            throw SensorError(ErrorCategory::Config, where + ": '" + e + "' is a prefix of several GPUs' UUIDs (" + which + ")",
                              "give more of the UUID, as `amd-smi list` prints it");
        }
        if (hits.empty()) {
            throw SensorError(ErrorCategory::NotFound,
                              where + " lists " + e + ", which " + whose + " does not have (" + whose + ": " +
                                  known_list(known, among) + ")",
                              kListFix);
        }
        choose(hits[0]);
    }
    r.gpus = chosen;
    return r;
}

std::string mapping_of(bool by_index, std::size_t known_count) {
    if (!by_index) return "exact: by UUID";
    if (known_count == 1) return "exact: AMD SMI sees one GPU";
    return "indices in AMD SMI's order: ROCr numbers GPUs by the KFD topology, as AMD SMI does on the systems "
           "checked, but it is not guaranteed; list UUIDs (amd-smi list) to make this exact";
}

}  // namespace

VisibleEnv VisibleEnv::from_process() {
    VisibleEnv e;
    if (const char* v = std::getenv("ROCR_VISIBLE_DEVICES")) e.rocr_visible_devices = v;
    if (const char* v = std::getenv("HIP_VISIBLE_DEVICES")) e.hip_visible_devices = v;
    return e;
}

Selection select_gpus(const std::vector<KnownGpu>& known, const std::optional<std::string>& gpus_option,
                      const VisibleEnv& env) {
    std::vector<unsigned> every;
    for (const auto& g : known) every.push_back(g.index);
    Selection s;
    if (gpus_option) {
        s.source = "option gpus";
        s.given = "gpus='" + *gpus_option + "'";
        if (trim(*gpus_option) == "all") {
            s.gpus = every;
            return s;
        }
        const Resolved r = resolve_list(known, every, *gpus_option, "option gpus='" + *gpus_option + "'", "AMD SMI", false);
        s.gpus = r.gpus;
        s.mapping = mapping_of(r.by_index, known.size());
        return s;
    }
    if (!env.rocr_visible_devices && !env.hip_visible_devices) {
        s.source = "default";
        s.gpus = every;
        s.note = "neither ROCR_VISIBLE_DEVICES nor HIP_VISIBLE_DEVICES is set: every GPU AMD SMI sees";
        return s;
    }
    std::vector<unsigned> visible = every;
    bool by_index = false;
    std::vector<std::string> sources, given, notes;
    if (env.rocr_visible_devices) {
        const std::string where = "ROCR_VISIBLE_DEVICES='" + *env.rocr_visible_devices + "'";
        const Resolved r = resolve_list(known, visible, *env.rocr_visible_devices, where, "AMD SMI", true);
        visible = r.gpus;
        by_index = by_index || r.by_index;
        sources.push_back("ROCR_VISIBLE_DEVICES");
        given.push_back(where);
        if (!r.note.empty()) notes.push_back("ROCR_VISIBLE_DEVICES: " + r.note);
    }
    if (env.hip_visible_devices && !visible.empty()) {
        // HIP numbers the GPUs ROCr left visible from 0.
        const std::string where = "HIP_VISIBLE_DEVICES='" + *env.hip_visible_devices + "'";
        const Resolved r = resolve_list(known, visible, *env.hip_visible_devices, where,
                                        env.rocr_visible_devices ? "ROCR_VISIBLE_DEVICES" : "AMD SMI", true);
        visible = r.gpus;
        by_index = by_index || r.by_index;
        sources.push_back("HIP_VISIBLE_DEVICES");
        given.push_back(where);
        if (!r.note.empty()) notes.push_back("HIP_VISIBLE_DEVICES: " + r.note);
    }
    auto join = [](const std::vector<std::string>& v, const char* sep) {
        std::string out;
        for (const auto& x : v) out += (out.empty() ? "" : sep) + x;
        return out;
    };
    s.source = join(sources, "+");
    s.given = join(given, " ");
    s.note = join(notes, "; ");
    if (visible.empty()) {
        throw SensorError(ErrorCategory::NotFound,
                          (s.given.empty() ? "ROCR_VISIBLE_DEVICES" : s.given) +
                              " makes no GPU visible to this process: amd-gpu has no GPU to measure",
                          "set ROCR_VISIBLE_DEVICES (or HIP_VISIBLE_DEVICES) to the GPUs the work runs on (indices or "
                          "UUIDs), or pass gpus=all (sensors=['amd-gpu:gpus=all']) to measure every GPU AMD SMI sees");
    }
    s.gpus = visible;
    std::sort(s.gpus.begin(), s.gpus.end());  // measured in AMD SMI's order, whatever the lists' order
    s.mapping = mapping_of(by_index, known.size());
    return s;
}

}  // namespace greenprobe::amdsmi
